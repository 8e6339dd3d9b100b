"""The ``maskwatch`` command: a thin shell that parses options and calls the library.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input (unknown option, unusable dataset,
unreadable model), so scripts can tell "you asked wrongly" from "it broke".
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from maskwatch.paths import shared_data_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Train, evaluate, explain and deploy a face-mask classifier.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)



def _setup_logging(verbose: bool = False) -> None:
    logger = logging.getLogger("maskwatch")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=console, show_path=False, show_time=False))
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)  # unwrapped, so scripts and logs can grep it
    raise typer.Exit(code)


def _print_metrics(report: dict) -> None:
    table = Table(title=f"{report.get('data', '')} [{report.get('split', '')}] — {report['n_images']} images")
    for column in ("class", "precision", "recall", "f1", "support"):
        table.add_column(column, justify="right" if column != "class" else "left")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    Console().print(table)
    extra = f"  roc_auc {report['roc_auc']:.4f}" if report.get("roc_auc") is not None else ""
    Console().print(f"accuracy {report['accuracy']:.4f}  macro_f1 {report['macro_f1']:.4f}  "
                    f"ece {report['ece']:.4f}{extra}  skipped {len(report['skipped'])}")


@app.command()
def train(
    data: Optional[Path] = typer.Option(None, help="Dataset root: class folders, Roboflow CSV splits, or VOC "
                                        "scenes with --crops. Default: ../shared/data/faces when it exists."),
    arch: Optional[str] = typer.Option(None, help="Backbone: mobilenet_v2 (default) or resnet18."),
    config: Optional[Path] = typer.Option(None, help="YAML file with any training settings (see docs/config.md)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<arch>-<time>)."),
    weights: Optional[str] = typer.Option(None, help="imagenet | none | PATH to an ImageNet state dict."),
    epochs: Optional[int] = typer.Option(None, help="Epochs of the frozen-backbone stage."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default 32)."),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate of the head stage (default 1e-3)."),
    image_size: Optional[int] = typer.Option(None, help="Input side in pixels (default 224)."),
    finetune: Optional[int] = typer.Option(None, help="Unfreeze the last K backbone blocks for a second stage."),
    finetune_epochs: Optional[int] = typer.Option(None, help="Epochs of the fine-tuning stage."),
    finetune_lr: Optional[float] = typer.Option(None, help="Learning rate of the fine-tuning stage (default 1e-4)."),
    patience: Optional[int] = typer.Option(None, help="Early stopping: epochs without validation-loss gain."),
    class_weights: Optional[str] = typer.Option(None, help="none | balanced (for imbalanced data)."),
    seed: Optional[int] = typer.Option(None, help="Random seed (splits, augmentation, init)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Training augmentation."),
    views: Optional[int] = typer.Option(None, help="Augmented views per training image in the feature cache."),
    fast_path: Optional[bool] = typer.Option(None, "--fast-path/--no-fast-path",
                                             help="Cache frozen-backbone features (default) or run the "
                                                  "backbone every epoch, notebook-style."),
    crops: Optional[bool] = typer.Option(None, "--crops/--no-crops", help="Train on face crops of VOC scenes."),
    min_face: Optional[int] = typer.Option(None, help="With --crops: smallest longest box side (px)."),
    half: Optional[bool] = typer.Option(None, "--half/--no-half", help="Store the model's weights as fp16."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train a mask classifier by transfer learning; evaluates on the test split when there is one."""
    from maskwatch.config import ConfigError, load_config
    from maskwatch.data.datasets import DatasetError
    from maskwatch.models import WeightsNotFoundError
    from maskwatch.training import fit

    _setup_logging(verbose)
    if resume and out is not None and config is None and (out / "config.yaml").is_file():
        config = out / "config.yaml"
    if data is None and config is None and (shared_data_dir() / "faces").is_dir():
        data = shared_data_dir() / "faces"
    try:
        cfg = load_config(
            config, data=str(data) if data else None, arch=arch, out=str(out) if out else None, weights=weights,
            epochs=epochs, batch_size=batch_size, lr=lr, image_size=image_size, finetune=finetune,
            finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, patience=patience,
            class_weights=class_weights, seed=seed, augment=augment, views=views, fast_path=fast_path,
            crops=crops, min_face=min_face, half=half, device=device,
        )
        result = fit(cfg, resume=resume)
    except (ConfigError, DatasetError, WeightsNotFoundError, FileExistsError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    console.print(f"[green]best model:[/] {result.model_path}  (run folder {result.run_dir})")
    if result.test_metrics:
        result.test_metrics.setdefault("data", str(cfg.data))
        result.test_metrics.setdefault("split", "test")
        _print_metrics(result.test_metrics)


@app.command()
def evaluate(
    model: Optional[Path] = typer.Option(None, help="Model file (default: the bundled model)."),
    data: Path = typer.Option(..., help="Dataset root (class folders, Roboflow CSV, or VOC with --crops)."),
    split: Optional[str] = typer.Option(None, help="train | valid | test | all. Default: test, or all for a "
                                        "dataset without split folders."),
    crops: bool = typer.Option(False, "--crops", help="Classify face crops cut from VOC scene annotations."),
    min_face: int = typer.Option(32, help="With --crops: keep faces whose longest box side is >= N px."),
    crop_margin: float = typer.Option(0.15, help="With --crops: margin around each box, fraction of its size."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write metrics JSON here (plus .confusion.png "
                                            "and .predictions.csv beside it)."),
    backend: str = typer.Option("auto", help="Inference backend: auto (ONNX Runtime when installed) | torch | "
                                "onnx | onnx-int8."),
    report_out: Optional[Path] = typer.Option(None, "--report", help="Also write the self-contained HTML insight "
                                              "report here (metrics, curves, Grad-CAM galleries, ...)."),
    low_confidence: float = typer.Option(0.6, help="With --report: top-class probability below which an image "
                                         "is 'low confidence'."),
    model_card: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                              help="With --report: model card (Markdown) to include; "
                                              "default MODEL_CARD.md beside the model."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Measure a model on a dataset: accuracy, per-class scores, confusion matrix, ROC AUC, calibration."""
    from maskwatch.bundled import default_model_path
    from maskwatch.data.datasets import DatasetError
    from maskwatch.evaluate import evaluate_dataset, write_outputs

    _setup_logging(verbose)
    try:
        model_path = model or default_model_path()
        evaluation = evaluate_dataset(model_path, data, split=split, crops=crops, min_face=min_face,
                                      crop_margin=crop_margin, backend=backend)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    report = write_outputs(evaluation, json_out) if json_out else evaluation.report
    for item in evaluation.skipped:
        logging.getLogger("maskwatch").warning("skipped %s: %s", item.path, item.reason)
    _print_metrics(report)
    if json_out:
        console.print(f"[green]wrote[/] {json_out}")
    if report_out:
        _insight.write_report(evaluation, report_out, model_path=Path(model_path), model_card=model_card,
                              low_confidence=low_confidence)


# Commands that live in their own modules (one per concern), registered here so `maskwatch --help` lists
# them all. Each module imports its heavy dependencies inside the command function.
# --- registered commands (keep one line per command) ---
from maskwatch.commands import runtime as _runtime  # noqa: E402
app.command("export")(_runtime.export)
app.command("bench")(_runtime.bench)
from maskwatch.commands import insight as _insight  # noqa: E402
app.command("explain")(_insight.explain)
app.command("report")(_insight.report)
from maskwatch.commands import scenes as _scenes  # noqa: E402
app.command("detect")(_scenes.detect)
app.command("evaluate-detection")(_scenes.evaluate_detection)
# --- end of registered commands ---


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
