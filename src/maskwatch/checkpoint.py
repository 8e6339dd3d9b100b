"""Model files: what a checkpoint holds, and writing it so that a crash never leaves a broken one.

A checkpoint is a plain dict saved with ``torch.save``: weights, architecture, class names,
preprocessing, the face crop margin, the compliant classes and the temperature that calibrates its
probabilities (see :mod:`maskwatch.runtime.types`), the
run's config, its metrics and the library versions that made it. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the target (atomic on POSIX), so a
reader sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import maskwatch
from maskwatch.core.timeutil import now_iso

FORMAT_VERSION = 1


def library_versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    return {
        "maskwatch": maskwatch.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "numpy": numpy.__version__,
    }


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` (its return value is ignored), fsync, then rename to ``path``; on any error the
    old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def make_checkpoint(
    state_dict: dict[str, Any],
    *,
    arch: str,
    classes: list[str],
    preprocessing: dict[str, Any],
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    half: bool = False,
    crop_margin: float | None = None,
    compliant_classes: list[str] | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict; ``half`` stores floating weights as fp16 (loaded back as fp32).
    ``crop_margin`` (the face framing trained on), ``compliant_classes`` and ``temperature`` (set by
    :mod:`maskwatch.calibration`) travel with the model; None stores the defaults."""
    from maskwatch.core.contract import model_fields

    fields = model_fields(
        {"crop_margin": crop_margin, "compliant_classes": compliant_classes, "temperature": temperature}, classes
    )
    weights = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu().clone())
        for k, v in state_dict.items()
    }
    return {
        "format": FORMAT_VERSION,
        "arch": arch,
        "classes": list(classes),
        "preprocessing": dict(preprocessing),
        **fields,
        "state_dict": weights,
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
        "created": now_iso(),
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`make_checkpoint` (tensors only, no pickled code). Files written
    before ``crop_margin`` / ``compliant_classes`` / ``temperature`` existed get the defaults, so every
    reader sees all three."""
    import torch

    from maskwatch.core.contract import model_fields

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable maskwatch checkpoint ({exc})") from exc
    missing = {"arch", "classes", "preprocessing", "state_dict"} - set(checkpoint)
    if missing:
        raise ValueError(f"{path} is not a maskwatch checkpoint (missing {sorted(missing)})")
    checkpoint.update(model_fields(checkpoint, checkpoint["classes"]))
    return checkpoint


def build_model(checkpoint: dict[str, Any]):
    """The torch model of a checkpoint, in eval mode, fp32."""
    from maskwatch.models import create_model

    model = create_model(checkpoint["arch"], len(checkpoint["classes"]), weights="none")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in checkpoint["state_dict"].items()}
    model.load_state_dict(state)
    return model.eval()
