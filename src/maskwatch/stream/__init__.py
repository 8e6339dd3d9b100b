"""The stream engine: many sources at once, one detector and one classifier, typed events out.

See :mod:`maskwatch.stream.engine` (how it runs), :mod:`maskwatch.core.events` (what comes out),
:mod:`maskwatch.stream.sources` (where frames come from) and :mod:`maskwatch.stream.tracking` (people).

The names below load on first use, so ``from maskwatch.stream import parse_event`` reads events without
importing OpenCV or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maskwatch.core.events import SCHEMA, json_schema, parse_event
    from maskwatch.stream.engine import AnalysedFrame, EngineConfig, SourceSpec, StreamEngine, Subscription

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
    "EngineConfig": "maskwatch.stream.engine",
    "SourceSpec": "maskwatch.stream.engine",
    "StreamEngine": "maskwatch.stream.engine",
    "Subscription": "maskwatch.stream.engine",
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
