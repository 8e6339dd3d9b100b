"""Inference backends behind one interface (torch now; ONNX Runtime and INT8 build on it)."""

from maskwatch.runtime.base import Classifier, load_classifier

__all__ = ["Classifier", "load_classifier"]
