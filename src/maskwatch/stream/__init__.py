"""The stream engine: many sources at once, one detector and one classifier, typed events out.

See :mod:`maskwatch.stream.engine` (how it runs), :mod:`maskwatch.stream.events` (what comes out),
:mod:`maskwatch.stream.sources` (where frames come from) and :mod:`maskwatch.stream.tracking` (people).
"""

from maskwatch.stream.engine import AnalysedFrame, EngineConfig, SourceSpec, StreamEngine, Subscription
from maskwatch.stream.events import SCHEMA, json_schema, parse_event

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
