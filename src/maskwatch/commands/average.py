"""``maskwatch average``: a model soup, the weighted average of the weights of models of one network.

Registered in :mod:`maskwatch.cli`; the work is :func:`maskwatch.checkpoint.average_checkpoints`.
Exit codes (:mod:`maskwatch.commands.common`): 0 written; 2 usage or input error (a missing or unreadable
model, models that do not share their network or classes, bad weights), nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from maskwatch.commands.common import check_output_path, console, fail, log, require_extra, setup_logging


def average(
    models: list[Path] = typer.Argument(..., help="Two checkpoints (.pt) or more, of one architecture and classes."),
    weight: Optional[list[float]] = typer.Option(
        None,
        "--weight",
        help="Weight of each model, in the order given (normalised to sum to 1).",
        show_default="equal weights",
    ),
    out: Path = typer.Option(..., help="Checkpoint to write (atomically; never one of the models)."),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Fit the soup's temperature on the valid splits of its training data, kept only where it helps on "
        "held-out halves (as train does); without that data here, T stays 1 with a warning.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Average the weights of models fine-tuned from the same pretrained network (a "model soup").

    Models trained by different recipes from one ImageNet start (same architecture, same frozen blocks) stay
    in one basin: their weighted average is one model that often keeps what each recipe is good at, at the
    cost of one. The soup records its ingredients (file, sha256, weight, recipe) and the union of their
    training data; its temperature is fitted as train fits one (--no-calibrate: T = 1). Measure it before
    you trust it (benchmarks/robustness.py): a soup of models from different starts is noise.
    """
    setup_logging(verbose)
    if len(models) < 2:
        fail("give two models or more to average")
    weights = list(weight) if weight else [1.0] * len(models)
    if len(weights) != len(models):
        fail(f"{len(weights)} --weight value(s) for {len(models)} models: give one per model, or none")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        fail(f"--weight values must be >= 0 and not all 0, got {weights}")
    for path in models:
        if not path.is_file():
            fail(f"model file {path} does not exist")
        if path.resolve() == out.resolve():
            fail(f"--out {out} is one of the models: write the soup to a new file")
    check_output_path(out, "file", option="--out")
    require_extra(["torch"], "average")
    from maskwatch.checkpoint import atomic_torch_save, average_checkpoints, load_checkpoint
    from maskwatch.core.digests import file_sha256

    try:
        checkpoints = [load_checkpoint(path) for path in models]
        names = [f"{path} (sha256 {file_sha256(path)})" for path in models]
        soup = average_checkpoints(checkpoints, weights, names=names)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    atomic_torch_save(soup, out)
    shares = ", ".join(f"{i['weight']:.3g} x {path}" for i, path in zip(soup["averaging"]["ingredients"], models))
    temperature = _calibrate(out, soup) if calibrate else "temperature 1 (--no-calibrate)"
    console.print(f"[green]wrote[/] {out}: {shares}; {temperature}", soft_wrap=True)


def _calibrate(path: Path, soup: dict) -> str:
    """Fit the soup's temperature on the valid splits of its training data (what ``train`` does at the end of a
    run); a one-line account of what happened."""
    from maskwatch.calibration import calibrate_checkpoint
    from maskwatch.provenance import training_samples

    try:
        samples = [s for group in training_samples(soup, "valid").values() for s in group]
    except ValueError as exc:
        log.warning("soup not calibrated (temperature 1): its training data is not here (%s)", exc)
        return "temperature 1 (training data not here)"
    if not samples:
        return "temperature 1 (no valid split in its training data)"
    with console.status(f"calibrating on {len(samples)} valid images of its training data"):
        result = calibrate_checkpoint(path, samples, soup["classes"], source="valid splits of the soup's training data")
    return f"calibration: {result.summary()}"
