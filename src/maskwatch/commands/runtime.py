"""``maskwatch export`` and ``maskwatch bench``: deployment formats and speed measurements.

Registered in :mod:`maskwatch.cli`. Heavy imports (torch, onnx, onnxruntime) happen inside the commands.
Exit codes follow the CLI's convention: 0 success, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from maskwatch.commands.common import check_output_path, console, fail, is_stdout, require_extra, write_json
from maskwatch.paths import shared_data_dir

FORMATS = {"onnx": ".onnx", "onnx-int8": "-int8.onnx", "torchscript": ".ts"}


def _model_or_bundled(model: Optional[Path]) -> Path:
    from maskwatch.bundled import default_model_path

    try:
        return model if model is not None else default_model_path()
    except FileNotFoundError as exc:
        fail(str(exc))


def _shared(*parts: str) -> Optional[Path]:
    """A folder of the development data (``../shared/data`` or ``$MASKWATCH_SHARED_DATA``) when it exists:
    the CLI's default inputs for measurements; the library takes its inputs explicitly."""
    folder = shared_data_dir().joinpath(*parts)
    return folder if folder.is_dir() else None


def export(
    model: Optional[Path] = typer.Option(None, help="Checkpoint (.pt) to export.", show_default="the bundled model"),
    format: str = typer.Option(
        "onnx", "--format", "-f", help="onnx (fp32) | onnx-int8 (static INT8, needs calibration images) | torchscript."
    ),
    out: Optional[Path] = typer.Option(
        None, help="Output file.", show_default="beside the model: NAME.onnx, NAME-int8.onnx or NAME.ts"
    ),
    calibration: Optional[Path] = typer.Option(
        None,
        help="onnx-int8: folder of face images to calibrate on "
        "(class folders or a dataset root; its train/ split is used).",
        show_default="a stratified sample of the model's training data",
    ),
    calibration_size: int = typer.Option(200, min=1, help="onnx-int8: images sampled for calibration."),
    opset: int = typer.Option(17, min=7, help="ONNX opset."),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Compare the export with the checkpoint on a few images and print the largest probability difference.",
    ),
) -> None:
    """Export a model for deployment: ONNX (fp32 or INT8, runs with onnxruntime alone) or TorchScript.

    The ONNX file holds the class names and preprocessing in its metadata: the file alone runs anywhere.
    """
    if format not in FORMATS:
        fail(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    model_path = _model_or_bundled(model)
    if model_path.suffix.lower() == ".onnx":
        fail(f"{model_path} is already an ONNX file; export starts from a .pt checkpoint")
    require_extra(["torch", "onnx"], "export")
    if calibration is not None and not calibration.is_dir():
        fail(f"--calibration {calibration}: no such folder")
    target = out or model_path.with_name(model_path.stem + FORMATS[format])
    check_output_path(target, "file", option="--out")
    from maskwatch.runtime.export import export_onnx, export_torchscript

    try:
        with console.status(f"exporting {model_path} to {format}") as status:
            started = time.perf_counter()

            def on_step(message: str) -> None:  # a status line per step, and the spinner says which one
                console.print(f"[dim]{time.perf_counter() - started:5.1f}s[/] {message}", highlight=False)
                status.update(f"exporting {model_path.name} to {format}: {message}")

            if format == "torchscript":
                path = export_torchscript(model_path, target)
            else:
                path = export_onnx(
                    model_path,
                    target,
                    int8=format == "onnx-int8",
                    calibration=calibration,
                    calibration_size=calibration_size,
                    opset=opset,
                    on_step=on_step,
                )
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    size_mb = path.stat().st_size / 1e6
    console.print(f"[green]wrote[/] {path} ({size_mb:.1f} MB)")
    if check:
        _check_export(model_path, path, calibration or _shared("faces", "test"))


def _check_export(checkpoint: Path, exported: Path, faces: Optional[Path]) -> None:
    """Largest probability difference and agreement between the checkpoint and its export, on face images
    of ``faces`` (random images without it)."""
    import numpy as np

    from maskwatch.bench import face_images
    from maskwatch.runtime.base import load_classifier

    images, source = face_images(32, folder=faces)
    reference = load_classifier(checkpoint, backend="torch").predict_proba(images)
    candidate = load_classifier(exported).predict_proba(images)
    diff = float(np.abs(reference - candidate).max())
    agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    console.print(f"check on {source}: max |Δp| {diff:.2e}, same top class {agree:.1%}")


def bench(
    model: Optional[Path] = typer.Option(
        None, help="Checkpoint (.pt) or exported .onnx.", show_default="the bundled model"
    ),
    backend: str = typer.Option(
        "torch,onnx,onnx-int8", "--backend", "-b", help="Comma-separated backends to compare: torch, onnx, onnx-int8."
    ),
    size: Optional[int] = typer.Option(
        None,
        min=32,
        help="Classifier input side in px (224 or 128). Another size than the model's is for speed only.",
        show_default="the model's own",
    ),
    batch: int = typer.Option(32, min=1, help="Batch size of the throughput measurement."),
    rounds: int = typer.Option(7, min=1, help="Interleaved measurement rounds (all backends in each round)."),
    threads: Optional[int] = typer.Option(None, min=1, help="Threads per backend.", show_default="physical cores"),
    faces: Optional[Path] = typer.Option(
        None,
        "--faces",
        file_okay=False,
        help="Folder of face images for the classifier timings (searched recursively).",
        show_default="../shared/data/faces/test when it exists, else random images",
    ),
    scene_dir: Optional[Path] = typer.Option(
        None,
        "--scene-dir",
        file_okay=False,
        help="Folder of scene *.jpg images for the detector and pipeline timings.",
        show_default="../shared/data/scenes/images when it exists",
    ),
    scenes: int = typer.Option(40, min=0, help="Scene images for the detector and pipeline timings (0: skip)."),
    preset: str = typer.Option(
        "fast", help="Detector views of the pipeline timing: fast | balanced | accurate (as `detect --preset`)."
    ),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Write the full result as JSON ('-': stdout).", show_default="none"
    ),
) -> None:
    """Measure classifier throughput and latency per backend side by side, the face detector, the pipeline and memory.

    All backends are measured in one process, interleaved round by round, so the ratios hold even on a busy machine.
    """
    from maskwatch.bench import CLASSIFIER_BACKENDS, format_table, run_bench

    backends = [b.strip() for b in backend.split(",") if b.strip()]
    unknown = [b for b in backends if b not in CLASSIFIER_BACKENDS]
    if not backends or unknown:
        fail(f"unknown backend(s) {unknown}; choose from {', '.join(CLASSIFIER_BACKENDS)}")
    if preset not in ("fast", "balanced", "accurate"):
        fail(f"unknown --preset {preset!r}; choose fast, balanced or accurate")
    check_output_path(json_out, "file", option="--json", stdout_ok=True)
    for folder, option in ((faces, "--faces"), (scene_dir, "--scene-dir")):
        if folder is not None and not folder.is_dir():
            fail(f"{option} {folder}: no such folder")
    model_path = _model_or_bundled(model)
    try:
        with console.status("benchmarking") as status:
            result = run_bench(
                model_path,
                progress=lambda m: status.update(f"benchmarking: {m}"),
                backends=backends,
                size=size,
                batch=batch,
                rounds=rounds,
                threads=threads,
                faces_dir=faces or _shared("faces", "test"),
                scenes_dir=scene_dir or _shared("scenes", "images"),
                scenes=scenes,
                pipeline_preset=preset,
            )
    except ImportError as exc:
        fail(f"{exc}; the torch backend and exports need: pip install 'maskwatch[train]'")
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    (console if is_stdout(json_out) else Console()).print(format_table(result))
    if json_out is not None:
        write_json(json_out, result)
        if not is_stdout(json_out):
            console.print(f"[green]wrote[/] {json_out}")
