"""The stream engine: many sources at once, one detector and one classifier, typed events out.

The engine in rooms (ARCHITECTURE.md): :mod:`~maskwatch.stream.config` (settings, a source to run),
:mod:`~maskwatch.stream.sources` (where frames come from), :mod:`~maskwatch.stream.buffers` (capture to
analysis), :mod:`~maskwatch.stream.runner` (one source: its capture thread, tracker and counters),
:mod:`~maskwatch.stream.detectors` (which detector a source runs), :mod:`~maskwatch.stream.analysis` (a round
of frames: faces, tracks, one classifier batch), :mod:`~maskwatch.stream.tracking` (people),
:mod:`~maskwatch.stream.reporting` (event building), :mod:`~maskwatch.stream.subscriptions` (who hears it)
and :mod:`~maskwatch.stream.engine` (the control plane). What comes out: :mod:`maskwatch.core.events`.

The names below load on first use, so ``from maskwatch.stream import parse_event`` reads events without
importing OpenCV or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskwatch.core.events import SCHEMA, json_schema, parse_event
    from maskwatch.stream.config import EngineConfig, SourceSpec
    from maskwatch.stream.engine import AnalysedFrame, StreamEngine
    from maskwatch.stream.subscriptions import Subscription

__all__ = [
    "SCHEMA",
    "AnalysedFrame",
    "EngineConfig",
    "SourceSpec",
    "StreamEngine",
    "Subscription",
    "json_schema",
    "parse_event",
]

_HOMES = {
    "SCHEMA": "maskwatch.core.events",
    "json_schema": "maskwatch.core.events",
    "parse_event": "maskwatch.core.events",
    "AnalysedFrame": "maskwatch.stream.engine",
    "EngineConfig": "maskwatch.stream.config",
    "SourceSpec": "maskwatch.stream.config",
    "StreamEngine": "maskwatch.stream.engine",
    "Subscription": "maskwatch.stream.subscriptions",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'maskwatch.stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
