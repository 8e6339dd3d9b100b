"""Load on `maskwatch serve` (127.0.0.1 only, bounded): POST /infer with 1, 4 and 16 concurrent clients
on real scene images while two cameras run: zero errors, p50/p95 latency, throughput as a ratio to the
in-process pipeline measured in the same run, and the cameras' analysed FPS under load.

The in-process pipeline is the service's own ``/infer`` analysis (``decode_rgb`` + ``infer_detector.detect``,
the ``accurate`` preset, one caller: what ``maskwatch detect`` does) over the same images, timed in this
process *while the same two cameras run*, before and after each client count (the ratio takes the mean of
the two), so it shows what the service adds (HTTP, multipart, JSON, queueing, threads) and not the
cameras' share of the CPU. The same pipeline with the
cameras stopped is recorded too (``in_process_no_cameras``). The load average is recorded at every step:
other processes on a shared machine move the absolute figures, so compare the ratios of one run.

The HTTP clients are threads of this process (httpx), the server is uvicorn in a thread of it; the
compliance query has its own benchmark (``benchmarks/bench_compliance.py``).

    python benchmarks/bench_service.py --json benchmarks/results/service.json          # 60 s per client count
    python benchmarks/bench_service.py --seconds 5 --clients 1 4                        # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ADMIN = "mw_bench_admin_token_0123456789abcdef"  # a preset admin token must be strong
CAMERAS = ("cam0", "cam1")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return None if not values else values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except Exception:
        return platform.processor() or platform.machine()


def load_images(folder: Path, n: int) -> list[bytes]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return [p.read_bytes() for p in paths]


def in_process_rate(detector: Any, images: list[bytes], seconds: float) -> float:
    """Images per second of ``decode_rgb`` + ``detector.detect``, one caller, over whole passes through
    ``images`` (the same set the clients send: images differ in faces, so in cost) for at least ``seconds``."""
    from maskwatch.data.images import decode_rgb

    done, began = 0, time.perf_counter()
    while done % len(images) or time.perf_counter() - began < seconds:
        detector.detect(decode_rgb(images[done % len(images)]))
        done += 1
    return done / (time.perf_counter() - began)


def hammer(base: str, images: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads each POSTing one image at a time (multipart) for ``seconds``."""
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
                try:
                    r = client.post(f"{base}/api/v1/infer", files=upload)
                    status, text = r.status_code, r.text[:100]
                except httpx.HTTPError as exc:
                    status, text = 0, repr(exc)
                with lock:
                    if status == 200:
                        latencies.append(time.perf_counter() - t)
                    else:
                        errors.append(f"{status}: {text}")
                i += clients

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - began
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "throughput": round(len(latencies) / wall, 3),
        "p50_ms": round(1000 * (_percentile(latencies, 50) or 0), 1),
        "p95_ms": round(1000 * (_percentile(latencies, 95) or 0), 1),
    }


def in_process(service: Any, pipeline: Any, images: list[bytes], seconds: float) -> dict[str, Any]:
    """The in-process pipeline while the cameras run, with the load and the cameras' FPS meanwhile."""
    load = _load()
    rate = in_process_rate(pipeline, images, seconds)
    return {"load": load, "images_per_s": round(rate, 3), "camera_analysed_fps": camera_fps(service)}


def camera_fps(service: Any) -> dict[str, float | None]:
    """Each camera's analysed FPS over the engine's last 10 s."""
    live = service.engine.source_stats()
    return {name: live[name].analysed_fps if name in live else None for name in CAMERAS}


def ab_concurrency(service: Any, base: str, images: list[bytes], other: int, seconds: float) -> list[dict]:
    """4 clients with the service's /infer concurrency and with ``other``, alternating (twice each) in one
    run, so that both see the same machine."""
    default = service.inference.concurrency
    out = []
    for concurrency in (default, other, default, other):
        service.inference.resize(concurrency)
        run = {"concurrency": concurrency, "load": _load(), **hammer(base, images, 4, seconds)}
        run["camera_analysed_fps"] = camera_fps(service)  # what the cameras kept meanwhile
        print(json.dumps(run), flush=True)
        out.append(run)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="per client count")
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="in-process pipeline, each time")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=Path, default=None, help="default: shared scenes/images")
    parser.add_argument("--n-images", type=int, default=8, help="the first N images, sent in turn")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--ab-concurrency", type=int, default=None, metavar="N",
        help="then 4 clients again, alternating the default /infer concurrency and N (the old default: 2)",
    )  # fmt: skip
    args = parser.parse_args()

    import uvicorn

    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.paths import shared_data_dir
    from maskwatch.service.app import create_app
    from maskwatch.service.settings import CameraConfig, load_settings

    folder = args.images or shared_data_dir() / "scenes" / "images"
    images = load_images(folder, args.n_images)
    if not images:
        raise SystemExit(f"no images in {folder}")
    data = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    settings = load_settings(env={}, overrides={"server": {"data_dir": str(data)}, "demo": {"enabled": False},
                                                 "limits": {"rate_per_minute": 1e6, "rate_burst": 100000}})  # fmt: skip
    results: dict[str, Any] = {
        "command": "python benchmarks/bench_service.py " + " ".join(sys.argv[1:]),
        "machine": {"cpu": _cpu(), "cores": os.cpu_count()},
        "images": f"{len(images)} from {folder}",
        "load_at_start": _load(),
        "model": settings.model.model_dump(),
        "engine_video_preset": settings.engine.video_preset,
    }
    detector = MaskDetector.load(
        settings.model.path, backend=settings.model.backend, preset=settings.model.infer_preset,
        threads=settings.model.threads,
    )  # fmt: skip
    # two cameras playing the scene images as slideshows (realtime, looped, each image held 4 s, 5 frames/s)
    settings.cameras = [CameraConfig(name=n, url=str(folder), realtime=True, loop=True, target_fps=5) for n in CAMERAS]
    app = create_app(settings, detector=detector, admin_token=ADMIN)
    service = app.state.service
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.1)
    base = f"http://127.0.0.1:{port}"
    results["infer_concurrency"] = service.inference.concurrency
    pipeline = service.inference.detector  # the very analysis /infer runs
    time.sleep(5)  # the cameras are live and analysing
    runs = []
    baseline = in_process(service, pipeline, images, args.baseline_seconds)
    for clients in args.clients:
        run = {"in_process_before": baseline, "load": _load(), **hammer(base, images, clients, args.seconds)}
        run["camera_states"] = {n: service.live_state.get(n).state for n in CAMERAS}
        run["camera_analysed_fps"] = camera_fps(service)  # over the last 10 s of the load
        baseline = run["in_process_after"] = in_process(service, pipeline, images, args.baseline_seconds)
        rate = (run["in_process_before"]["images_per_s"] + baseline["images_per_s"]) / 2
        run["ratio_to_in_process"] = round(run["throughput"] / rate, 3)  # to the mean of the two around it
        runs.append(run)
        print(json.dumps(run), flush=True)
    results["infer"] = runs
    if args.ab_concurrency:
        results["ab_concurrency"] = ab_concurrency(service, base, images, args.ab_concurrency, args.seconds)
    server.should_exit = True  # the service stops, and its cameras with it
    thread.join(30)
    results["in_process_no_cameras"] = {  # the same pipeline, nothing else running
        "load": _load(), "images_per_s": round(in_process_rate(pipeline, images, args.baseline_seconds), 3),
    }  # fmt: skip
    print(json.dumps(results["in_process_no_cameras"]))
    shutil.rmtree(data, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
