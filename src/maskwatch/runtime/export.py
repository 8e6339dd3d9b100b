"""Export a maskwatch checkpoint to ONNX (fp32 or INT8) or TorchScript, and the on-the-fly export cache.

    >>> export_onnx("runs/a/model.pt", "model.onnx")                                  # doctest: +SKIP
    >>> export_onnx("runs/a/model.pt", "model-int8.onnx", int8=True)                  # doctest: +SKIP
    >>> export_onnx("runs/a/model.pt", "model-int8.onnx", int8=True, calibration="faces/train")  # doctest: +SKIP
    >>> export_torchscript("runs/a/model.pt", "model.ts")                             # doctest: +SKIP

ONNX: the legacy TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``: under a second for
MobileNetV2, numerically equal to torch within 1e-5), opset 17, one input ``input`` (N x 3 x S x S float32,
normalised as the file's preprocessing says) with a dynamic batch axis, one output ``logits``. The file's
``metadata_props`` hold ``classes`` and ``preprocessing`` (JSON), ``crop_margin``, ``compliant_classes`` and
``temperature`` (JSON; see :mod:`maskwatch.runtime.types`), ``arch``, ``precision`` (fp32|int8),
``maskwatch_version``, ``source_sha256`` (of the checkpoint file), ``training_data`` (JSON: the datasets and
image digests it was trained on, :mod:`maskwatch.provenance`) and, for INT8, how it was calibrated, so
the file alone is enough to run it (:class:`maskwatch.runtime.onnx_backend.OnnxClassifier`).

INT8: static quantization with ONNX Runtime's quantizer: QDQ format, per-channel symmetric int8 weights,
uint8 activations (the u8s8 kernels of x86 CPUs), MinMax ranges calibrated on real face images; by default
a stratified sample of 200 images of the checkpoint's own training split (``config["data"]``), else the
images under ``calibration``. ``quant_pre_process`` (shape inference + basic graph optimisation) runs first;
the network's stem stays fp32 (see ``FP32_STEM``).

Export cache (:func:`cached_export`): ``load_classifier("model.pt", backend="onnx"|"onnx-int8")`` exports
once into ``$MASKWATCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/maskwatch/exports``, else
``~/.cache/maskwatch/exports`` (a temp folder when none of those is writable), under a name keyed by the
checkpoint's sha256, the precision, the opset, the maskwatch version and the export recipe's revision.
A user cache rather than a file beside the checkpoint: the bundled model may sit in a read-only
site-packages, run folders stay clean, and copies of one checkpoint share one export; a changed checkpoint
gets a new key, so a stale export is never used. Writes are atomic, so concurrent processes are safe; the
16 most recently used exports are kept.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import maskwatch
from maskwatch.checkpoint import atomic_write
from maskwatch.core.contract import (
    COMPLIANT_CLASSES,
    CROP_MARGIN,
    META_ARCH,
    META_CLASSES,
    META_COMPLIANT_CLASSES,
    META_CROP_MARGIN,
    META_PRECISION,
    META_PREPROCESSING,
    META_SOURCE_SHA256,
    META_TEMPERATURE,
    META_VERSION,
    TEMPERATURE,
    TRAINING_DATA,
    model_fields,
)
from maskwatch.core.digests import file_sha256
from maskwatch.data.sampling import sample_stratified
from maskwatch.preprocess import Preprocessing, to_batch

log = logging.getLogger("maskwatch")

__all__ = [
    "DEFAULT_CALIBRATION_SIZE",
    "DEFAULT_OPSET",
    "cache_dir",
    "cached_export",
    "calibration_images",
    "export_onnx",
    "export_torchscript",
    "load_torchscript",
]

DEFAULT_OPSET = 17
# part of the cache key: bump when the export recipe changes (3: crop margin, compliant classes; 4: temperature;
# 5: training data)
EXPORT_REVISION = 5
CACHE_KEEP = 16  # exports kept in the cache (least recently used go first)
# INT8: the stem (first convolution and first inverted-residual block of MobileNetV2, the first convolution
# of ResNet18) stays fp32. Measured on the shared data: the stem works at 112 px with a few channels whose
# ranges differ widely, so one per-tensor activation scale loses most of the signal there (SQNR of the
# activations falls from 46 to 16 dB over features.0-1); keeping it fp32 halves the predictions that differ
# from fp32 on scene crops (24 -> 11 of 755) at no measurable speed cost.
FP32_STEM = {"mobilenet_v2": ("/features/features.0/", "/features/features.1/"), "resnet18": ("/conv1/",)}
DEFAULT_CALIBRATION_SIZE = 200
INPUT_NAME, OUTPUT_NAME = "input", "logits"
TORCHSCRIPT_META = "maskwatch.json"

CalibrationSource = str | os.PathLike[str] | Sequence[Any] | None


# --------------------------------------------------------------------------------------------------------
# calibration images


def _images_under(folder: Path) -> tuple[Path, dict[str, list[str]]]:
    """Image files under ``folder`` grouped by parent folder (= class for class-folder datasets); when the
    folder holds a ``train`` split only that split is used (never calibrate on test images)."""
    from maskwatch.data.images import has_image_extension

    for name in ("train", "Train", "training"):
        if (folder / name).is_dir():
            folder = folder / name
            break
    groups: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and has_image_extension(path):
            groups.setdefault(path.parent.name, []).append(str(path))
    return folder, groups


def calibration_images(
    calibration: CalibrationSource = None,
    *,
    checkpoint: dict[str, Any] | None = None,
    size: int = DEFAULT_CALIBRATION_SIZE,
    seed: int = 0,
) -> tuple[list[np.ndarray], str]:
    """RGB uint8 images for INT8 calibration and a short description of where they came from.

    ``calibration``: None (a stratified sample of the checkpoint's training split), a folder (image files
    under it, stratified by parent folder; its ``train/`` split only, when it has one), or a sequence of
    image paths, PIL images or RGB arrays (used as given).
    """
    from maskwatch.data.images import BadImageError, load_rgb

    if calibration is not None and not isinstance(calibration, (str, os.PathLike)):
        items = list(calibration)
        images = [np.asarray(load_rgb(Path(x))) if isinstance(x, (str, os.PathLike)) else np.asarray(x) for x in items]
        return [im for im in images if im.ndim == 3 and im.shape[2] == 3], f"{len(items)} given images"
    if calibration is None:
        if checkpoint is None:
            raise ValueError("calibration images or a checkpoint (for its training data) are needed")
        from maskwatch.provenance import training_calibration_images  # the training side knows its images

        return training_calibration_images(checkpoint, size, seed)
    folder = Path(calibration)
    if not folder.is_dir():
        raise ValueError(f"calibration folder {folder} does not exist")
    folder, groups = _images_under(folder)
    paths = sample_stratified(groups, size, seed)
    if not paths:
        raise ValueError(f"no images found under calibration folder {folder}")
    images = []
    for path in paths:
        try:
            images.append(np.asarray(load_rgb(path)))
        except BadImageError as exc:
            log.warning("calibration: skipped %s (%s)", exc.path, exc.reason)
    return images, f"{len(images)} images sampled from {folder} (seed {seed})"


class _BatchReader:
    """onnxruntime CalibrationDataReader over preprocessed batches."""

    def __init__(self, images: Sequence[np.ndarray], prep: Preprocessing, batch: int = 16):
        self._batches = [to_batch(images[i : i + batch], prep) for i in range(0, len(images), batch)]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {INPUT_NAME: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


# --------------------------------------------------------------------------------------------------------
# ONNX


def _torch_to_onnx_bytes(model, size: int, opset: int) -> bytes:
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            buffer,  # type: ignore[arg-type]  # torch.onnx.export takes a binary file object too
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            do_constant_folding=True,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


def _set_metadata(model, metadata: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    for prop in keep:
        model.metadata_props.add(key=prop.key, value=prop.value)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)


def _stem_nodes(model_path: Path, arch: str) -> list[str]:
    """Names of the nodes of ``arch``'s stem (see FP32_STEM) in an exported graph."""
    import onnx

    prefixes = FP32_STEM.get(arch, ())
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if any(n.name.startswith(p) for p in prefixes)]


_CWD_LOCK = threading.Lock()  # the working directory is per process: one temporary chdir at a time


def _quantize(
    fp32_bytes: bytes,
    images: Sequence[np.ndarray],
    prep: Preprocessing,
    *,
    arch: str = "",
    per_channel: bool = True,
    reduce_range: bool = False,
    quant_format: str = "qdq",
    pre_process: bool = True,
    fp32_stem: bool = True,
) -> bytes:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="maskwatch-quant-") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_bytes)
        if pre_process:
            # Symbolic shape inference saves sym_shape_infer_temp.onnx and a <uuid>.data file in the current
            # working directory when it cannot infer every shape; run it in the temporary folder instead.
            with _CWD_LOCK, contextlib.chdir(tmp):
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        else:
            pre = src
        excluded = _stem_nodes(pre, arch) if fp32_stem else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(pre),
                str(dst),
                _BatchReader(images, prep),
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                extra_options={"CalibMaxIntermediateOutputs": 4},  # bounds calibration memory
            )
        return dst.read_bytes()


def export_onnx(
    checkpoint_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    int8: bool = False,
    calibration: CalibrationSource = None,
    calibration_size: int = DEFAULT_CALIBRATION_SIZE,
    opset: int = DEFAULT_OPSET,
    image_size: int | None = None,
    seed: int = 0,
    quantization: dict[str, Any] | None = None,
    on_step: Callable[[str], object] | None = None,
) -> Path:
    """Export a checkpoint to ONNX at ``out`` (written atomically); returns ``out``.

    Args:
        int8: statically quantize (QDQ, per-channel int8 weights, uint8 activations).
        calibration: INT8 calibration images: None (sample of the checkpoint's training split), a folder,
            or a sequence of paths / images. See :func:`calibration_images`.
        calibration_size: images to sample from a folder or the training split.
        opset: ONNX opset.
        image_size: run the network at this input size instead of the checkpoint's (benchmarks only: a
            model trained at 224 px is less accurate at other sizes); recorded in the preprocessing metadata.
        quantization: advanced quantizer settings (``per_channel``, ``reduce_range``, ``quant_format``
            qdq|qoperator, ``pre_process``, ``fp32_stem``), for experiments.
        on_step: called with a short description as each step starts (progress for the CLI).
    """
    import onnx

    step = on_step or (lambda _: None)

    from maskwatch.checkpoint import build_model, load_checkpoint

    checkpoint_path, out = Path(checkpoint_path), Path(out)
    checkpoint = load_checkpoint(checkpoint_path)
    prep = Preprocessing.from_dict(checkpoint["preprocessing"])
    if image_size is not None and image_size != prep.size:
        prep = Preprocessing(size=int(image_size), mean=prep.mean, std=prep.std, resize=prep.resize)
    step(f"converting the {checkpoint['arch']} network to ONNX (opset {opset})")
    data = _torch_to_onnx_bytes(build_model(checkpoint), prep.size, opset)
    fields = model_fields(checkpoint, checkpoint["classes"])
    metadata = {
        META_CLASSES: json.dumps(list(checkpoint["classes"])),
        META_PREPROCESSING: json.dumps(prep.to_dict()),
        META_CROP_MARGIN: json.dumps(fields[CROP_MARGIN]),
        META_COMPLIANT_CLASSES: json.dumps(fields[COMPLIANT_CLASSES]),
        META_TEMPERATURE: json.dumps(fields[TEMPERATURE]),
        META_ARCH: str(checkpoint["arch"]),
        META_PRECISION: "int8" if int8 else "fp32",
        META_VERSION: maskwatch.__version__,
        META_SOURCE_SHA256: file_sha256(checkpoint_path),
        "opset": str(opset),
    }
    if checkpoint.get(TRAINING_DATA):  # what it was trained on, so `evaluate` can leave those images out
        metadata[TRAINING_DATA] = json.dumps(checkpoint[TRAINING_DATA], separators=(",", ":"))
    if int8:
        step("loading calibration images")
        images, described = calibration_images(calibration, checkpoint=checkpoint, size=calibration_size, seed=seed)
        if not images:
            raise ValueError("INT8 calibration found no usable images")
        settings = {
            "per_channel": True,
            "reduce_range": False,
            "quant_format": "qdq",
            "pre_process": True,
            "fp32_stem": True,
            **(quantization or {}),
        }
        step(f"quantizing to INT8, calibrated on {len(images)} images (about a minute)")
        data = _quantize(data, images, prep, arch=str(checkpoint["arch"]), **settings)
        metadata["calibration"] = described
        metadata["quantization"] = json.dumps(
            {"method": "static MinMax", "activations": "uint8", "weights": "int8", **settings}
        )
    model = onnx.load_from_string(data)
    _set_metadata(model, metadata)
    model.doc_string = (
        f"maskwatch {checkpoint['arch']} face-mask classifier ({metadata[META_PRECISION]}); "
        f"classes {list(checkpoint['classes'])}"
    )
    step("checking and writing the ONNX file")
    onnx.checker.check_model(model)
    return atomic_write(out, lambda tmp: tmp.write_bytes(model.SerializeToString()))


# --------------------------------------------------------------------------------------------------------
# on-the-fly export cache


def cache_dir() -> Path:
    """Folder of cached exports (see the module doc); created on first use."""
    candidates = []
    if os.environ.get("MASKWATCH_CACHE_DIR"):
        candidates.append(Path(os.environ["MASKWATCH_CACHE_DIR"]) / "exports")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        candidates.append(Path(base) / "maskwatch" / "exports")
    candidates.append(
        Path(tempfile.gettempdir()) / f"maskwatch-{os.getuid() if hasattr(os, 'getuid') else 'user'}" / "exports"
    )
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise OSError(f"no writable cache folder among {[str(c) for c in candidates]}; set MASKWATCH_CACHE_DIR")


def cached_export(checkpoint_path: str | os.PathLike[str], *, int8: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX export of a checkpoint from the cache, exported first when missing (INT8 with the
    default calibration: a sample of the checkpoint's training split)."""
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"model file {checkpoint_path} does not exist")
    digest = file_sha256(checkpoint_path)
    precision = "int8" if int8 else "fp32"
    target = cache_dir() / f"{digest[:32]}-{precision}-op{opset}-v{maskwatch.__version__}-r{EXPORT_REVISION}.onnx"
    if target.is_file():
        with contextlib.suppress(OSError):
            os.utime(target)  # most recently used: kept by _prune
        return target
    log.info("exporting %s to ONNX (%s) in %s", checkpoint_path, precision, target.parent)
    made = export_onnx(checkpoint_path, target, int8=int8, opset=opset)
    _prune(target.parent, keep=CACHE_KEEP)
    return made


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used exports (a cache hit refreshes a file's mtime)."""
    files = sorted(folder.glob("*.onnx"), key=lambda f: f.stat().st_mtime, reverse=True)
    for stale in files[keep:]:
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------------
# TorchScript


def export_torchscript(checkpoint_path: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Trace the checkpoint's model to TorchScript (for libtorch/C++ deployments); classes and preprocessing
    travel in the archive's extra file ``maskwatch.json`` with the crop margin, compliant classes and
    temperature. (TorchScript is deprecated upstream in favour
    of ``torch.export``; ONNX is maskwatch's main deployment format.)"""
    import torch

    from maskwatch.checkpoint import build_model, load_checkpoint

    checkpoint_path, out = Path(checkpoint_path), Path(out)
    checkpoint = load_checkpoint(checkpoint_path)
    prep = Preprocessing.from_dict(checkpoint["preprocessing"])
    meta = {
        "classes": list(checkpoint["classes"]),
        "preprocessing": prep.to_dict(),
        "arch": checkpoint["arch"],
        "maskwatch_version": maskwatch.__version__,
        "source_sha256": file_sha256(checkpoint_path),
        **model_fields(checkpoint, checkpoint["classes"]),
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # check_trace re-runs the graph through the profiling interpreter (4x the time); the model has no
        # data-dependent control flow, and `maskwatch export` compares the result with the checkpoint anyway
        traced = torch.jit.trace(build_model(checkpoint), torch.zeros(1, 3, prep.size, prep.size), check_trace=False)
        traced = torch.jit.freeze(traced.eval())

        def write(tmp: Path) -> None:
            torch.jit.save(traced, str(tmp), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})

        return atomic_write(out, write)


def load_torchscript(path: str | os.PathLike[str], *, with_fields: bool = False):
    """(module, classes, Preprocessing) of a file written by :func:`export_torchscript`; with ``with_fields``
    also the model's ``{"crop_margin", "compliant_classes", "temperature"}`` (defaults for older files)."""
    import torch

    extra = {TORCHSCRIPT_META: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[TORCHSCRIPT_META]:
        raise ValueError(f"{path} is a TorchScript file without maskwatch metadata ({TORCHSCRIPT_META})")
    meta = json.loads(extra[TORCHSCRIPT_META])
    classes, prep = list(meta["classes"]), Preprocessing.from_dict(meta["preprocessing"])
    if with_fields:
        return module.eval(), classes, prep, model_fields(meta, classes)
    return module.eval(), classes, prep
