"""Reading events, faces and names stays light: no OpenCV, ONNX Runtime or torch behind these imports
(each checked in a fresh interpreter, whose ``sys.modules`` says what was loaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("cv2", "onnxruntime", "torch", "torchvision", "supervision", "trackers")
SRC = Path(__file__).resolve().parents[1] / "src"


def loaded_after(code: str) -> set[str]:
    """The heavy modules present in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return {name for name in done.stdout.strip().split(",") if name}


@pytest.mark.parametrize(
    "code",
    [
        "import maskwatch.core.events as e;e.parse_event(e.SourceStatus(source='a', state='live', kind='x').to_json())",
        "import maskwatch",
        "from maskwatch.stream import SCHEMA, json_schema, parse_event; json_schema()",
        "from maskwatch.core.faces import Faces; Faces.empty(['with_mask']).counts()",
        "import maskwatch.core.geometry, maskwatch.core.contract, maskwatch.core.names, maskwatch.core.timeutil",
        # the engine's settings are checked without loading the engine (serve/agent/detect settings embed them)
        "from maskwatch.stream import EngineConfig, SourceSpec; EngineConfig(video_preset='balanced')",
    ],
)
def test_reading_events_and_faces_loads_no_vision_stack(code):
    assert loaded_after(code) == set()


def test_the_heavy_parts_still_load_on_first_use():
    # the probe can see a heavy import: the lazy names really resolve to the engine and the pipeline
    assert "cv2" in loaded_after("from maskwatch.stream import StreamEngine; from maskwatch import MaskDetector")


def test_type_checkers_see_the_lazy_exports():
    import maskwatch
    import maskwatch.stream

    assert "MaskDetector" in maskwatch.__all__ and "StreamEngine" in maskwatch.stream.__all__
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.engine import StreamEngine

    assert maskwatch.MaskDetector is MaskDetector and maskwatch.stream.StreamEngine is StreamEngine
    with pytest.raises(AttributeError):
        maskwatch.stream.NoSuchThing  # noqa: B018
