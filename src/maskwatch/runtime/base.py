"""Open a model file as a :class:`Classifier` with the right inference backend (:func:`load_classifier`).

The interface itself lives in :mod:`maskwatch.runtime.types`, which the backends import; this factory
imports the backends (lazily, so the torch backend is only loaded when asked for), never the reverse.
``from maskwatch.runtime.base import Classifier, load_classifier`` keeps working.
"""

from __future__ import annotations

import logging
from pathlib import Path

from maskwatch.runtime.types import Classifier, ImageLike, as_rgb_array, softmax

__all__ = ["BACKENDS", "Classifier", "ImageLike", "as_rgb_array", "load_classifier", "softmax"]

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")


def load_classifier(path: str | Path, backend: str = "auto", **options) -> Classifier:
    """Open a model file with the named backend: ``auto`` | ``torch`` | ``onnx`` | ``onnx-int8``.

    * ``.onnx`` file (exported by maskwatch): ONNX Runtime; the precision is the file's own.
    * ``.ts`` / ``.torchscript`` file: torch (TorchScript).
    * ``.pt`` checkpoint: ``torch`` runs it as is; ``onnx`` / ``onnx-int8`` export it once to the export
      cache (keyed by the checkpoint's sha256, see ``maskwatch.runtime.export``) and run that; ``auto`` is
      ``onnx`` when onnxruntime is importable and no CUDA device is asked for or present, else ``torch``.

    ``options`` go to the backend (``batch_size``; ``threads`` and ``spin`` for ONNX; ``device`` for torch).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    path = Path(path)
    suffix = path.suffix.lower()
    spin = options.pop("spin", None)  # an ONNX Runtime thread-pool setting; torch has none
    if suffix == ".onnx":
        if backend == "torch":
            raise ValueError(f"{path} is an ONNX file; use backend onnx (or auto), or give the .pt checkpoint")
        from maskwatch.runtime.onnx_backend import OnnxClassifier

        classifier = OnnxClassifier(path, spin=spin, **options)
        if backend == "onnx-int8" and classifier.backend != "onnx-int8":
            raise ValueError(f"{path} is not an INT8 export; export one with `maskwatch export --format onnx-int8`")
        return classifier
    if suffix in (".ts", ".torchscript"):
        from maskwatch.runtime.export import load_torchscript
        from maskwatch.runtime.torch_backend import TorchClassifier

        module, classes, prep, fields = load_torchscript(path, with_fields=True)
        return TorchClassifier(module, classes, prep, **fields, **options)
    chosen = backend
    if backend == "auto":
        from maskwatch.runtime.onnx_backend import prefer_onnx

        chosen = "onnx" if prefer_onnx(options) else "torch"
    if chosen != "torch":
        from maskwatch.runtime.onnx_backend import OnnxClassifier

        try:
            from maskwatch.runtime.export import cached_export

            return OnnxClassifier(cached_export(path, int8=chosen == "onnx-int8"), spin=spin, **options)
        except ImportError as exc:  # the exporter needs torch + onnx
            if backend != "auto":
                raise
            logging.getLogger("maskwatch").warning("ONNX export unavailable (%s); running %s with torch", exc, path)
    try:
        from maskwatch.runtime.torch_backend import TorchClassifier
    except ImportError as exc:
        raise ImportError(
            f"{path} is a torch checkpoint and torch is not installed ({exc}): install "
            "'maskwatch[train]', or use an exported .onnx file (`maskwatch export`)"
        ) from exc
    return TorchClassifier.from_checkpoint(path, **options)
