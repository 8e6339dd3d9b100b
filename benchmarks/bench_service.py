"""Load on `maskwatch serve` (127.0.0.1 only, bounded): POST /infer with 1, 4 and 16 concurrent clients
on real scene images while two cameras run; p50/p95 latency, zero-error check, throughput as a ratio to
the in-process pipeline measured in the same run, the cameras' analysed FPS under load; and the
dashboard's compliance query over 30 days x 50 cameras of stored buckets (target < 200 ms).

    python benchmarks/bench_service.py --seconds 60 --json runs/bench_service.json      # the full run
    python benchmarks/bench_service.py --seconds 3 --clients 1 4 --days 2 --cameras 5   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ADMIN = "mw_bench_admin_token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values, q):
    values = sorted(values)
    return None if not values else values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def load_images(folder: Path, n: int) -> list[bytes]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return [p.read_bytes() for p in paths]


def in_process_rate(detector, images: list[bytes], seconds: float) -> float:
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        detector.detect(images[done % len(images)])
        done += 1
    return done / (time.perf_counter() - began)


def hammer(base: str, images: list[bytes], clients: int, seconds: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
            i = k
            while time.monotonic() < stop:
                t = time.perf_counter()
                upload = {"file": ("x.jpg", images[i % len(images)], "image/jpeg")}
                r = client.post(f"{base}/api/v1/infer", files=upload)
                with lock:
                    if r.status_code == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(f"{r.status_code}: {r.text[:100]}")
                i += clients

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - began
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "error_samples": errors[:3],
            "throughput": round(len(latencies) / wall, 3), "p50_ms": round(1000 * (_percentile(latencies, 50) or 0), 1),
            "p95_ms": round(1000 * (_percentile(latencies, 95) or 0), 1)}  # fmt: skip


def query_benchmark(days: int, cameras: int, interval: float = 60.0) -> dict:
    """Fill a fresh SQLite database with days x cameras of 1-minute buckets and their rollups, then time the
    dashboard's compliance queries (median of 5)."""
    from sqlalchemy import insert

    from maskwatch.service.routers.stats import compliance_series
    from maskwatch.service.storage.db import migrate, open_db, session_factory
    from maskwatch.service.storage.models import StatsBucket as Bucket
    from maskwatch.service.storage.models import StatsRollup

    db = Path(tempfile.mkdtemp()) / "bench.db"
    engine = open_db(f"sqlite:///{db}")
    migrate(engine)
    sessions = session_factory(engine)
    end = datetime(2026, 3, 31, tzinfo=UTC)
    start = end - timedelta(days=days)
    n = int(days * 86400 / interval)
    began = time.perf_counter()  # bulk rows (the ingest path writes ~500 buckets/s; 2 M would take an hour)
    rollups: dict = {}
    for c in range(cameras):
        rows = []
        for i in range(n):
            t0 = start.timestamp() + i * interval
            masked, bare = (i * 7 + c) % 5, (i + c) % 2
            rows.append({"camera": f"cam{c:02d}", "start_ts": t0, "end_ts": t0 + interval, "interval": interval,
                         "n_people": masked + bare, "compliant_people": masked,
                         "people": {"with_mask": masked, "without_mask": bare}, "present_max": masked + bare,
                         "frames_analysed": 300, "frames_dropped": 0, "faces_classified": 10, "analysed_fps": 5.0,
                         "lag_p50": 0.1, "lag_p95": 0.2, "lag_max": 0.3})  # fmt: skip
            for grain in (3600, 86400):
                key = (grain, f"cam{c:02d}", int(t0 // grain * grain))
                r = rollups.setdefault(key, [0, 0])
                r[0] += masked + bare
                r[1] += masked
        with sessions() as s, s.begin():
            s.execute(insert(Bucket), rows)
    with sessions() as s, s.begin():
        s.execute(insert(StatsRollup), [{"grain": g, "camera": cam, "start_ts": t, "n_people": a, "compliant_people": b,
                                         "frames_analysed": 0, "frames_dropped": 0, "present_max": 0,
                                         "lag_p95_max": None} for (g, cam, t), (a, b) in rollups.items()])  # fmt: skip
    fill = time.perf_counter() - began
    out = {"days": days, "cameras": cameras, "buckets": n * cameras, "fill_seconds": round(fill, 1)}
    for bucket, span in (("1d", days), ("1h", days), ("1m", 1)):
        times = []
        for _ in range(5):
            t = time.perf_counter()
            compliance_series(sessions, cameras=None, start=(end - timedelta(days=span)).timestamp(),
                              end=end.timestamp(), bucket=bucket)  # fmt: skip
            times.append(time.perf_counter() - t)
        out[f"query_{bucket}_{span}d_ms"] = round(1000 * statistics.median(times), 1)
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="per client count")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=Path, default=None, help="default: shared scenes/images")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import uvicorn

    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.paths import shared_data_dir
    from maskwatch.service.app import create_app
    from maskwatch.service.settings import load_settings

    folder = args.images or shared_data_dir() / "scenes" / "images"
    images = load_images(folder, 40)
    if not images:
        raise SystemExit(f"no images in {folder}")
    results: dict = {"images": str(folder), "started": time.time()}
    detector = MaskDetector.load(preset="accurate")
    results["in_process_images_per_s"] = round(in_process_rate(detector, images, min(args.seconds, 20)), 3)

    data = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    settings = load_settings(env={}, overrides={"server": {"data_dir": str(data)},
                                                 "demo": {"enabled": False},
                                                 "limits": {"rate_per_minute": 1e6, "rate_burst": 100000}})  # fmt: skip
    from maskwatch.service.settings import CameraConfig

    # two cameras playing the scene images as slideshows (realtime, looped, each image held demo.seconds_per_image)
    settings.cameras = [
        CameraConfig(name=f"cam{k}", url=str(folder), realtime=True, loop=True, target_fps=5) for k in range(2)
    ]
    port = _port()
    app = create_app(settings, detector=detector, admin_token=ADMIN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    service = app.state.service
    time.sleep(3)
    runs = []
    for clients in args.clients:
        run = hammer(base, images, clients, args.seconds)
        run["ratio_to_in_process"] = round(run["throughput"] / results["in_process_images_per_s"], 3)
        run["camera_states"] = {n: service.live.get(n).state for n in ("cam0", "cam1")}
        live = service.engine.source_stats()  # analysed FPS over the last 10 s, under load
        run["camera_analysed_fps"] = {n: live[n].analysed_fps if n in live else None for n in ("cam0", "cam1")}
        runs.append(run)
        print(json.dumps(run))
    results["infer"] = runs
    server.should_exit = True
    thread.join(30)
    results["compliance_query"] = query_benchmark(args.days, args.cameras)
    print(json.dumps(results["compliance_query"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
