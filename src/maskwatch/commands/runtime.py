"""``maskwatch export`` and ``maskwatch bench``: deployment formats and speed measurements.

Registered in :mod:`maskwatch.cli`. Heavy imports (torch, onnx, onnxruntime) happen inside the commands.
Exit codes follow the CLI's convention: 0 success, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True)

FORMATS = {"onnx": ".onnx", "onnx-int8": "-int8.onnx", "torchscript": ".ts"}


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _model_or_bundled(model: Optional[Path]) -> Path:
    from maskwatch.bundled import default_model_path

    return model if model is not None else default_model_path()


def export(
    model: Optional[Path] = typer.Option(None, help="Checkpoint (.pt) to export (default: the bundled model)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx (fp32) | onnx-int8 (static INT8, needs "
                               "calibration images) | torchscript."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: beside the model: NAME.onnx, "
                                       "NAME-int8.onnx or NAME.ts)."),
    calibration: Optional[Path] = typer.Option(None, help="onnx-int8: folder of face images to calibrate on "
                                               "(class folders or a dataset root; its train/ split is used). "
                                               "Default: a stratified sample of the model's training data."),
    calibration_size: int = typer.Option(200, help="onnx-int8: images sampled for calibration."),
    opset: int = typer.Option(17, help="ONNX opset."),
    check: bool = typer.Option(True, "--check/--no-check", help="Compare the export with the checkpoint on a few "
                               "images and print the largest probability difference."),
) -> None:
    """Export a model for deployment: ONNX (fp32 or INT8, runs with onnxruntime alone) or TorchScript.

    The ONNX file holds the class names and preprocessing in its metadata: the file alone runs anywhere.
    """
    import importlib.util

    if format not in FORMATS:
        _fail(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    try:
        model_path = _model_or_bundled(model)
    except FileNotFoundError as exc:
        _fail(str(exc))
        return
    if model_path.suffix.lower() == ".onnx":
        _fail(f"{model_path} is already an ONNX file; export starts from a .pt checkpoint")
    missing = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"export needs {' and '.join(missing)}: pip install 'maskwatch[train]'")
    target = out or model_path.with_name(model_path.stem + FORMATS[format])
    from maskwatch.runtime.export import export_onnx, export_torchscript

    try:
        with console.status(f"exporting {model_path} to {format}"
                            + (" (calibrating: about a minute)" if format == "onnx-int8" else "")):
            if format == "torchscript":
                path = export_torchscript(model_path, target)
            else:
                path = export_onnx(model_path, target, int8=format == "onnx-int8", calibration=calibration,
                                   calibration_size=calibration_size, opset=opset)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    size_mb = path.stat().st_size / 1e6
    console.print(f"[green]wrote[/] {path} ({size_mb:.1f} MB)")
    if check:
        _check_export(model_path, path)


def _check_export(checkpoint: Path, exported: Path) -> None:
    """Largest probability difference and agreement between the checkpoint and its export."""
    import numpy as np

    from maskwatch.bench import face_images
    from maskwatch.runtime.base import load_classifier

    images, source = face_images(32)
    reference = load_classifier(checkpoint, backend="torch").predict_proba(images)
    candidate = load_classifier(exported).predict_proba(images)
    diff = float(np.abs(reference - candidate).max())
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    console.print(f"check on {source}: max |Δp| {diff:.2e}, same top class {agree:.1%}")


def bench(
    model: Optional[Path] = typer.Option(None, help="Checkpoint (.pt) or exported .onnx (default: bundled)."),
    backend: str = typer.Option("torch,onnx,onnx-int8", "--backend", "-b",
                                help="Comma-separated backends to compare: torch, onnx, onnx-int8."),
    size: Optional[int] = typer.Option(None, help="Classifier input side in px (224 or 128; default: the "
                                       "model's own). Another size than the model's is for speed only."),
    batch: int = typer.Option(32, help="Batch size of the throughput measurement."),
    rounds: int = typer.Option(7, help="Interleaved measurement rounds (all backends in each round)."),
    threads: Optional[int] = typer.Option(None, help="Threads per backend (default: physical cores)."),
    scenes: int = typer.Option(40, help="Shared scene images for the detector and pipeline timings (0: skip)."),
    preset: str = typer.Option("fast", help="Detector views of the pipeline timing: fast | balanced | accurate "
                               "(as `detect --preset`)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full result as JSON ('-': stdout)."),
) -> None:
    """Measure classifier throughput and latency per backend side by side, the face detector, the pipeline and memory.

    All backends are measured in one process, interleaved round by round, so the ratios hold even on a busy machine.
    """
    from maskwatch.bench import CLASSIFIER_BACKENDS, format_table, run_bench

    backends = [b.strip() for b in backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in CLASSIFIER_BACKENDS]
    if not backends or unknown:
        _fail(f"unknown backend(s) {unknown}; choose from {', '.join(CLASSIFIER_BACKENDS)}")
    if size is not None and size < 32:
        _fail("--size must be at least 32")
    try:
        model_path = _model_or_bundled(model)
        with console.status("benchmarking") as status:
            result = run_bench(model_path, progress=lambda m: status.update(f"benchmarking: {m}"), backends=backends,
                               size=size, batch=batch, rounds=rounds, threads=threads, scenes=scenes,
                               detector=scenes > 0, pipeline_preset=preset)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
        return
    except ImportError as exc:
        _fail(f"{exc}; the torch backend and exports need `pip install maskwatch[train]`")
        return
    if json_out is None or str(json_out) != "-":
        Console().print(format_table(result))
    if json_out is not None:
        text = json.dumps(result, indent=2)
        if str(json_out) == "-":
            sys.stdout.write(text + "\n")
        else:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(text + "\n")
            console.print(f"[green]wrote[/] {json_out}")
