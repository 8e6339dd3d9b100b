"""The ``maskwatch`` command: a thin shell that parses options and calls the library.

Exit codes (the contract, implemented once in :mod:`maskwatch.commands.common`): 0 success; 1 the work ran
but some inputs failed (the message says how many); 2 usage or input error, found before any work (unknown
option, out-of-range number, unusable dataset or output path, unreadable model); 130 interrupted. User
errors are one line on stderr without a traceback; ``maskwatch --debug ...`` shows it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from maskwatch import __version__
from maskwatch.commands import agent as _agent
from maskwatch.commands import average as _average
from maskwatch.commands import calibrate as _calibrate
from maskwatch.commands import detect as _detect
from maskwatch.commands import doctor as _doctor
from maskwatch.commands import insight as _insight
from maskwatch.commands import mine as _mine
from maskwatch.commands import runtime as _runtime
from maskwatch.commands import scenes as _scenes
from maskwatch.commands import serve as _serve
from maskwatch.commands.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    check_output_path,
    console,
    exit_process,
    fail,
    is_stdout,
    require_extra,
    run_app,
    set_debug,
    setup_logging,
)
from maskwatch.config import TrainConfig
from maskwatch.paths import shared_data_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, evaluate, explain and deploy a face-mask classifier.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: wraps at any width, never truncates a name or a path
)
log = logging.getLogger("maskwatch")
_DEFAULTS = {name: f.default for name, f in TrainConfig.model_fields.items()}


def _default(name: str) -> str:
    """TrainConfig's default of ``name`` for ``--help`` (the options default to None, meaning "not given",
    so a config file can set them)."""
    value = _DEFAULTS[name]
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"maskwatch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks with errors (also MASKWATCH_DEBUG=1)."),
    max_pixels: Optional[int] = typer.Option(
        None,
        "--max-pixels",
        help="Refuse images with more pixels than this (decompression bombs), in every command; 0: no limit.",
        show_default="$MASKWATCH_MAX_PIXELS, else 64000000",
    ),
) -> None:
    """Train, evaluate, explain and deploy a face-mask classifier.

    Exit codes: 0 success; 1 the work ran but some inputs failed; 2 usage or input error, before any work;
    130 interrupted.
    """
    set_debug(debug)
    if max_pixels is not None:
        if max_pixels < 0:
            fail(f"--max-pixels must be >= 0 (0: no limit), got {max_pixels}")
        # The one limit the image decoder reads (maskwatch.data.images.max_pixels_limit), in this process and
        # in any it starts; the same as the API's max_pixels= and $MASKWATCH_MAX_PIXELS.
        from maskwatch.data.images import MAX_PIXELS_ENV

        os.environ[MAX_PIXELS_ENV] = str(max_pixels)


def _uncalibrated(report: dict) -> str:
    """`` (T 1.7; uncalibrated 0.0312)`` when the model has a temperature, so before and after show."""
    if report.get("ece_uncalibrated") is None:
        return ""
    return f" (T {report['temperature']:.3g}; uncalibrated {report['ece_uncalibrated']:.4f})"


def _print_metrics(report: dict, to_stderr: bool = False) -> None:
    out = console if to_stderr else Console()
    table = Table(title=f"{report.get('data', '')} [{report.get('split', '')}] — {report['n_images']} images")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    out.print(table)
    extra = f"  roc_auc {report['roc_auc']:.4f}" if report.get("roc_auc") is not None else ""
    out.print(
        f"accuracy {report['accuracy']:.4f}  macro_f1 {report['macro_f1']:.4f}  "
        f"ece {report['ece']:.4f}{_uncalibrated(report)}{extra}  skipped {len(report['skipped'])}"
    )


_DATA_HELP = (
    "Dataset root: class folders, Roboflow CSV splits, or VOC scenes with --crops. Repeat it to train on "
    "several datasets at once. Options of one dataset follow its path after commas: crops, min_face=N, "
    "crop_margin=F, splits=DIR, weight=W, name=NAME (unset ones take --crops, --min-face, --splits). "
    "A weight multiplies how often each of the dataset's training samples is drawn per epoch. Example: "
    "--data faces --data scenes,crops,min_face=12,weight=2"
)


@app.command()
def train(
    data: Optional[list[str]] = typer.Option(
        None,
        metavar="PATH[,OPTION...]",
        help=_DATA_HELP,
        show_default="../shared/data/faces when it exists",
    ),
    arch: Optional[str] = typer.Option(None, help="Backbone: mobilenet_v2 or resnet18.", show_default=_default("arch")),
    config: Optional[Path] = typer.Option(
        None,
        help="YAML file with any TrainConfig setting (names as in src/maskwatch/config.py; CLI flags win).",
        show_default="none",
    ),
    out: Optional[Path] = typer.Option(None, help="Run folder.", show_default="runs/<arch>-<time>"),
    weights: Optional[str] = typer.Option(
        None, help="imagenet | none | PATH to an ImageNet state dict.", show_default=_default("weights")
    ),
    epochs: Optional[int] = typer.Option(
        None, min=1, help="Epochs of the frozen-backbone stage.", show_default=_default("epochs")
    ),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size.", show_default=_default("batch_size")),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate of the head stage.", show_default=_default("lr")),
    image_size: Optional[int] = typer.Option(
        None, min=32, help="Input side in pixels.", show_default=_default("image_size")
    ),
    finetune: Optional[int] = typer.Option(
        None,
        min=0,
        help="Unfreeze the last K backbone blocks for a second stage (0: head only).",
        show_default=_default("finetune"),
    ),
    finetune_epochs: Optional[int] = typer.Option(
        None, min=1, help="Epochs of the fine-tuning stage.", show_default=_default("finetune_epochs")
    ),
    finetune_lr: Optional[float] = typer.Option(
        None, help="Learning rate of the fine-tuning stage.", show_default=_default("finetune_lr")
    ),
    patience: Optional[int] = typer.Option(
        None, min=1, help="Early stopping: epochs without validation-loss gain.", show_default=_default("patience")
    ),
    class_weights: Optional[str] = typer.Option(
        None, help="none | balanced (for imbalanced data).", show_default=_default("class_weights")
    ),
    seed: Optional[int] = typer.Option(
        None, help="Random seed (splits, augmentation, init).", show_default=_default("seed")
    ),
    augment: Optional[bool] = typer.Option(
        None, "--augment/--no-augment", help="Training augmentation.", show_default=_default("augment")
    ),
    views: Optional[int] = typer.Option(
        None, min=1, help="Augmented views per training image in the feature cache.", show_default=_default("views")
    ),
    fast_path: Optional[bool] = typer.Option(
        None,
        "--fast-path/--no-fast-path",
        help="Cache frozen-backbone features, or run the backbone every epoch, notebook-style.",
        show_default=_default("fast_path"),
    ),
    crops: Optional[bool] = typer.Option(
        None, "--crops/--no-crops", help="Train on face crops of VOC scenes.", show_default=_default("crops")
    ),
    min_face: Optional[int] = typer.Option(
        None, min=1, help="With --crops: smallest longest box side (px).", show_default=_default("min_face")
    ),
    splits: Optional[Path] = typer.Option(
        None,
        help="Split-list folder (train.txt, valid.txt, test.txt of image stems, e.g. data/splits/scenes) that "
        "assigns the images of a dataset without split folders; images in no list are left out.",
        show_default="none",
    ),
    classes: Optional[str] = typer.Option(
        None,
        help="Comma-separated classes of the model, e.g. with_mask,without_mask; faces of other labels are left out.",
        show_default="the data's classes (sorted union of several datasets)",
    ),
    test: Optional[bool] = typer.Option(
        None,
        "--test/--no-test",
        help="Evaluate each dataset's test split at the end; --no-test never decodes or scores a test set "
        "(for choosing recipes on valid splits only).",
        show_default=_default("evaluate_test"),
    ),
    calibrate: Optional[bool] = typer.Option(
        None,
        "--calibrate/--no-calibrate",
        help="Fit a temperature on the valid splits after training and store it with the model, so its "
        "probabilities mean what they say (see `maskwatch calibrate`).",
        show_default=_default("calibrate"),
    ),
    half: Optional[bool] = typer.Option(
        None, "--half/--no-half", help="Store the model's weights as fp16.", show_default=_default("half")
    ),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda.", show_default=_default("device")),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Train a mask classifier by transfer learning; evaluates on the test split when there is one."""
    require_extra(["torch", "torchvision"], "train")
    from maskwatch.config import load_config
    from maskwatch.core.errors import ConfigError
    from maskwatch.data.datasets import DatasetError
    from maskwatch.models import WeightsNotFoundError
    from maskwatch.training import RunFinishedError, TrainingInterrupted, fit

    setup_logging(verbose)
    check_output_path(out, "dir", option="--out")
    if resume and out is not None and config is None and (out / "config.yaml").is_file():
        config = out / "config.yaml"
    if not data and config is None and (shared_data_dir() / "faces").is_dir():
        data = [str(shared_data_dir() / "faces")]
    try:
        from maskwatch.config import DataSource

        cfg = load_config(
            config,
            data=[DataSource.parse(item) for item in data] if data else None,
            arch=arch,
            out=str(out) if out else None,
            weights=weights,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            image_size=image_size,
            finetune=finetune,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            patience=patience,
            class_weights=class_weights,
            seed=seed,
            augment=augment,
            views=views,
            fast_path=fast_path,
            crops=crops,
            min_face=min_face,
            splits=str(splits) if splits else None,
            classes=classes,
            evaluate_test=test,
            calibrate=calibrate,
            half=half,
            device=device,
        )
    except ConfigError as exc:
        fail(str(exc))
    if cfg.out is not None and out is None:
        check_output_path(cfg.out, "dir", option="out (config)")
    if cfg.weights == "none" and cfg.finetune == 0:
        log.warning(
            "--weights none with a frozen backbone trains only the head, on features of a randomly "
            "initialised backbone: expect a weak model. Use ImageNet weights, or unfreeze the backbone "
            "with --finetune K (K blocks; a large K trains it all)."
        )
    try:
        result = fit(cfg, resume=resume)
    except RunFinishedError as exc:
        typer.echo(str(exc), err=True)  # one plain line: nothing failed, there is just nothing to do
        raise typer.Exit(EXIT_OK) from None
    except TrainingInterrupted as exc:
        typer.echo(
            f"{exc}; what was done is saved in {exc.run_dir} (train.log, history.csv). "
            f"Resume with: {exc.resume_command}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (ConfigError, DatasetError, WeightsNotFoundError, FileExistsError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    console.print(f"[green]best model:[/] {result.model_path}  (run folder {result.run_dir})")
    for name, metrics in result.test_by_dataset.items():
        metrics.setdefault("data", name)
        metrics.setdefault("split", "test")
        _print_metrics(metrics)


@app.command()
def evaluate(
    model: Optional[Path] = typer.Option(
        None, help="Model file: .pt checkpoint or exported .onnx.", show_default="the bundled model ($MASKWATCH_MODEL)"
    ),
    data: Path = typer.Option(..., help="Dataset root (class folders, Roboflow CSV, or VOC with --crops)."),
    split: Optional[str] = typer.Option(
        None, help="train | valid | test | all.", show_default="test, or all for a dataset without split folders"
    ),
    crops: bool = typer.Option(False, "--crops", help="Classify face crops cut from VOC scene annotations."),
    min_face: int = typer.Option(32, min=1, help="With --crops: keep faces whose longest box side is >= N px."),
    splits: Optional[Path] = typer.Option(
        None,
        help="Split-list folder (train.txt, valid.txt, test.txt of image stems, e.g. data/splits/scenes): "
        "--split then picks the listed images of a dataset without split folders.",
        show_default="none",
    ),
    crop_margin: Optional[float] = typer.Option(
        None,
        min=0.0,
        help="With --crops: margin around each box, fraction of its size.",
        show_default="the model's",
    ),
    json_out: Optional[Path] = typer.Option(
        None,
        "--json",
        help="Write metrics JSON here (plus .confusion.png and .predictions.csv beside it); '-': JSON on stdout only.",
        show_default="none",
    ),
    backend: str = typer.Option(
        "auto", help="Inference backend: auto (ONNX Runtime when installed) | torch | onnx | onnx-int8."
    ),
    report_out: Optional[Path] = typer.Option(
        None,
        "--report",
        help="Also write the self-contained HTML insight report here (metrics, curves, Grad-CAM galleries, ...).",
        show_default="none",
    ),
    low_confidence: float = typer.Option(
        0.6, help="With --report: top-class probability below which an image is 'low confidence'."
    ),
    model_card: Optional[Path] = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="With --report: model card (Markdown) to include.",
        show_default="MODEL_CARD.md beside the model",
    ),
    include_training_data: bool = typer.Option(
        False,
        "--include-training-data",
        help="Also score images the model was trained or validated on (a model that records its training "
        "data leaves them out by default, and refuses when nothing else is left).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Measure a model on a dataset: accuracy, per-class scores, confusion matrix, ROC AUC, calibration."""
    from maskwatch.bundled import default_model_path
    from maskwatch.data.datasets import DatasetError
    from maskwatch.evaluate import evaluate_dataset, write_outputs

    setup_logging(verbose)
    check_output_path(json_out, "file", option="--json", stdout_ok=True)
    check_output_path(report_out, "file", option="--report")
    if report_out is not None:
        require_extra(["torch", "matplotlib", "jinja2"], "--report")
        if not 0.0 < low_confidence <= 1.0:
            fail(f"--low-confidence must be in (0, 1], got {low_confidence}")
    try:
        model_path = model or default_model_path()
        evaluation = evaluate_dataset(
            model_path,
            data,
            split=split,
            crops=crops,
            min_face=min_face,
            crop_margin=crop_margin,
            backend=backend,
            split_lists=splits,
            include_training_data=include_training_data,
        )
    except ImportError as exc:
        fail(f"{exc}; the torch backend and .pt models need: pip install 'maskwatch[train]'")
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    report = write_outputs(evaluation, json_out) if json_out else evaluation.report
    for item in evaluation.skipped:
        log.warning("skipped %s: %s", item.path, item.reason)
    _print_metrics(report, to_stderr=is_stdout(json_out))
    if json_out and not is_stdout(json_out):
        console.print(f"[green]wrote[/] {json_out}")
    if report_out:
        _insight.write_report(
            evaluation, report_out, model_path=Path(model_path), model_card=model_card, low_confidence=low_confidence
        )


# Commands that live in their own modules (one per concern), registered here so `maskwatch --help` lists
# them all. Each module imports its heavy dependencies inside the command function.
app.command("calibrate")(_calibrate.calibrate)
app.command("average")(_average.average)
app.command("export")(_runtime.export)
app.command("bench")(_runtime.bench)
app.command("explain")(_insight.explain)
app.command("report")(_insight.report)
app.command("detect")(_detect.detect)
app.command("evaluate-detection")(_scenes.evaluate_detection)
app.command("serve")(_serve.serve)
app.command("agent")(_agent.agent)
app.command("mine")(_mine.mine)
app.command("doctor")(_doctor.doctor)


def main() -> None:
    exit_process(run_app(app))


if __name__ == "__main__":
    main()
