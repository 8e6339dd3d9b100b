"""``maskwatch calibrate``: fit a model's temperature on validation data and write the calibrated model.

Registered in :mod:`maskwatch.cli`; the work is :func:`maskwatch.calibration.calibrate_checkpoint`.
Exit codes (:mod:`maskwatch.commands.common`): 0 written; 1 the data could not pin a temperature down
(nothing written, the message says why) or no image could be read; 2 usage or input error, before any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from maskwatch.commands.common import (
    EXIT_FAILED,
    check_output_path,
    console,
    fail,
    is_stdout,
    log,
    require_extra,
    setup_logging,
    write_json,
)

CALIBRATED_SUFFIX = "-calibrated"


def default_output(model: Path) -> Path:
    """``runs/a/model.pt`` -> ``runs/a/model-calibrated.pt``: beside the model, never over it."""
    return model.with_name(f"{model.stem}{CALIBRATED_SUFFIX}{model.suffix}")


def calibrate(
    model: Optional[Path] = typer.Option(
        None, help="Checkpoint (.pt) to calibrate.", show_default="the bundled model ($MASKWATCH_MODEL)"
    ),
    data: Path = typer.Option(..., help="Dataset root (class folders, Roboflow CSV, or VOC with --crops)."),
    split: str = typer.Option(
        "valid", help="Split to fit on: valid (recommended) | train | test | all. Never fit on data you report on."
    ),
    crops: bool = typer.Option(False, "--crops", help="Fit on face crops cut from VOC scene annotations."),
    min_face: int = typer.Option(32, min=1, help="With --crops: keep faces whose longest box side is >= N px."),
    crop_margin: Optional[float] = typer.Option(
        None, min=0.0, help="With --crops: margin around each box, fraction of its size.", show_default="the model's"
    ),
    splits: Optional[Path] = typer.Option(
        None,
        "--splits",
        file_okay=False,
        help="Folder of split lists (train.txt, valid.txt, test.txt: image stems) for a dataset without split "
        "folders, such as data/splits/scenes for the shared scenes.",
        show_default="none",
    ),
    out: Optional[Path] = typer.Option(
        None,
        help="Calibrated checkpoint to write; pass the model's own path to calibrate it in place.",
        show_default="beside the model: NAME-calibrated.pt",
    ),
    json_out: Optional[Path] = typer.Option(
        None,
        "--json",
        help="Also write the result (T, ECE and NLL before/after) as JSON ('-': stdout).",
        show_default="none",
    ),
    backend: str = typer.Option("auto", help="Backend that computes the logits: auto | torch | onnx."),
    seed: int = typer.Option(0, help="Seed of the random split, for a dataset without split folders or lists."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Fit the model's temperature (temperature scaling, minimum NLL) so its probabilities mean what they say.

    Prints T and the ECE and NLL before -> after. The predicted class of every image stays the same; only
    how sure the model says it is changes. The temperature travels with the checkpoint into its ONNX and
    TorchScript exports, and every backend applies it.
    """
    from maskwatch.bundled import default_model_path

    setup_logging(verbose)
    if backend not in ("auto", "torch", "onnx"):
        fail(f"--backend must be auto, torch or onnx (logits of the fp32 network), got {backend!r}")
    try:
        model_path = model if model is not None else default_model_path()
    except FileNotFoundError as exc:
        fail(str(exc))
    if model_path.suffix.lower() != ".pt":
        fail(f"{model_path}: calibrate a .pt checkpoint (then export it); the temperature is stored in the checkpoint")
    if not model_path.is_file():
        fail(f"model file {model_path} does not exist")
    if splits is not None and not splits.is_dir():
        fail(f"--splits {splits}: no such folder")
    target = out if out is not None else default_output(model_path)
    check_output_path(target, "file", option="--out")
    check_output_path(json_out, "file", option="--json", stdout_ok=True)
    require_extra(["torch", "scipy"], "calibrate")
    from maskwatch.calibration import calibrate_checkpoint
    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.data.datasets import DatasetError, open_dataset

    try:
        checkpoint = load_checkpoint(model_path)
        margin = checkpoint["crop_margin"] if crop_margin is None else crop_margin
        dataset = open_dataset(
            data,
            classes=checkpoint["classes"],
            crops=crops,
            min_face=min_face,
            crop_margin=margin,
            seed=seed,
            split_lists=splits,
        )
        samples = dataset.split(split)
    except (DatasetError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if not samples:
        fail(f"{data} [{split}] holds no images of the model's classes ({', '.join(checkpoint['classes'])})")
    if split in ("test", "all"):
        log.warning("fitting on the %s split: figures measured on it afterwards will look better than they are", split)
    source = f"{data} [{split}]" + (f", face crops >= {min_face} px" if crops else "")
    if splits is not None:
        source += f", split lists {splits}"
    try:
        with console.status(f"calibrating {model_path.name} on {len(samples)} images of {source}"):
            result = calibrate_checkpoint(
                model_path,
                samples,
                checkpoint["classes"],
                out=target,
                backend=backend,
                source=source,
                write_unfitted=False,
            )
    except ImportError as exc:
        fail(f"{exc}; calibration needs: pip install 'maskwatch[train]'")
    except ValueError as exc:
        fail(str(exc), code=EXIT_FAILED)
    if json_out is not None:
        write_json(json_out, {**result.to_dict(), "data": source})
    # one plain line (no wrapping, scripts can grep it) on stdout, unless the JSON goes there
    typer.echo(result.summary(), err=is_stdout(json_out))
    if not result.fitted:
        fail(f"temperature not fitted, nothing written: {result.note}", code=EXIT_FAILED)
    console.print(f"[green]wrote[/] {result.model}", soft_wrap=True)
