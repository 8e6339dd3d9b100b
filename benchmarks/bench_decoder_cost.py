"""What decoding costs, per camera, in decoder processes (``engine.decoder: process``) and in threads
(``thread``): four files played in real time (25 FPS, 640x480, made as ``bench_engine_ab.py`` makes them), the
fake models of the tests (nearly free), so the CPU left is reading, decoding and handing frames over.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bench_decoder_cost.py --rounds 3 \\
        --json benchmarks/results/decoder_cost.json

Each measurement is a fresh process; the modes alternate round by round. Over a steady window (after a
warm-up, so decoder start-up is left out) it reports the engine process's CPU (cores), its live decoder
processes' CPU (``/proc``), the analysed frames/s, and the CPU of the engine process's threads other than the
busiest (the analysis loop): the reader threads (decoding, in ``thread`` mode) or the relay threads
(``process`` mode).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _ticks(stat: str) -> int:
    rest = stat[stat.rindex(")") + 2 :].split()  # state, ppid, ... utime (14th field), stime (15th)
    return int(rest[11]) + int(rest[12])


def _threads() -> dict[str, int]:
    """CPU ticks of each thread of this process."""
    found = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            found[task.name] = _ticks((task / "stat").read_text())
        except OSError:
            continue
    return found


def _children() -> int:
    """CPU ticks of this process's running children."""
    me, total = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
                total += _ticks(stat)
    return total


def child(args: argparse.Namespace) -> dict[str, Any]:
    from fakes import fake_detector

    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    engine = StreamEngine(fake_detector(), EngineConfig(stats_interval=60, decoder=args.mode))
    events = engine.events()
    threading.Thread(target=lambda: [None for _ in events], daemon=True).start()
    videos = args.videos.split(",")
    for k, video in enumerate(videos):
        engine.add_source(SourceSpec(uri=video, name=f"cam{k}", realtime=True, loop=True))
    engine.start()
    time.sleep(args.warmup)
    tick = os.sysconf("SC_CLK_TCK")
    frames0 = sum(s.frames for s in engine.source_stats().values())
    own0, threads0, children0, start = time.process_time(), _threads(), _children(), time.perf_counter()
    time.sleep(args.seconds)
    window = time.perf_counter() - start
    frames = sum(s.frames for s in engine.source_stats().values()) - frames0
    own, threads, children = time.process_time() - own0, _threads(), _children() - children0
    used = sorted((threads[t] - threads0.get(t, 0) for t in threads), reverse=True)
    engine.stop(2.0)
    return {
        "mode": args.mode,
        "window_s": round(window, 2),
        "analysed_fps": round(frames / window, 2),
        "engine_cores": round(own / window, 3),
        "decoder_process_cores": round(children / tick / window, 3),
        "other_thread_cores": round(sum(used[1:]) / tick / window, 3),  # all but the analysis loop
        "cameras": len(videos),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scenes")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="process", help=argparse.SUPPRESS)
    p.add_argument("--videos", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT / "tests"))
        print(json.dumps(child(args)), flush=True)
        os._exit(0)  # reader threads may still be inside OpenCV: leave without tearing down

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import cpu_model, make_video

    images = sorted((args.data / "images").glob("*.jpg"))
    if len(images) < 40:
        raise SystemExit(f"need 40 scene images under {args.data}/images")
    work = Path(tempfile.mkdtemp(prefix="maskwatch-decoder-cost-"))
    videos = []
    for k in range(4):
        path = work / f"cam{k}.mp4"
        make_video(images[10 * k : 10 * (k + 1)], path, 15)
        videos.append(str(path))
    runs: dict[str, list[dict[str, Any]]] = {"process": [], "thread": []}
    for r in range(args.rounds):
        for mode in ("process", "thread") if r % 2 == 0 else ("thread", "process"):
            cmd = [sys.executable, __file__, "--child", "--mode", mode, "--videos", ",".join(videos),
                   "--seconds", str(args.seconds), "--warmup", str(args.warmup)]  # fmt: skip
            load = os.getloadavg()[0]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
            got = json.loads(done.stdout.strip().splitlines()[-1])
            got["load"] = round(load, 2)
            runs[mode].append(got)
            print(json.dumps(got), flush=True)
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "command": " ".join(["benchmarks/bench_decoder_cost.py", *(argv if argv is not None else sys.argv[1:])]),
        "runs": runs,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
