"""Peak resident memory of ``maskwatch agent`` with one and with four live 640x480 cameras, against a real Mosquitto.

    .venv/bin/python benchmarks/bench_footprint.py --installs edge        # makes runs/footprint/edge (once)
    .venv/bin/python benchmarks/bench_memory.py --json benchmarks/results/memory.json                  # ~3 min

The agent runs as its own process, as a node runs it, from the ``[edge]`` install that
``bench_footprint.py`` made (``--maskwatch`` picks another executable, e.g. ``.venv/bin/maskwatch``). Each
camera is an MJPEG stream at 25 FPS served over HTTP on 127.0.0.1 by another process (``bench_stream``'s
server), playing a 640x480 video made from the shared scene images, so the node tracks and classifies real
faces. The broker is Debian's Mosquitto (``maskwatch.fleet.broker``), with a password, as in the fleet tests.

Peak RSS is the kernel's high-water mark of the agent process (``VmHWM`` in ``/proc/PID/status``), read at the
end of ``--seconds`` of analysis; RSS is also sampled every second. Targets (issue 20): one camera <= 250 MB,
four <= 400 MB. ``--env NAME=VALUE`` runs the agent with extra environment (A/B of memory settings).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DEFAULT_DATA, cpu_model, make_video
from bench_stream import _serve_mjpeg, free_port

from maskwatch.fleet.broker import MosquittoBroker, find_mosquitto

ROOT = Path(__file__).resolve().parents[1]
TARGETS_MB = {1: 250, 4: 400}


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB (10^6 bytes)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) * 1024 / 1e6, 1)
    return out


def run_agent(maskwatch: str, cameras: list[str], broker: MosquittoBroker, seconds: float, work: Path,
              env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Start the agent on ``cameras`` (URLs), let it analyse for ``seconds``, read its memory, stop it."""
    args = [maskwatch, "agent", "--broker", broker.url(), "--node", "bench", "--data-dir", str(work / "agent"),
            "--stats-interval", "10"]  # fmt: skip
    for k, url in enumerate(cameras):
        args += ["--camera", f"cam{k}={url}"]
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | env
    log = open(work / f"agent-{len(cameras)}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=clean)
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            time.sleep(1.0)
            if proc.poll() is not None:
                log.flush()
                raise SystemExit(f"the agent stopped (code {proc.returncode}):\n{Path(log.name).read_text()[-3000:]}")
            samples.append((round(time.monotonic() - start, 1), status_mb(proc.pid)["VmRSS"]))
        final = status_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    outbox = work / "agent" / "outbox.db"
    return {
        "cameras": len(cameras),
        "seconds": seconds,
        "peak_rss_mb": final["VmHWM"],
        "rss_end_mb": final["VmRSS"],
        "rss_after_10s_mb": next((v for t, v in samples if t >= 10), None),
        "rss_samples_mb": samples[::5],
        "target_mb": TARGETS_MB.get(len(cameras)),
        "target_met": final["VmHWM"] <= TARGETS_MB[len(cameras)] if len(cameras) in TARGETS_MB else None,
        "exit_code": proc.returncode,
        "outbox_bytes": outbox.stat().st_size if outbox.exists() else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--maskwatch", default=str(ROOT / "runs" / "footprint" / "edge" / "bin" / "maskwatch"),
                   help="the agent's executable (default: the [edge] install of bench_footprint.py)")  # fmt: skip
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC scenes folder (images/)")
    p.add_argument("--cameras", default="1,4", help="camera counts to run (comma-separated)")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of analysis per run")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent's environment")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not Path(args.maskwatch).exists():
        raise SystemExit(f"{args.maskwatch} not found: run benchmarks/bench_footprint.py --installs edge first")
    if find_mosquitto() is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    images = sorted((args.data / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no scene images under {args.data}/images")
    env = dict(item.split("=", 1) for item in args.env)
    work = Path(tempfile.mkdtemp(prefix="maskwatch-bench-memory-"))
    counts = [int(c) for c in args.cameras.split(",") if c.strip()]
    videos = []
    for k in range(max(counts)):  # different scenes per camera, 20 images each (300 frames, looped)
        path = work / f"cam{k}.mp4"
        make_video(images[20 * k : 20 * (k + 1)] or images[:20], path, hold=15)
        videos.append(path)
    servers, urls = [], []
    for video in videos:
        port, ready = free_port(), multiprocessing.Event()
        server = multiprocessing.Process(target=_serve_mjpeg, args=(str(video), port, 25.0, ready), daemon=True)
        server.start()
        ready.wait(60)
        servers.append(server)
        urls.append(f"http://127.0.0.1:{port}/stream.mjpg")
    broker = MosquittoBroker(work / "broker", {"agent": "agent-secret"})
    broker.start()
    version = subprocess.run([args.maskwatch, "--version"], capture_output=True, text=True).stdout.strip()
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/bench_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg()},
        "agent": {"executable": args.maskwatch, "version": version, "env": env},
        "cameras": "MJPEG over HTTP, 640x480, 25 FPS, another process each; scenes images (20 per camera)",
        "runs": [],
    }
    try:
        for n in counts:
            run = run_agent(args.maskwatch, urls[:n], broker, args.seconds, work, env)
            result["runs"].append(run)
            print(f"[{n} camera(s)] peak RSS {run['peak_rss_mb']} MB (target {run['target_mb']}), "
                  f"end {run['rss_end_mb']} MB", flush=True)  # fmt: skip
    finally:
        broker.stop()
        for server in servers:
            server.terminate()
            server.join(5)
    result["machine"]["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
