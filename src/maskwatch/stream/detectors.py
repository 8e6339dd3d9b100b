"""Which detector a source runs: the engine's extension point for swapping or reconfiguring its models.

The engine asks a *detector factory* (any ``preset name -> MaskDetector`` callable) once per source. The
default, :class:`PresetDetectors`, configures the engine's one detector with each preset's views (models
shared, one configured copy per preset, cached). A caller that wants other settings everywhere gives its own
factory instead of subclassing the engine, e.g. ``mine``, which judges faces on six views afterwards and so
needs one crop per face here: ``StreamEngine(detector, detectors=PresetDetectors(detector, classify_tta=False))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maskwatch.detection.pipeline import MaskDetector
from maskwatch.detection.presets import check_preset

__all__ = ["DetectorFactory", "PresetDetectors"]

DetectorFactory = Callable[[str], MaskDetector]


class PresetDetectors:
    """``detector`` configured per preset (:meth:`MaskDetector.configured`), with ``changes`` applied to every
    preset; each preset's detector is made once."""

    def __init__(self, detector: MaskDetector, **changes: Any) -> None:
        self.detector = detector
        self.changes = changes
        self._made: dict[str, MaskDetector] = {}

    def __call__(self, preset: str) -> MaskDetector:
        if preset not in self._made:
            self._made[preset] = self.detector.configured(scales=check_preset(preset), **self.changes)
        return self._made[preset]
