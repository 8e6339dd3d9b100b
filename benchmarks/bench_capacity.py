"""Cameras per node: the most live 25 FPS cameras one engine analyses while every camera's people count agrees
>= 98 % with the reference and every camera's capture-to-result lag p95 is <= 1 s; two source trees side by
side in one run (today's code and this one).

    .venv/bin/python benchmarks/bench_capacity.py --baseline-src /work/baseline/src \\
        --counts 2,4,6,8,10,12,14,16,20,24,28,32 --repeats 2 --json benchmarks/results/capacity.json

**Cameras**: ``--videos`` videos made from the shared scene images (``tests/camera_servers.scene_video``: each
image letterboxed to 640x480 and held ``--hold`` seconds, 25 FPS, MJPEG), ``--images`` different images each,
after ``--lead`` and before ``--tail`` seconds of black. Each camera is a real HTTP MJPEG camera
(``tests/camera_servers.MjpegCamera(raw=True)``: the file's own JPEG frames, in real time), all of them in one
server process of their own; camera k plays video ``k % videos`` and starts it ``k * hold / N`` seconds late
(independent cameras change scene at different moments, not all in the same frame; the offset is black).

**A trial**: a fresh process with ``PYTHONPATH`` set to one tree loads the models (``MaskDetector.load()``,
the engine's defaults of that tree: the ``fast`` preset for streams, tracking and the classification budget
on, and in this tree its detector interval and motion gate), starts the camera server, adds the N cameras to
one engine and runs until every camera has played its whole video (the window ends in the black tail). Then
per camera: people counted (the engine's ``source`` summary), lag p50 / p95 / max over every analysed
frame, frames analysed, frames the detector ran on, dropped frames; and the process's CPU seconds, the
server's, and the load average.

**The reference**: each video analysed offline, every frame, by today's code (``--baseline-src``: a file
source, every frame detected and tracked, the same engine defaults), its people count. ``--check-equal``
also runs this tree offline with the detector on every frame (``detect_every`` 1, motion gate off) and
checks it counts exactly the same people (then "today's code" and "this tree with the interval and the gate
off" are one figure).

**A tree's capacity**: the largest N that passed (every camera within 98 % of its video's reference count,
and every camera's lag p95 <= 1 s) with every smaller N tried also passing; a tree stops being tried after
two failures in a row. The trees alternate per N (A B, then B A), so load that comes and goes on a shared
machine hits both; ``--repeats`` runs the sweep again. The load average is recorded before every trial.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MASKWATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scenes"
FPS = 25.0
AGREEMENT = 0.98
LAG_P95 = 1.0


# -- the camera server (a process of its own) ----------------------------------------------------------


def serve(videos: list[str], offsets: list[float]) -> None:
    """Start one raw MJPEG camera per (video, offset), print their URLs and the moment their clocks started,
    then serve until stdin closes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from camera_servers import MjpegCamera

    cameras = [MjpegCamera(video, raw=True, offset=offset) for video, offset in zip(videos, offsets, strict=True)]
    t0 = time.monotonic()
    for camera in cameras:
        camera.start()
    started = time.monotonic()
    print(json.dumps({"urls": [c.url for c in cameras], "t0": t0, "start_spread": started - t0}), flush=True)
    try:
        sys.stdin.read()
    finally:
        for camera in cameras:
            camera.stop()


# -- a trial (child process, one tree) ------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def live(args: argparse.Namespace) -> dict[str, Any]:
    import maskwatch
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    videos = args.video_list.split(",")
    n = args.n
    detector = MaskDetector.load()
    options: dict[str, Any] = {"stats_interval": 3600.0, "lag_window": 1 << 20}
    if args.camera_defaults:
        options["camera_defaults"] = json.loads(args.camera_defaults)
    engine = StreamEngine(detector, EngineConfig(**options))
    events = engine.events()
    cams = [videos[k % len(videos)] for k in range(n)]
    offsets = [args.hold * k / n for k in range(n)]
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--video-list", ",".join(cams), "--offsets",
         ",".join(f"{o:.4f}" for o in offsets)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ""},
    )  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    ready = json.loads(server.stdout.readline())
    t0 = ready["t0"]
    for k, url in enumerate(ready["urls"]):
        engine.add_source(SourceSpec(uri=url, name=f"cam{k}"))
    load_before = os.getloadavg()
    cpu = time.process_time()
    engine.start()
    end = t0 + max(offsets) + args.duration - args.tail / 2  # every camera is in its black tail
    got: list[Any] = []
    live_figures: dict[str, Any] = {}
    next_poll = time.monotonic()
    while time.monotonic() < end:
        with contextlib.suppress(queue.Empty):
            got.append(events.get(timeout=max(0.01, min(0.5, end - time.monotonic()))))
        if time.monotonic() >= next_poll:
            live_figures = engine.source_stats()
            next_poll = time.monotonic() + 1.0
    live_figures = engine.source_stats() or live_figures
    cpu = time.process_time() - cpu
    server_cpu = _cpu_seconds(server.pid)
    load_after = os.getloadavg()
    engine.stop(10.0)
    got.extend(events)
    server.stdin.close()
    server.wait(10)
    summaries = {e.source: e for e in got if e.type == "source"}
    cameras = []
    for k in range(n):
        s = summaries[f"cam{k}"]
        figures = live_figures.get(f"cam{k}")
        cameras.append({
            "video": Path(cams[k]).name, "offset": round(offsets[k], 3),
            "people": s.people.n_people if s.people else None,
            "lag_p50": s.lag.p50, "lag_p95": s.lag.p95, "lag_max": s.lag.max,
            "frames": s.frames, "detected": getattr(figures, "detected", None), "dropped": s.dropped,
            "analysed_fps": s.analysed_fps, "reconnects": s.reconnects, "error": s.error,
        })  # fmt: skip
    return {"n": n, "cameras": cameras, "cpu_s": round(cpu, 1), "server_cpu_s": round(server_cpu, 1),
            "window_s": round(end - t0, 1), "start_spread_s": round(ready["start_spread"], 3),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
            "maskwatch": str(Path(maskwatch.__file__).parent)}  # fmt: skip


def offline(args: argparse.Namespace) -> dict[str, Any]:
    """People counted in each video with every frame analysed (a file source)."""
    import maskwatch
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    detector = MaskDetector.load()
    options: dict[str, Any] = {"stop_when_done": True}
    if args.camera_defaults:
        options["camera_defaults"] = json.loads(args.camera_defaults)
    out = {}
    for video in args.video_list.split(","):
        engine = StreamEngine(detector, EngineConfig(**options))
        events = engine.events()
        engine.add_source(SourceSpec(uri=video, name="v"))
        engine.start()
        summary = next(e for e in events if e.type == "source")
        engine.stop(5.0)
        out[Path(video).name] = {"people": summary.people.n_people, "counts": summary.people.counts,
                                 "frames": summary.frames}  # fmt: skip
        print(f"[offline] {Path(video).name}: {out[Path(video).name]}", file=sys.stderr, flush=True)
    return {"videos": out, "maskwatch": str(Path(maskwatch.__file__).parent)}


# -- the parent ----------------------------------------------------------------------------------------


def child(tree: Path, part: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--child", part, "--video-list", ",".join(map(str, args.video_paths)),
           "--hold", str(args.hold), "--tail", str(args.tail), "--duration", str(args.duration), *extra]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree} {part} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def verdict(trial: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    agreements, lags = [], []
    for cam in trial["cameras"]:
        ref = reference[cam["video"]]["people"]
        people = cam["people"] or 0
        cam["reference"] = ref
        cam["agreement"] = round(1.0 - abs(people - ref) / ref, 4) if ref else float(people == 0)
        agreements.append(cam["agreement"])
        lags.append(cam["lag_p95"] if cam["lag_p95"] is not None else float("inf"))
    return {
        "passed": min(agreements) >= AGREEMENT and max(lags) <= LAG_P95,
        "worst_agreement": min(agreements),
        "worst_lag_p95": round(max(lags), 3),
        "cameras_failing_agreement": sum(a < AGREEMENT for a in agreements),
        "cameras_failing_lag": sum(lag > LAG_P95 for lag in lags),
    }


def make_videos(args: argparse.Namespace, work: Path) -> list[Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from camera_servers import scene_video

    images = sorted((args.data / "images").glob("*.jpg"))
    if len(images) < args.videos * args.images:
        raise SystemExit(f"need {args.videos * args.images} scene images under {args.data}/images")
    paths = []
    for v in range(args.videos):
        path = work / f"video{v:02d}.avi"
        if not path.exists():
            scene_video(path, images[v * args.images : (v + 1) * args.images], hold=args.hold, fps=FPS,
                        lead=args.lead, tail=args.tail)  # fmt: skip
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline-src", type=Path, default=Path("/work/baseline/src"), help="today's code")
    p.add_argument("--src", type=Path, default=ROOT / "src", help="the tree compared with it")
    p.add_argument("--data", type=Path, default=DATA, help="VOC scenes folder (images/)")
    p.add_argument("--videos", type=int, default=8, help="distinct videos (cameras play them in turn)")
    p.add_argument("--images", type=int, default=20, help="scene images per video")
    p.add_argument("--hold", type=float, default=3.0, help="seconds each image is shown")
    p.add_argument("--lead", type=float, default=4.0, help="seconds of black before the images")
    p.add_argument("--tail", type=float, default=4.0, help="seconds of black after them")
    p.add_argument("--counts", default="2,4,6,8,10,12,14,16,20,24,28,32", help="camera counts to try")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--trees", default="baseline,src", help="which trees to sweep (baseline, src)")
    p.add_argument("--camera-defaults-src", default="", help="JSON camera_defaults for --src's trials (explore)")
    p.add_argument("--check-equal", action="store_true", help="also count offline with this tree, every frame")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "capacity", help="videos and the reference cache")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--video-list", default="", help=argparse.SUPPRESS)
    p.add_argument("--offsets", default="", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--camera-defaults", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.video_list.split(","), [float(o) for o in args.offsets.split(",")])
        return 0
    if args.child:
        print(json.dumps(live(args) if args.child == "live" else offline(args)), flush=True)
        os._exit(0)  # capture threads may still be inside OpenCV: leave without tearing down

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import cpu_model

    args.work.mkdir(parents=True, exist_ok=True)
    args.video_paths = make_videos(args, args.work)
    args.duration = args.lead + args.images * args.hold + args.tail
    trees = {"baseline": args.baseline_src.resolve(), "src": args.src.resolve()}
    key = f"reference-{args.videos}x{args.images}-hold{args.hold}-lead{args.lead}-tail{args.tail}.json"
    cache = args.work / key
    if cache.exists():
        reference = json.loads(cache.read_text())
    else:
        print("[reference] today's code, every frame of every video ...", flush=True)
        reference = child(trees["baseline"], "offline", args, [])
        cache.write_text(json.dumps(reference, indent=2))
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/bench_capacity.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "trees": {k: str(v) for k, v in trees.items()},
        "cameras": {"videos": args.videos, "images_per_video": args.images, "hold_s": args.hold, "fps": FPS,
                    "size": "640x480", "lead_s": args.lead, "tail_s": args.tail, "server": "HTTP MJPEG, raw"},
        "criteria": {"agreement": AGREEMENT, "lag_p95_s": LAG_P95},
        "reference": reference,
        "trials": [],
    }  # fmt: skip
    print(f"[reference] people per video: { {v: r['people'] for v, r in reference['videos'].items()} }", flush=True)
    if args.check_equal:
        every = json.dumps({"detect_every": 1, "motion_gate": False})
        mine = child(trees["src"], "offline", args, ["--camera-defaults", every])
        same = {v: mine["videos"][v]["counts"] == r["counts"] for v, r in reference["videos"].items()}
        result["check_equal"] = {"src_every_frame": mine, "same_counts": same, "all_same": all(same.values())}
        print(f"[check] this tree, every frame, counts the same people as today's: {same}", flush=True)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    names = [t for t in args.trees.split(",") if t]
    for repeat in range(args.repeats):
        failures = dict.fromkeys(names, 0)
        for i, n in enumerate(counts):
            order = names if (i + repeat) % 2 == 0 else names[::-1]
            for name in order:
                if failures[name] >= 2:
                    continue
                extra = ["--n", str(n)]
                if name == "src" and args.camera_defaults_src:
                    extra += ["--camera-defaults", args.camera_defaults_src]
                trial = child(trees[name], "live", args, extra)
                trial.update(tree=name, repeat=repeat, **verdict(trial, reference["videos"]))
                failures[name] = 0 if trial["passed"] else failures[name] + 1
                result["trials"].append(trial)
                cams = trial["cameras"]
                fps = sum(c["analysed_fps"] or 0 for c in cams) / len(cams)
                det = [c["detected"] for c in cams if c["detected"] is not None]
                det_s = f", detector {sum(det) / len(det) / trial['window_s']:.2f}/s" if det else ""
                print(f"[{name} r{repeat} N={n}] {'PASS' if trial['passed'] else 'fail'}: worst agreement "
                      f"{trial['worst_agreement']}, worst lag p95 {trial['worst_lag_p95']} s, {fps:.1f} frames/s "
                      f"per camera{det_s}, CPU {trial['cpu_s']} s + server {trial['server_cpu_s']} s in "
                      f"{trial['window_s']} s, load {trial['load_before'][0]}", flush=True)  # fmt: skip
    result["capacity"] = {}
    for name in names:
        per_repeat = []
        for repeat in range(args.repeats):
            trials = sorted((t for t in result["trials"] if t["tree"] == name and t["repeat"] == repeat),
                            key=lambda t: t["n"])  # fmt: skip
            before_failure = 0
            for t in trials:
                if not t["passed"]:
                    break
                before_failure = t["n"]
            passed = [t["n"] for t in trials if t["passed"]]
            per_repeat.append({"repeat": repeat, "capacity": before_failure, "largest_passed": max(passed, default=0),
                               "loads": [t["load_before"][0] for t in trials]})  # fmt: skip
        result["capacity"][name] = per_repeat
    print(json.dumps(result["capacity"], indent=2), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
