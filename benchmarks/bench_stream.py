"""Stream-engine benchmark: analysed frames/s on one and four 640x480 streams, live lag, memory over time,
and how much the classification budget changes people's verdicts.

    .venv/bin/python benchmarks/bench_stream.py --json benchmarks/results/stream.json            # ~8 min
    .venv/bin/python benchmarks/bench_stream.py --soak-minutes 20 --only soak --json out.json    # memory

Everything runs in this one process through :class:`maskwatch.stream.StreamEngine`, the same engine that
``maskwatch detect``, the service and the agent use, on real models (the bundled classifier, CenterFace) and
videos made from the shared scene images (``bench_pipeline.make_video``: each image held ``--hold`` frames
with a slow zoom and pan, so faces persist and are tracked). Parts (``--only``, comma-separated):

* ``single``: one 640x480 video, every frame analysed, tracking on, as fast as it goes. The configurations
  run back to back in one process, in alternating order (``--rounds``), so their ratio is fair on a noisy
  machine: ``every-frame`` (classify every face on every frame) vs ``budget`` (the default: decided
  tracks re-classified every ``--classify-every`` frames), each with the ``--backends`` classifier runtimes.
* ``agreement``: the verdicts of the people on a longer video (``--agreement-images``) with the budget vs
  classifying every face on every frame (same detections, so the same track ids): the share that agree.
* ``four``: four 640x480 videos played as cameras at 25 FPS (``realtime``, latest frame wins) for
  ``--seconds``: analysed FPS per stream, slowest / fastest, drops, lag.
* ``live``: an MJPEG server at 25 FPS in another process on 127.0.0.1; the engine reads it for
  ``--live-seconds``: capture-to-result lag p50/p95 per 10 s window (growth = last window / first), drops.
* ``soak``: four cameras for ``--soak-minutes``; RSS every 30 s (start after a 30 s warm-up, end, max).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DEFAULT_DATA, cpu_model, make_video

from maskwatch.bench import rss_mb
from maskwatch.core.events import SourceSummary, StatsBucket, TrackEnded
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine


def run_engine(
    detector: MaskDetector, specs: list[SourceSpec], *, seconds: float | None = None, **config: Any
) -> tuple[list[Any], float]:
    """Run the engine on ``specs`` (to the end of the files, or ``seconds``); its events and the wall time."""
    engine = StreamEngine(detector, EngineConfig(stop_when_done=seconds is None, **config))
    events = engine.events()
    got: list[Any] = []
    for spec in specs:
        engine.add_source(spec)
    start = time.perf_counter()
    engine.start()
    if seconds is None:
        got = list(events)
    else:
        deadline = start + seconds
        while time.perf_counter() < deadline:
            with contextlib.suppress(queue.Empty):
                got.append(events.get(timeout=max(0.01, deadline - time.perf_counter())))
        engine.stop(2.0)
        got.extend(events)
    return got, time.perf_counter() - start


def summaries(events: list[Any]) -> dict[str, SourceSummary]:
    return {e.source: e for e in events if isinstance(e, SourceSummary)}


def single(detectors: dict[str, MaskDetector], video: Path, rounds: int, classify_every: int) -> dict[str, Any]:
    configs = [
        (f"{name}/{mode}", det, None if mode == "every-frame" else classify_every)
        for name, det in detectors.items()
        for mode in ("every-frame", "budget")
    ]
    fps: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    crops: dict[str, int] = {}
    for r in range(rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for name, det, every in order:
            events, _ = run_engine(det, [SourceSpec(uri=str(video), name="v")], classify_every=every)
            s = summaries(events)["v"]
            fps[name].append(s.analysed_fps or 0.0)
            crops[name] = sum(b.faces_classified for b in events if isinstance(b, StatsBucket))
            print(
                f"[single] round {r + 1} {name}: {s.analysed_fps:.1f} frames/s ({s.frames} frames, "
                f"{crops[name]} faces classified)",
                flush=True,
            )
    medians = {k: float(np.median(v)) for k, v in fps.items()}
    base = next(iter(medians))
    return {
        "video": str(video),
        "rounds": rounds,
        "classify_every": classify_every,
        "fps": fps,
        "median_fps": medians,
        "faces_classified": crops,
        "ratio_to_" + base: {k: round(v / medians[base], 3) for k, v in medians.items()},
    }


class _Memo:
    """Remembers a model's outputs by input bytes, so budget settings can be compared on identical
    detections and probabilities without paying for the networks again (agreement only, not speed)."""

    def __init__(self, inner: Any, method: str):
        self.inner, self.method, self.cache = inner, method, {}
        self.classes = getattr(inner, "classes", None)
        self.crop_margin = getattr(inner, "crop_margin", None)
        self.compliant_classes = getattr(inner, "compliant_classes", None)

    def _key(self, image: np.ndarray) -> tuple:
        return (image.shape, hash(np.ascontiguousarray(image).tobytes()))

    def detect(self, image: np.ndarray) -> Any:
        key = self._key(image)
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]

    def predict_proba(self, images: list[np.ndarray]) -> np.ndarray:
        missing = [im for im in images if self._key(im) not in self.cache]
        if missing:
            for im, p in zip(missing, self.inner.predict_proba(missing), strict=True):
                self.cache[self._key(im)] = p
        return np.array([self.cache[self._key(im)] for im in images])


def agreement_runs(detector: MaskDetector, video: Path, settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """People's verdicts with each budget setting vs classifying every face on every frame (same video)."""
    memo = MaskDetector(
        _Memo(detector.classifier, "predict_proba"),
        _Memo(detector.face_finder, "detect"),
        **{
            k: v
            for k, v in detector.settings().items()
            if k
            in (
                "scales",
                "flip",
                "score_threshold",
                "min_confidence",
                "crop_margin",
                "min_face",
                "fusion_iou",
                "box_adjust",
                "upscale",
                "classify_tta",
            )
        },
    )

    def verdicts(**config: Any) -> dict[int, str]:
        events, _ = run_engine(memo, [SourceSpec(uri=str(video), name="v")], **config)
        return {e.track_id: e.label for e in events if isinstance(e, TrackEnded)}

    full = verdicts(classify_every=None)
    out = []
    for setting in settings:
        budget = verdicts(**setting)
        common = sorted(set(full) & set(budget))
        agree = sum(full[t] == budget[t] for t in common)
        out.append(
            {
                **setting,
                "people_every_frame": len(full),
                "people_budget": len(budget),
                "people_compared": len(common),
                "agreeing": agree,
                "agreement": round(agree / len(common), 4) if common else None,
                "people_only_in_one_run": len(set(full) ^ set(budget)),
            }
        )
        print(f"[agreement] {video.name} {out[-1]}", flush=True)
    return out


def agreement(detector: MaskDetector, choose_video: Path, report_video: Path, classify_every: int) -> dict[str, Any]:
    """Choose the decision rule on one video (the cheapest that keeps >= 99 % of the verdicts there), report it
    and the engine's default on another video made of different scene images."""
    grid = [
        {"classify_every": k, "decided_votes": v, "decided_probability": p}
        for k in sorted({classify_every, 10})
        for v in (3, 5)
        for p in (0.8, 0.9)
    ]
    chosen_runs = agreement_runs(detector, choose_video, grid)
    # the cheapest rule that keeps >= 0.99 of the verdicts on this video (else the most faithful one)
    good = [r for r in chosen_runs if (r["agreement"] or 0) >= 0.99]
    if good:
        best = max(good, key=lambda r: (r["classify_every"], -r["decided_votes"], -r["decided_probability"]))
    else:
        best = max(chosen_runs, key=lambda r: r["agreement"] or 0)
    rule = {k: best[k] for k in ("classify_every", "decided_votes", "decided_probability")}
    default = {
        "classify_every": classify_every,
        "decided_votes": EngineConfig().decided_votes,
        "decided_probability": EngineConfig().decided_probability,
    }
    report = agreement_runs(detector, report_video, [default] if default == rule else [default, rule])
    return {
        "choose_video": str(choose_video),
        "report_video": str(report_video),
        "grid_on_choose_video": chosen_runs,
        "best_rule_on_choose_video": rule,
        "engine_default": default,
        "report": report,
    }


def cameras(detector: MaskDetector, videos: list[Path], seconds: float, classify_every: int) -> dict[str, Any]:
    specs = [SourceSpec(uri=str(v), name=f"cam{k}", realtime=True, loop=True) for k, v in enumerate(videos)]
    events, wall = run_engine(detector, specs, seconds=seconds, classify_every=classify_every, stats_interval=10)
    per = summaries(events)
    rates = {name: s.analysed_fps for name, s in per.items()}
    values = [v or 0.0 for v in rates.values()]
    return {
        "streams": len(specs),
        "seconds": round(wall, 1),
        "analysed_fps": rates,
        "slowest_over_fastest": round(min(values) / max(values), 3) if max(values) else None,
        "dropped": {n: s.dropped for n, s in per.items()},
        "lag_p95": {n: s.lag.p95 for n, s in per.items()},
        "lag_max": {n: s.lag.max for n, s in per.items()},
        "people": {n: s.people.n_people if s.people else 0 for n, s in per.items()},
    }


# -- a 25 FPS MJPEG camera on 127.0.0.1, in its own process -------------------------------------------------


def _serve_mjpeg(video: str, port: int, fps: float, ready: Any) -> None:
    import http.server

    capture = cv2.VideoCapture(video)
    jpegs = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            start, i = time.monotonic(), 0
            try:
                while True:
                    delay = start + i / fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    data = jpegs[i % len(jpegs)]
                    self.wfile.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(data)).encode()
                        + b"\r\n\r\n"
                        + data
                        + b"\r\n"
                    )
                    i += 1
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ready.set()
    server.serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def live(detector: MaskDetector, video: Path, seconds: float, classify_every: int) -> dict[str, Any]:
    port = free_port()
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve_mjpeg, args=(str(video), port, 25.0, ready), daemon=True)
    server.start()
    try:
        ready.wait(60)
        url = f"http://127.0.0.1:{port}/stream.mjpg"
        events, wall = run_engine(
            detector,
            [SourceSpec(uri=url, name="live")],
            seconds=seconds,
            classify_every=classify_every,
            stats_interval=10,
        )
    finally:
        server.terminate()
        server.join(5)
    s = summaries(events)["live"]
    windows = [b for b in events if isinstance(b, StatsBucket) and b.frames_analysed and not b.final]
    p95s = [b.lag.p95 for b in windows if b.lag.p95 is not None]
    return {
        "url": "http://127.0.0.1:PORT/stream.mjpg (25 FPS, 640x480 MJPEG, another process)",
        "seconds": round(wall, 1),
        "frames": s.frames,
        "analysed_fps": s.analysed_fps,
        "dropped": s.dropped,
        "lag": s.lag.model_dump(),
        "lag_p95_per_10s": p95s,
        "lag_growth_last_over_first": round(p95s[-1] / p95s[0], 3) if len(p95s) > 1 and p95s[0] else None,
    }


def soak(detector: MaskDetector, videos: list[Path], minutes: float, classify_every: int) -> dict[str, Any]:
    specs = [SourceSpec(uri=str(v), name=f"cam{k}", realtime=True, loop=True) for k, v in enumerate(videos)]
    engine = StreamEngine(detector, EngineConfig(classify_every=classify_every, stats_interval=60))
    subscription = engine.events()
    for spec in specs:
        engine.add_source(spec)
    engine.start()
    samples, start = [], time.monotonic()
    people = 0
    while time.monotonic() - start < minutes * 60:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                event = subscription.get(timeout=1)
            except queue.Empty:
                continue
            people += isinstance(event, TrackEnded)
        samples.append((round(time.monotonic() - start), round(rss_mb(), 1)))
        print(f"[soak] {samples[-1][0]} s: RSS {samples[-1][1]} MB, {people} people so far", flush=True)
    engine.stop(2.0)
    rest = list(subscription)
    frames = sum(e.frames for e in rest if isinstance(e, SourceSummary))
    return {
        "minutes": minutes,
        "streams": len(specs),
        "rss_mb_samples": samples,
        "rss_start_mb": samples[0][1] if samples else None,
        "rss_end_mb": samples[-1][1] if samples else None,
        "rss_max_mb": max(v for _, v in samples) if samples else None,
        "people": people,
        "frames": frames,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC scenes folder (images/)")
    p.add_argument("--model", type=Path, default=None, help="classifier (default: the bundled model)")
    p.add_argument("--backends", default="default", help="classifier backends for 'single', e.g. default,onnx-int8")
    p.add_argument("--stream-backend", default=None, help="classifier backend for the other parts (default: runtime's)")
    p.add_argument("--preset", default="fast", help="detector preset for streams")
    p.add_argument("--classify-every", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hold", type=int, default=15)
    p.add_argument("--images", type=int, default=20, help="scene images in the speed videos (300 frames)")
    p.add_argument("--agreement-images", type=int, default=80, help="scene images in the agreement video")
    p.add_argument("--seconds", type=float, default=60.0, help="'four': seconds of four cameras")
    p.add_argument("--live-seconds", type=float, default=120.0)
    p.add_argument("--soak-minutes", type=float, default=20.0)
    p.add_argument("--only", default="single,agreement,four,live", help="parts to run (add soak for memory)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.only.split(",") if x.strip()}
    images = sorted((args.data / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no scene images under {args.data}/images")
    work = Path(tempfile.mkdtemp(prefix="maskwatch-bench-stream-"))
    video = work / "scenes-640x480.mp4"
    info = make_video(images[: args.images], video, args.hold)
    result: dict[str, Any] = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "video": info,
        "preset": args.preset,
        "command": " ".join(["benchmarks/bench_stream.py", *(argv or sys.argv[1:])]),
    }
    backends = [b for b in args.backends.split(",") if b]
    detectors = {
        b: MaskDetector.load(args.model, backend=None if b == "default" else b, preset=args.preset) for b in backends
    }
    stream_detector = MaskDetector.load(args.model, backend=args.stream_backend, preset=args.preset)
    preset_settings = stream_detector.configured(scales=args.preset).settings()
    result["stream_models"] = {
        k: preset_settings[k] for k in ("detector", "classifier_precision", "classifier_backend")
    }
    if "single" in parts:
        result["single"] = single(detectors, video, args.rounds, args.classify_every)
    if "agreement" in parts:
        n = args.agreement_images
        choose, report = work / "agreement-choose.mp4", work / "agreement-report.mp4"
        result["agreement_videos"] = {
            "choose": {**make_video(images[-n:], choose, args.hold), "images": f"the last {n} scene images"},
            "report": {**make_video(images[:n], report, args.hold), "images": f"the first {n} scene images"},
        }
        result["agreement"] = agreement(stream_detector, choose, report, args.classify_every)
    if parts & {"four", "soak"}:
        videos = []
        for k in range(4):  # four different cameras: different images
            path = work / f"cam{k}.mp4"
            make_video(images[args.images * (k + 1) : args.images * (k + 2)] or images[: args.images], path, args.hold)
            videos.append(path)
    if "four" in parts:
        result["four"] = cameras(stream_detector, videos, args.seconds, args.classify_every)
        print(f"[four] {result['four']}", flush=True)
    if "live" in parts:
        result["live"] = live(stream_detector, video, args.live_seconds, args.classify_every)
        print(f"[live] {result['live']}", flush=True)
    if "soak" in parts:
        result["soak"] = soak(stream_detector, videos, args.soak_minutes, args.classify_every)
        print(f"[soak] {result['soak']}", flush=True)
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
