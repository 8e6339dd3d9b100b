"""``maskwatch explain`` and ``maskwatch report``: the insight commands (registered in ``maskwatch.cli``).

Both are thin: they parse options and call :mod:`maskwatch.explain` / :mod:`maskwatch.report`. Heavy
imports (torch, grad-cam, matplotlib) happen inside the functions so ``maskwatch --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from maskwatch.commands.common import check_output_path, console, fail, finish, log, require_extra, setup_logging

METHOD_HELP = "CAM method: gradcam | gradcam++ | eigencam | scorecam (also xgradcam, layercam, hirescam)."
INSIGHT_MODULES = ["torch", "matplotlib", "pytorch_grad_cam"]


def _check_method(method: str) -> None:
    require_extra(INSIGHT_MODULES, "explanations")
    from maskwatch.explain.cam import available_methods

    if method not in available_methods():
        fail(f"unknown --method {method!r}; choose from {', '.join(available_methods())}")


def print_mass_summary(summary: dict[str, Any]) -> None:
    """The explanation-quality numbers, one row per true class."""
    table = Table(title="Grad-CAM mass on the face (predicted class), per true class")
    for column in ("class", "images", "lower face", "upper face", "outside", ">50% lower", "uniform map"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, s in summary.items():
        table.add_row(
            name,
            str(s["n"]),
            f"{s['lower_face_mean']:.3f}",
            f"{s['upper_face_mean']:.3f}",
            f"{s['outside_mean']:.3f}",
            f"{s['lower_majority']:.3f}",
            f"{s['uniform_lower_face']:.3f}",
        )
    Console().print(table)


def write_report(
    evaluation: Any,
    out: Path,
    *,
    model_path: Path,
    model_card: Optional[Path] = None,
    low_confidence: float = 0.6,
    **options: Any,
) -> None:
    """Used by ``maskwatch evaluate --report``: build the report and print where it went."""
    from maskwatch.report.build import build_report

    if not 0.0 < low_confidence <= 1.0:
        fail(f"--low-confidence must be in (0, 1], got {low_confidence}")
    try:
        result = build_report(
            evaluation, out, model_path=model_path, model_card=model_card, low_confidence=low_confidence, **options
        )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print_mass_summary(result.mass_summary)
    console.print(f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f}s)")


def explain(
    images: list[Path] = typer.Argument(..., help="Face images (whole image = one face), or folders of them."),
    model: Optional[Path] = typer.Option(None, help="Model file (.pt).", show_default="the bundled model"),
    method: str = typer.Option("gradcam", help=METHOD_HELP),
    out: Path = typer.Option(Path("explanations"), help="Folder for one PNG per image: <stem>.<method>.png."),
    all_classes: bool = typer.Option(False, "--all-classes", help="Also show the map of every other class."),
    layer: Optional[str] = typer.Option(
        None, help="Target layer by dotted name.", show_default="the architecture's CAM layer: features.18, layer4"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Explain single images: input, CAM overlay of the predicted class (or of every class), probabilities."""
    from maskwatch.bundled import default_model_path
    from maskwatch.explain.images import expand_inputs, explain_files

    setup_logging(verbose)
    _check_method(method)
    check_output_path(out, "dir", option="--out")
    files = expand_inputs(images)
    missing = [p for p in files if not p.exists()]
    if missing:
        fail(f"no such file: {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if not files:
        fail("no images given (folders held no image files)")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from maskwatch.explain.cam import GRADIENT_OR_ACTIVATION_METHODS

    # Perturbation methods (Score-CAM, ...) take tens of seconds per image: explain and report one at a time.
    batch_size = 8 if method in GRADIENT_OR_ACTIVATION_METHODS else 1
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        model_path = model or default_model_path()
        results = explain_files(
            model_path, files, out, method=method, all_classes=all_classes, layer=layer, batch_size=batch_size
        )
        table = Table(title=f"{method} explanations in {out}")
        for column in ("image", "predicted", "probability", "png"):  # paths wrap, never cut with an ellipsis
            table.add_column(column, justify="right" if column == "probability" else "left", overflow="fold")
        bad = 0
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(f"explaining ({method})", total=len(files))
            for item in results:
                bar.update(task, advance=1, description=f"explaining ({method}): {Path(item.path).name}")
                if item.error:
                    bad += 1
                    log.warning("skipped %s: %s", item.path, item.error)
                    continue
                table.add_row(Path(item.path).name, item.predicted, f"{item.probability:.3f}", str(item.png))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    Console().print(table)
    finish(bad, len(files), "images")  # exit code 1 naming how many could not be explained


def report(
    run_dir: Path = typer.Argument(..., help="Run folder of `maskwatch train` (holds model.pt, history.csv, ...)."),
    out: Optional[Path] = typer.Option(None, help="HTML file to write.", show_default="RUN_DIR/report.html"),
    data: Optional[Path] = typer.Option(
        None,
        help="Evaluate on this dataset instead of reusing the run's test predictions.",
        show_default="the run's metrics.predictions.csv",
    ),
    split: Optional[str] = typer.Option(
        None, help="With --data: train | valid | test | all.", show_default="test, or all for a dataset without splits"
    ),
    crops: Optional[bool] = typer.Option(
        None,
        "--crops/--no-crops",
        help="With --data: classify face crops of VOC scenes.",
        show_default="as the run was trained",
    ),
    model_card: Optional[Path] = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="Model card (Markdown) to include.",
        show_default="MODEL_CARD.md beside the model",
    ),
    low_confidence: float = typer.Option(
        0.6, help="Top-class probability below which an image is 'low confidence' in the galleries."
    ),
    method: str = typer.Option("gradcam", help=METHOD_HELP),
    cam_samples: int = typer.Option(96, min=1, help="Images per class for the explanation-quality figure."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Write the self-contained HTML insight report of a training run."""
    from maskwatch.data.datasets import DatasetError
    from maskwatch.report.build import report_for_run

    setup_logging(verbose)
    _check_method(method)
    if not run_dir.is_dir():
        fail(f"run folder {run_dir} does not exist")
    check_output_path(out if out is not None else run_dir / "report.html", "file", option="--out")
    if not 0.0 < low_confidence <= 1.0:
        fail(f"--low-confidence must be in (0, 1], got {low_confidence}")
    try:
        result = report_for_run(
            run_dir,
            out=out,
            data=data,
            split=split,
            crops=crops,
            model_card=model_card,
            low_confidence=low_confidence,
            method=method,
            cam_samples=cam_samples,
        )
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    print_mass_summary(result.mass_summary)
    console.print(f"[green]wrote[/] {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f}s)")
