"""``maskwatch evaluate-detection``: the scene pipeline scored against PASCAL VOC boxes.

(``maskwatch detect`` lives in :mod:`maskwatch.commands.detect`, a consumer of the stream engine.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from maskwatch.commands.common import (
    EXIT_FAILED,
    ProgressReport,
    check_output_path,
    console,
    fail,
    json_target,
    setup_logging,
)


def evaluate_detection(
    data: Path = typer.Option(..., help="PASCAL VOC folder with images/ and annotations/."),
    json_out: Path = typer.Option(..., "--json", help="Write the metrics here (JSON; '-' writes to stdout)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write a self-contained HTML report."),
    model: Optional[Path] = typer.Option(None, help="Classifier model file (default: the bundled model)."),
    backend: Optional[str] = typer.Option(None, help="Classifier inference backend (default: the runtime's choice)."),
    preset: str = typer.Option("accurate", help="fast, balanced or accurate (see `maskwatch detect --help`)."),
    score_threshold: float = typer.Option(
        0.3, help="Operating point for recall, precision and counts: faces with a detector score at least this."
    ),
    min_confidence: float = typer.Option(
        0.0, help="Operating point: also require detector score x class probability >= this (0: off)."
    ),
    candidate_threshold: float = typer.Option(
        0.1, help="Detector score kept per view for the AP ranking (AP needs the low-scoring faces too)."
    ),
    crop_margin: Optional[float] = typer.Option(
        None, help="Margin around each face box before classifying.", show_default="the model's"
    ),
    classes: str = typer.Option("with_mask,without_mask", help="Classes averaged into mAP (comma-separated)."),
    splits: Optional[Path] = typer.Option(
        None, help="Split-list folder (train.txt, valid.txt, test.txt: image stems), e.g. data/splits/scenes."
    ),
    split: Optional[str] = typer.Option(
        None, help="Score only this split's images (train, valid or test; needs --splits). Recorded in the JSON."
    ),
    limit: Optional[int] = typer.Option(None, help="Only the first N annotated images (quick checks)."),
    video_frames: int = typer.Option(
        0,
        "--video-frames",
        help="Also measure privacy coverage on videos made from the images: each image held for N frames at "
        "10 frames/s, shaken, noisy and JPEG-compressed, through the blur hold (0: images only).",
    ),
    detector_model: Optional[Path] = typer.Option(None, help="CenterFace ONNX file."),
    threads: int = typer.Option(2, help="Face detector threads."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Score the pipeline against VOC boxes: face recall/precision by size, per-class AP@0.5, mAP, count error,
    and privacy coverage (faces hidden by the blur, by size; also on videos made from the images)."""
    from maskwatch.detection.centerface import ModelNotFoundError
    from maskwatch.detection.evaluation import ImageSubset, evaluate_voc
    from maskwatch.detection.pipeline import PRESETS, MaskDetector
    from maskwatch.detection.report_page import write_html_report

    setup_logging(verbose)
    json_path = check_output_path(json_out, "file", option="--json", stdout_ok=True)
    assert json_path is not None  # --json is required
    report = check_output_path(report, "file", option="--report")
    if preset not in PRESETS:
        fail(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if video_frames < 0:
        fail(f"--video-frames must be >= 0, got {video_frames}")
    if not (data / "annotations").is_dir() or not (data / "images").is_dir():
        fail(f"{data}: expected images/ and annotations/ (PASCAL VOC) folders")
    subset = None
    if (splits is None) != (split is None):
        fail("--split and --splits go together: --splits FOLDER --split valid")
    if splits is not None and split is not None:
        try:
            subset = ImageSubset.from_split_lists(splits, split)
        except ValueError as exc:
            fail(str(exc))
    class_list = [c.strip() for c in classes.split(",") if c.strip()]
    try:
        detector = MaskDetector.load(
            model,
            backend=backend,
            preset=preset,
            detector_model=detector_model,
            candidate_threshold=candidate_threshold,
            threads=threads,
            score_threshold=score_threshold,
            min_confidence=min_confidence,
            crop_margin=crop_margin,
        )
    except (ModelNotFoundError, FileNotFoundError, ValueError, KeyError) as exc:
        fail(f"cannot load the models: {exc}")
    missing = [c for c in class_list if c not in detector.classes]
    if missing:
        fail(f"class(es) {missing} are not classes of the model {detector.classes}")
    # a live bar on a terminal; in a log or a pipe a line every 30 s and at each tenth (a full run is minutes)
    with ProgressReport("evaluate-detection", "images", enabled=progress) as tracker:
        try:
            metrics = evaluate_voc(
                detector, data, classes=class_list, images=subset, limit=limit, on_progress=tracker.update
            )
        except ValueError as exc:
            fail(str(exc))
    metrics["privacy_coverage_video"] = None
    if video_frames:
        from maskwatch.stream.privacy import evaluate_privacy_video

        with ProgressReport("privacy on videos", "videos", enabled=progress) as tracker:
            try:
                video = evaluate_privacy_video(
                    detector, data, frames=video_frames, images=subset, limit=limit, on_progress=tracker.update
                )
            except (ValueError, ImportError) as exc:
                fail(str(exc))
        metrics["privacy_coverage_video"] = video.pop("privacy_coverage")
        metrics["privacy_video"] = video
    with json_target(json_path) as handle:
        handle.write(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    if report is not None:
        write_html_report(metrics, report)
    _print_eval(metrics)
    for item in metrics["skipped"][:10]:
        console.print(f"skipped {item['path']}: {item['reason']}", markup=False, highlight=False, soft_wrap=True)
    if len(metrics["skipped"]) > 10:
        console.print(f"... and {len(metrics['skipped']) - 10} more skipped (all listed in the JSON)")
    failed = [s for s in metrics["skipped"] if not s["reason"].startswith("image without an annotation")]
    if failed:
        fail(
            f"{len(failed)} of {len(failed) + metrics['n_images']} annotated images could not be used (listed above)",
            code=EXIT_FAILED,
        )
    if str(json_path) != "-":
        console.print(f"[green]wrote[/] {json_path}" + (f" and {report}" if report else ""))


def _json_default(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _fmt(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _print_eval(m: dict[str, Any]) -> None:
    chosen = m["images"]["split"] or ("listed images" if m["images"]["n_listed"] is not None else None)
    where = m["data"] + (f" ({chosen})" if chosen else "")
    table = Table(title=f"{where}: {m['n_images']} images, {m['n_faces']} faces")
    table.add_column("face size")
    video = m.get("privacy_coverage_video")
    for col in ("faces", "recall@0.5", "recall@0.3", "hidden (images)") + (("hidden (videos)",) if video else ()):
        table.add_column(col, justify="right")
    for bucket in m["recall"]:
        row = [str(m["n_faces_by_bucket"][bucket]), _fmt(m["recall"][bucket]), _fmt(m["recall_iou30"][bucket])]
        row.append(_fmt(m["privacy_coverage"][bucket]))
        if video:
            row.append(_fmt(video[bucket]))
        table.add_row(bucket, *row)
    console.print(table)
    area = f"blurred area {_fmt(m['blurred_area_share'])} of the image"
    if video:
        area += f" (videos {_fmt(m['privacy_video']['blurred_area_share'])})"
    console.print(f"hidden: faces at least {m['privacy']['cover']:.0%} blurred; {area}")
    aps = "  ".join(f"AP50 {k} {_fmt(v)}" for k, v in m["ap50"].items())
    console.print(f"{aps}  mAP50 {_fmt(m['map50'])}  (argmax-label ranking: mAP50 {_fmt(m['map50_argmax'])})")
    if len(m["map_all_classes"]) > len(m["map_classes"]):  # a third class scored beside the mAP's classes
        console.print(f"mAP50 over all {len(m['map_all_classes'])} classes {_fmt(m['map50_all'])}")
    console.print(
        f"precision@0.5 {_fmt(m['precision'])}  @0.3 {_fmt(m['precision_iou30'])}  count MAE "
        f"{_fmt(m['count_mae'])}  ({m['images_per_second']:.2f} images/s)"
    )
