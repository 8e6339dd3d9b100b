"""Inference backends behind one interface: torch, ONNX Runtime fp32 and INT8 (``load_classifier``)."""

from maskwatch.runtime.base import Classifier, load_classifier

__all__ = ["Classifier", "load_classifier"]
