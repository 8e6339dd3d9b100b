"""Reading events, faces and names stays light: no OpenCV, ONNX Runtime or torch behind these imports
(checked in a fresh interpreter, whose ``sys.modules`` says what was loaded after each step)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("cv2", "onnxruntime", "torch", "torchvision", "supervision", "trackers", "PIL")
SRC = Path(__file__).resolve().parents[1] / "src"

LIGHT_STEPS = [
    "import maskwatch",
    "import maskwatch.core.events as e; e.parse_event(e.SourceStatus(source='a', state='live', kind='x').to_json())",
    "from maskwatch.stream import SCHEMA, json_schema, parse_event; json_schema()",
    "from maskwatch.core.faces import Faces; Faces.empty(['with_mask']).counts()",
    "import maskwatch.core.geometry, maskwatch.core.contract, maskwatch.core.names, maskwatch.core.timeutil",
    # the engine's settings are checked without loading the engine (serve/agent/detect settings embed them)
    "from maskwatch.stream import EngineConfig, SourceSpec; EngineConfig(video_preset='balanced')",
]


def heavy_after_each(steps: list[str]) -> list[list[str]]:
    """For each step, run in order in one fresh interpreter: the heavy modules loaded so far."""
    probe = "import json, sys\nseen = []\n" + "".join(
        f"{step}\nseen.append([m for m in {HEAVY!r} if m in sys.modules])\n" for step in steps
    ) + "print(json.dumps(seen))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reading_events_faces_and_settings_loads_no_vision_stack():
    # last, the heavy part itself: the probe does see a heavy import, and the lazy names resolve to it
    heavy_step = "from maskwatch.stream import StreamEngine; from maskwatch import MaskDetector"
    *loaded, after_engine = heavy_after_each([*LIGHT_STEPS, heavy_step])
    for step, heavy in zip(LIGHT_STEPS, loaded, strict=True):
        assert heavy == [], f"{step!r} loaded {heavy}"
    assert "cv2" in after_engine


def test_type_checkers_see_the_lazy_exports():
    import maskwatch
    import maskwatch.stream

    assert "MaskDetector" in maskwatch.__all__ and "StreamEngine" in maskwatch.stream.__all__
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.stream.engine import StreamEngine

    assert maskwatch.MaskDetector is MaskDetector and maskwatch.stream.StreamEngine is StreamEngine
    with pytest.raises(AttributeError):
        maskwatch.stream.NoSuchThing  # noqa: B018
    assert (SRC / "maskwatch" / "py.typed").is_file()  # installed, the package's own types are used
