"""The stream engine's speed, two source trees side by side: one stream (every frame analysed) and four
streams (25 FPS cameras, latest frame wins), alternating the trees round by round in one run.

    .venv/bin/python benchmarks/bench_engine_ab.py --a /work/baseline/src --b src --rounds 5 \\
        --json benchmarks/results/engine_ab.json

Each measurement runs in a fresh process with ``PYTHONPATH`` set to one tree (so each imports its own
maskwatch) on the same videos (made once from the shared scene images, as ``bench_stream.py`` makes them)
and the same models (the bundled classifier, CenterFace; the ``fast`` preset: INT8 detector and classifier,
tracking and the classification budget on, the engine's defaults). The order of the trees alternates
(A B, B A, ...), so load that comes and goes on a shared machine hits both alike; the result is the median
of each tree's rounds and the ratio B / A, with the load average before and after every run.

Two figures per run: analysed frames/s per stream (wall clock: what a user sees, and what other jobs on a
shared machine sway most) and the process's CPU seconds per analysed frame (user + system, all threads,
plus its decoder processes for a tree that decodes live sources in child processes: the engine's own cost,
much less swayed by other jobs; it includes decoding the frames a live source then drops, which both trees
decode alike). The four-stream part records the decoder processes' share as ``decoder_cpu_s``.

``--parts four-files``: the four videos as files (every frame analysed, the four sources in rounds
with one classifier batch per round): the multi-source path with no frame dropped, so its CPU ms per frame
is not swayed by how many frames a starved live source decodes and drops.

``--parts overhead``: the engine's own work per frame with the models taken out: the single stream with
the detector's and the classifier's outputs remembered from a first pass (looked up by the frame's bytes),
so the CPU milliseconds per frame are the engine's Python and numpy work (plus decoding and the look-ups,
alike in both trees).

The child side (``--child``) only uses names both trees have: ``StreamEngine``, ``EngineConfig`` and
``SourceSpec`` from ``maskwatch.stream`` and ``MaskDetector``; events are read by their ``type``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process (``PYTHONPATH`` says which tree)."""
    import contextlib
    import queue

    import maskwatch
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    detector = MaskDetector.load(preset="fast")
    videos = args.videos.split(",")
    if args.part == "overhead":
        return overhead(detector, videos[0])
    if args.part in ("single", "four-files"):
        engine = StreamEngine(detector, EngineConfig(stop_when_done=True))
        events = engine.events()
        for k, video in enumerate(videos):
            engine.add_source(SourceSpec(uri=video, name=f"v{k}"))
        start, cpu = time.perf_counter(), time.process_time()
        engine.start()
        got = list(events)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        done = [e for e in got if e.type == "source"]
        frames = sum(s.frames for s in done)
        classified = sum(e.faces_classified for e in got if e.type == "stats")
        return {"fps": round(sum(s.analysed_fps or 0.0 for s in done) / len(done), 3), "frames": frames,
                "wall_s": round(wall, 2), "cpu_ms_per_frame": round(1000 * cpu / max(1, frames), 2),
                "faces_classified": classified, "people": sum(s.people.n_people for s in done if s.people),
                "maskwatch": str(Path(maskwatch.__file__).parent)}  # fmt: skip
    options: dict[str, Any] = {"stats_interval": 10}
    if os.environ.get("MASKWATCH_BENCH_DECODER"):  # variant C: this tree with decoding in threads
        options["decoder"] = os.environ["MASKWATCH_BENCH_DECODER"]
    engine = StreamEngine(detector, EngineConfig(**options))
    events = engine.events()
    names = [f"cam{k}" for k in range(len(videos))]
    for name, video in zip(names, videos, strict=True):
        engine.add_source(SourceSpec(uri=video, name=name, realtime=True, loop=True))
    got: list[Any] = []

    def drain(until: float) -> None:
        while time.perf_counter() < until:
            with contextlib.suppress(queue.Empty):
                got.append(events.get(timeout=max(0.01, until - time.perf_counter())))

    def analysed() -> int:
        live = engine.source_stats()
        return sum(live[n].frames for n in names if n in live)

    cpu_own, cpu_children = time.process_time(), _children_cpu()
    engine.start()
    deadline = time.perf_counter() + args.seconds
    # the steady window: once every camera has analysed a frame (decoder processes started), 2 s on
    warm_until = time.perf_counter() + 60.0
    while time.perf_counter() < warm_until and not all(engine.source_stats().get(n) and engine.source_stats()[n].frames
                                                      for n in names):  # fmt: skip
        drain(time.perf_counter() + 0.1)
    drain(time.perf_counter() + 2.0)
    window_start, frames0 = time.perf_counter(), analysed()
    own0, live0 = time.process_time(), _live_children_cpu()
    drain(max(deadline, window_start + args.seconds))
    window = time.perf_counter() - window_start
    steady_frames, steady_own, steady_dec = (
        analysed() - frames0,
        time.process_time() - own0,
        _live_children_cpu() - live0,
    )
    engine.stop(2.0)
    got.extend(events)
    own = time.process_time() - cpu_own
    decoders = _reap_children() - cpu_children  # B's decoder processes (A has none), once they are reaped
    cpu = own + decoders
    summaries = {e.source: e for e in got if e.type == "source"}
    rates = [summaries[n].analysed_fps or 0.0 for n in names]
    frames = sum(summaries[n].frames for n in names)
    steady_cpu = steady_own + steady_dec
    return {"fps": round(sum(rates) / len(rates), 3), "per_stream": rates,
            "cpu_ms_per_frame": round(1000 * cpu / max(1, frames), 2), "frames": frames,
            "cpu_s": round(own, 2), "decoder_cpu_s": round(decoders, 2),
            "steady": {"window_s": round(window, 2), "frames": steady_frames,
                       "fps": round(steady_frames / window / len(names), 3),
                       "cpu_ms_per_frame": round(1000 * steady_cpu / max(1, steady_frames), 2),
                       "cores": round(steady_cpu / window, 3), "decoder_cores": round(steady_dec / window, 3)},
            "dropped": [summaries[n].dropped for n in names],
            "lag_p95": [summaries[n].lag.p95 for n in names],
            "maskwatch": str(Path(maskwatch.__file__).parent)}  # fmt: skip


def _live_children_cpu() -> float:
    """CPU seconds (user + system) so far of this process's running children (``/proc``)."""
    me, total, tick = os.getpid(), 0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text()
            except OSError:
                continue
            rest = fields[fields.rindex(")") + 2 :].split()  # state, ppid, ... utime (14th field), stime
            if int(rest[1]) == me:
                total += int(rest[11]) + int(rest[12])
    return total / tick


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended and reaped children."""
    times = os.times()
    return times.children_user + times.children_system


def _reap_children(timeout: float = 10.0) -> float:
    """:func:`_children_cpu` once no child of this process is left (the engine reaps its decoder processes as
    its readers end, shortly after ``stop``)."""
    me, deadline = os.getpid(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == me:
                    alive.append(entry.name)
        if not alive:
            break
        time.sleep(0.05)
    return _children_cpu()


class _Remembered:
    """A model whose outputs are looked up by input bytes after the first time (``overhead``)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.cache = inner, {}
        self.classes = getattr(inner, "classes", None)
        self.crop_margin = getattr(inner, "crop_margin", None)
        self.compliant_classes = getattr(inner, "compliant_classes", None)

    @staticmethod
    def _key(image: Any) -> tuple[Any, ...]:
        import numpy as np

        return (image.shape, hash(np.ascontiguousarray(image).tobytes()))

    def detect(self, image: Any) -> Any:
        key = self._key(image)
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]

    def predict_proba(self, images: list[Any]) -> Any:
        import numpy as np

        missing = [im for im in images if self._key(im) not in self.cache]
        if missing:
            for im, p in zip(missing, self.inner.predict_proba(missing), strict=True):
                self.cache[self._key(im)] = p
        return np.array([self.cache[self._key(im)] for im in images])


def overhead(detector: Any, video: str) -> dict[str, Any]:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine

    fast = detector.configured(scales="fast")
    remembered = MaskDetector(_Remembered(fast.active_classifier), _Remembered(fast.active_finder), scales=(640,),
                              flip=False)  # fmt: skip

    def run() -> float:
        engine = StreamEngine(remembered, EngineConfig(stop_when_done=True))
        events = engine.events()
        engine.add_source(SourceSpec(uri=video, name="v"))
        cpu = time.process_time()
        engine.start()
        got = list(events)
        cpu = time.process_time() - cpu
        return 1000 * cpu / next(e for e in got if e.type == "source").frames

    run()  # the models' outputs, once
    runs = [run() for _ in range(3)]
    return {"fps": 0.0, "cpu_ms_per_frame": round(median(runs), 3), "runs": [round(x, 3) for x in runs]}


def measure(tree: Path, part: str, videos: list[Path], seconds: float, decoder: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if decoder:
        env["MASKWATCH_BENCH_DECODER"] = decoder
    cmd = [sys.executable, __file__, "--child", "--part", part, "--videos", ",".join(map(str, videos)),
           "--seconds", str(seconds)]  # fmt: skip
    before = os.getloadavg()[0]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree} {part} failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["load_before"], out["load_after"] = round(before, 2), round(os.getloadavg()[0], 2)
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, default=Path("/work/baseline/src"), help="tree A (the reference)")
    p.add_argument("--b", type=Path, default=ROOT / "src", help="tree B (compared with A)")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scenes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0, help="four streams: seconds per run")
    p.add_argument("--images", type=int, default=20, help="scene images per video (15 frames each)")
    p.add_argument("--parts", default="single,four")
    p.add_argument(
        "--thread-variant",
        action="store_true",
        help="also C: tree B with live sources decoded in threads (engine.decoder: thread)",
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--part", default="single", help=argparse.SUPPRESS)
    p.add_argument("--videos", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        # capture threads may still be inside OpenCV at interpreter exit (both trees: it can abort the
        # teardown with "terminate called"): the figure is out, so leave without tearing down
        os._exit(0)

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import cpu_model, make_video

    images = sorted((args.data / "images").glob("*.jpg"))
    if len(images) < 5 * args.images:
        raise SystemExit(f"need {5 * args.images} scene images under {args.data}/images")
    work = Path(tempfile.mkdtemp(prefix="maskwatch-engine-ab-"))
    single_video = work / "single.mp4"
    make_video(images[: args.images], single_video, 15)
    cams = []
    for k in range(4):  # four different cameras, as bench_stream.py's "four"
        path = work / f"cam{k}.mp4"
        make_video(images[args.images * (k + 1) : args.images * (k + 2)], path, 15)
        cams.append(path)
    trees = {"a": args.a.resolve(), "b": args.b.resolve()}
    keys = ["a", "b"]
    if args.thread_variant:
        trees["c"] = trees["b"]
        keys.append("c")
    parts = [x for x in args.parts.split(",") if x]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {part: {k: [] for k in keys} for part in parts}
    for r in range(args.rounds):
        order = keys[r % len(keys) :] + keys[: r % len(keys)]  # rotated: each variant runs first as often
        for part in parts:
            for key in order:
                videos = cams if part in ("four", "four-files") else [single_video]
                got = measure(trees[key], part, videos, args.seconds, "thread" if key == "c" else None)
                runs[part][key].append(got)
                print(f"[{part}] round {r + 1} {key}: {got['fps']:.2f} frames/s per stream, "
                      f"{got['cpu_ms_per_frame']:.1f} CPU ms per frame "
                      f"(load {got['load_before']} -> {got['load_after']})", flush=True)  # fmt: skip
    result: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "trees": {k: str(v) + (" (engine.decoder: thread)" if k == "c" else "") for k, v in trees.items()},
        "command": " ".join(["benchmarks/bench_engine_ab.py", *(argv if argv is not None else sys.argv[1:])]),
        "preset": "fast (INT8 CenterFace at 640 px, INT8 classifier), tracking and the classification budget on",
        "videos": {"single": "20 scene images x 15 frames, 640x480", "four": "4 x 20 other scene images, 25 FPS"},
        "four_seconds": args.seconds,
        "rounds": args.rounds,
        "runs": runs,
    }
    for part in parts:
        fps = {key: [run["fps"] for run in runs[part][key]] for key in ("a", "b")}
        cpu = {key: [run["cpu_ms_per_frame"] for run in runs[part][key]] for key in ("a", "b")}
        result[part] = {
            "median_fps": {key: round(median(v), 3) for key, v in fps.items()},
            "fps_ratio_b_over_a": round(median(fps["b"]) / median(fps["a"]), 3) if median(fps["a"]) else None,
            "fps_ratio_per_round": [round(b / a, 3) for a, b in zip(fps["a"], fps["b"], strict=True) if a],
            "median_cpu_ms_per_frame": {key: round(median(v), 2) for key, v in cpu.items()},
            "cpu_ratio_b_over_a": round(median(cpu["b"]) / median(cpu["a"]), 3),
            "cpu_ratio_per_round": [round(b / a, 3) for a, b in zip(cpu["a"], cpu["b"], strict=True) if a],
            "load": [run["load_before"] for key in ("a", "b") for run in runs[part][key]],
        }
        for other in keys[1:]:  # the steady window (four cameras): B and C against A, B against C
            pairs = [("a", other)] + ([("c", "b")] if other == "c" else [])
            for ref, key in pairs:
                steady = [(x["steady"], y["steady"]) for x, y in zip(runs[part][ref], runs[part][key], strict=True)
                          if "steady" in x and "steady" in y]  # fmt: skip
                if not steady:
                    continue
                result[part][f"steady_{key}_over_{ref}"] = {
                    "fps_ratio": round(
                        median([y["fps"] for _, y in steady]) / median([x["fps"] for x, _ in steady]), 3
                    ),
                    "fps_ratio_per_round": [round(y["fps"] / x["fps"], 3) for x, y in steady if x["fps"]],
                    "cpu_ratio": round(
                        median([y["cpu_ms_per_frame"] for _, y in steady])
                        / median([x["cpu_ms_per_frame"] for x, _ in steady]),
                        3,
                    ),
                    "cpu_ratio_per_round": [round(y["cpu_ms_per_frame"] / x["cpu_ms_per_frame"], 3) for x, y in steady],
                }
                print(f"[{part}] steady {key}/{ref}: {result[part][f'steady_{key}_over_{ref}']}", flush=True)
        done = result[part]
        print(f"[{part}] frames/s median A {done['median_fps']['a']}, B {done['median_fps']['b']}: "
              f"B/A {done['fps_ratio_b_over_a']} (per round {done['fps_ratio_per_round']}); CPU ms per frame "
              f"A {done['median_cpu_ms_per_frame']['a']}, B {done['median_cpu_ms_per_frame']['b']}: "
              f"B/A {done['cpu_ratio_b_over_a']} (per round {done['cpu_ratio_per_round']})", flush=True)  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
