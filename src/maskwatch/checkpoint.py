"""Model files: what a checkpoint holds, and writing it so that a crash never leaves a broken one.

A checkpoint is a plain dict saved with ``torch.save``: weights, architecture, class names,
preprocessing, the face crop margin, the compliant classes and the temperature that calibrates its
probabilities (see :mod:`maskwatch.runtime.types`), the
run's config, its metrics, what it was trained on (``training_data``: datasets and image digests, see
:mod:`maskwatch.provenance`) and the library versions that made it. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the target (atomic on POSIX), so a
reader sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import functools
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import maskwatch
from maskwatch.core.contract import TRAINING_DATA as TRAINING_DATA_KEY
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
    training_data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the checkpoint dict; ``half`` stores floating weights as fp16 (loaded back as fp32).
    ``crop_margin`` (the face framing trained on), ``compliant_classes`` and ``temperature`` (set by
    :mod:`maskwatch.calibration`) travel with the model; None stores the defaults. ``training_data`` is the
    record of :mod:`maskwatch.provenance` (datasets and image digests), stored when given."""
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
        **({"training_data": training_data} if training_data else {}),
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


def _weighted_state(states: Sequence[dict[str, Any]], weights: Sequence[float]) -> dict[str, Any]:
    """``sum(w * state)`` key by key, in the widest float type of the states (an fp16 file does not make the
    average fp16); integer buffers (BatchNorm's batch counters) are the last state's."""
    import torch

    keys = set(states[0])
    if any(set(state) != keys for state in states[1:]):
        raise ValueError("weight averaging needs checkpoints of the same architecture and layers")
    out = {}
    for key, last in states[-1].items():
        shapes = {tuple(state[key].shape) for state in states}
        if len(shapes) > 1:
            raise ValueError(f"weight averaging: {key} has shapes {sorted(shapes)}")
        if last.is_floating_point():
            mixed = sum(w * state[key].float() for w, state in zip(weights, states))
            out[key] = mixed.to(functools.reduce(torch.promote_types, (state[key].dtype for state in states)))
        else:
            out[key] = last.clone()
    return out


def interpolate_checkpoints(
    frozen: dict[str, Any], finetuned: dict[str, Any], alpha: float, *, note: str = ""
) -> dict[str, Any]:
    """WiSE-FT weight averaging (Wortsman et al., 2022, "Robust fine-tuning of zero-shot models"): the
    weights ``(1 - alpha) * frozen + alpha * finetuned`` of two checkpoints of one network, e.g. the
    frozen-backbone model of training's stage 1 and the fine-tuned model of stage 2 (the fine-tuned model
    starts from the other, so the straight line between them stays in one basin). Fine-tuning moves a model
    towards its training sources; going part of the way back keeps more of what ImageNet taught, which holds
    up better on sources and conditions the training data lacks. Everything but the weights is the
    fine-tuned checkpoint's; ``averaging`` records what was done."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if frozen.get("arch") != finetuned.get("arch"):
        raise ValueError("weight averaging needs two checkpoints of the same architecture and layers")
    state = _weighted_state([frozen["state_dict"], finetuned["state_dict"]], [1.0 - alpha, alpha])
    return {
        **finetuned,
        "state_dict": state,
        "averaging": {"method": "WiSE-FT (linear interpolation of weights)", "alpha": float(alpha), "note": note},
    }


#: what every ingredient of a soup must share: the network and what its inputs and outputs mean
SOUP_INVARIANTS = ("arch", "classes", "preprocessing", "crop_margin", "compliant_classes")


def average_checkpoints(
    checkpoints: Sequence[dict[str, Any]], weights: Sequence[float], *, names: Sequence[str] = ()
) -> dict[str, Any]:
    """A model soup (Wortsman et al., 2022, "Model soups"): the weighted average of the weights of several
    models fine-tuned from one pretrained network (here: ImageNet, the same frozen blocks and seed), e.g.
    recipes that each hold up on other conditions. Their errors differ, their weights stay in one basin, so
    the average often keeps the strengths of each at the cost of one model. Every ingredient must share
    :data:`SOUP_INVARIANTS`; ``weights`` (>= 0) are normalised to sum to 1.

    The soup is a new model: its temperature is 1 until :mod:`maskwatch.calibration` fits one; it was trained
    on the union of its ingredients' data (``training_data``, and ``config["data"]``, so folds and
    ``evaluate`` see every source); ``averaging`` names each ingredient (``names``: say which file, and its
    sha256), its weight and recipe, so the soup can be made again."""
    if len(checkpoints) < 2 or len(weights) != len(checkpoints):
        raise ValueError("a soup needs two checkpoints or more, and one weight for each")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"soup weights must be >= 0 and not all 0, got {list(weights)}")
    first = checkpoints[0]
    for field in SOUP_INVARIANTS:
        for other in checkpoints[1:]:
            if other.get(field) != first.get(field):
                raise ValueError(f"every ingredient of a soup must have the same {field}: {first.get(field)!r} "
                                 f"and {other.get(field)!r}")  # fmt: skip
    total = float(sum(weights))
    share = [float(w) / total for w in weights]
    state = _weighted_state([c["state_dict"] for c in checkpoints], share)
    data: list[Any] = []
    for checkpoint in checkpoints:
        items = (checkpoint.get("config") or {}).get("data")
        for item in items if isinstance(items, list) else [items] if items else []:
            if item not in data:
                data.append(item)
    records = [c[TRAINING_DATA_KEY] for c in checkpoints if c.get(TRAINING_DATA_KEY)]
    ingredients = [
        {
            "name": names[i] if i < len(names) else f"model {i + 1}",
            "weight": share[i],
            "config": c.get("config") or {},
            "averaging": c.get("averaging"),
        }
        for i, c in enumerate(checkpoints)
    ]
    soup = {
        # not the first ingredient's calibration, averaging or training data: the soup's own come below
        **{k: v for k, v in first.items() if k not in ("averaging", "calibration", TRAINING_DATA_KEY)},
        "state_dict": state,
        "temperature": 1.0,
        "config": {**(first.get("config") or {}), "data": data},
        "metrics": {},
        "versions": library_versions(),
        "created": now_iso(),
        "averaging": {"method": "model soup (weighted average of weights)", "ingredients": ingredients},
    }
    if records:
        soup[TRAINING_DATA_KEY] = _union_training_data(records)
    return soup


def _union_training_data(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from maskwatch.provenance import TrainingData

    parts = [TrainingData.from_record(r) for r in records]
    datasets: list[dict[str, Any]] = []
    for part in parts:
        datasets += [d for d in part.datasets if d not in datasets]
    splits = parts[0].digests
    digests = {split: frozenset().union(*(p.digests.get(split, frozenset()) for p in parts)) for split in splits}
    return TrainingData(datasets, digests).to_record()
