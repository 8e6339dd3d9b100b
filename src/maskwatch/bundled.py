"""The models that ship with maskwatch, so ``detect``, ``evaluate`` and ``serve`` work right after install.

Two places hold them:

* the package's ``assets/`` folder: the INT8 face detector (``centerface-int8.onnx``, kept in the sources)
  and, in a built wheel, the INT8 classifier copied from ``models/`` at build time (``setup.py``), with
  ``models.json``, the manifest of every packaged model's sha256 (a packaged file that differs from it is
  refused: a damaged file would classify badly without any error);
* ``models/`` of a source checkout (an editable install): the classifier's torch checkpoint (training,
  calibration, the fp32 presets) and its INT8 export.

Which classifier is the default (:func:`default_model_path`): ``$MASKWATCH_MODEL``; else the torch checkpoint
when torch is installed and the checkpoint is there (a development checkout); else the INT8 export (``pip
install maskwatch``: no torch, and the wheel carries no checkpoint).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = [
    "BUNDLED_INT8_NAME",
    "BUNDLED_NAME",
    "MANIFEST_NAME",
    "MODELS_TO_PACKAGE",
    "BundledModel",
    "BundledModelError",
    "bundled_models",
    "default_int8_model_path",
    "default_model_path",
    "write_manifest",
]

BUNDLED_NAME = "maskwatch-mobilenet_v2.pt"
# its ready INT8 export (the classifier of the ``fast`` preset: videos and streams; the only classifier of a
# wheel install), so serving never needs the training data for calibration; accuracy deltas in
# models/MODEL_CARD.md
BUNDLED_INT8_NAME = "maskwatch-mobilenet_v2-int8.onnx"
DETECTOR_INT8_NAME = "centerface-int8.onnx"  # = maskwatch.detection.centerface.INT8_MODEL_FILE
# what setup.py copies from models/ into the wheel's assets/ (the checkpoint stays in the repository)
MODELS_TO_PACKAGE = (BUNDLED_INT8_NAME, "MODEL_CARD.md")
MANIFEST_NAME = "models.json"
MANIFEST_SCHEMA = "maskwatch.bundle/1"
_ROLES = {BUNDLED_INT8_NAME: "classifier", DETECTOR_INT8_NAME: "face_detector"}

_ASSETS = Path(__file__).resolve().parent / "assets"
_CHECKOUT_MODELS = Path(__file__).resolve().parents[2] / "models"


class BundledModelError(ValueError):
    """A packaged model file is not the one the wheel was built with (its sha256 differs from models.json)."""


@dataclass(frozen=True)
class BundledModel:
    """One bundled model file and what is known of its integrity."""

    role: str  # classifier | face_detector
    path: Path
    sha256: str
    expected_sha256: str | None  # from the wheel's manifest; None in a source checkout (no manifest)

    @property
    def verified(self) -> bool | None:
        """True / False against the manifest; None when there is nothing to check against."""
        return None if self.expected_sha256 is None else self.sha256 == self.expected_sha256


def _file_sha256(path: Path) -> str:
    """sha256 of a file, once per (path, mtime, size): every model load checks it. Not
    :mod:`maskwatch.core.digests`'s: setup.py loads this file alone, before the package exists, so it
    imports nothing from maskwatch."""
    stat = path.stat()
    return _digest_of(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _digest_of(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_manifest(folder: Path) -> Path:
    """Write ``folder/models.json``: role, size and sha256 of each model file there (the build step's)."""
    models = [
        {"file": path.name, "role": _ROLES[path.name], "bytes": path.stat().st_size, "sha256": _file_sha256(path)}
        for path in sorted(folder.glob("*.onnx"))
        if path.name in _ROLES
    ]
    out = folder / MANIFEST_NAME
    out.write_text(json.dumps({"schema": MANIFEST_SCHEMA, "models": models}, indent=2) + "\n")
    return out


def _manifest() -> dict[str, str]:
    """File name → sha256 from the packaged manifest (empty without one: a source checkout)."""
    path = _ASSETS / MANIFEST_NAME
    if not path.is_file():
        return {}
    return {m["file"]: m["sha256"] for m in json.loads(path.read_text())["models"]}


def _checked(path: Path) -> Path:
    """``path``, after checking a packaged file against the manifest (:class:`BundledModelError` if it differs)."""
    expected = _manifest().get(path.name) if path.parent == _ASSETS else None
    if expected is not None and (actual := _file_sha256(path)) != expected:
        raise BundledModelError(
            f"bundled model {path} has sha256 {actual}, expected {expected} (models.json): the file is "
            "damaged or was replaced; reinstall maskwatch (pip install --force-reinstall maskwatch)"
        )
    return path


def _find(name: str) -> Path | None:
    for folder in (_ASSETS, _CHECKOUT_MODELS):
        if (folder / name).is_file():
            return folder / name
    return None


def torch_installed() -> bool:
    """Whether torch can be imported (looked up, not imported: importing it takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def default_model_path() -> Path:
    """``$MASKWATCH_MODEL`` if set; else the bundled torch checkpoint when torch is installed (a source
    checkout); else the bundled INT8 export (inside the package, or ``models/`` of a source checkout)."""
    override = os.environ.get("MASKWATCH_MODEL")
    if override:
        return Path(override)
    checkpoint = _find(BUNDLED_NAME)
    if checkpoint is not None and torch_installed():
        return checkpoint
    int8 = _find(BUNDLED_INT8_NAME)
    if int8 is not None:
        return _checked(int8)
    if checkpoint is not None:  # torch missing: loading it says which extra to install
        return checkpoint
    raise FileNotFoundError(
        f"bundled model {BUNDLED_INT8_NAME} not found (looked in {_ASSETS} and {_CHECKOUT_MODELS}); "
        "pass --model PATH or set MASKWATCH_MODEL"
    )


def default_int8_model_path() -> Path | None:
    """The bundled model's INT8 export, or None (also when ``$MASKWATCH_MODEL`` picks another model)."""
    if os.environ.get("MASKWATCH_MODEL"):
        return None
    found = _find(BUNDLED_INT8_NAME)
    return None if found is None else _checked(found)


def bundled_models() -> list[BundledModel]:
    """The bundled ONNX models found (classifier, face detector), each with its sha256 and, in a wheel
    install, the manifest's (for ``maskwatch doctor``)."""
    manifest = _manifest()
    out = []
    for name, role in _ROLES.items():
        path = _find(name)
        if path is not None:
            expected = manifest.get(name) if path.parent == _ASSETS else None
            out.append(BundledModel(role, path, _file_sha256(path), expected))
    return out
