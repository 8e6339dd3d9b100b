"""A third class (mask worn incorrectly) end to end in the detection path, with a fake 3-class model whose
compliant classes travel with it: counted as non-compliant by the pipeline, its summaries and the stream
engine's counts and events, drawn in its own colour with a legend entry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import BLUE, GREEN, RED, THREE_CLASSES, BlobFinder, ThreeColourClassifier, fake_three_class_detector, scene

from maskwatch.detection.drawing import class_color, draw_result
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.detection.results import summarize

INCORRECT = "mask_weared_incorrect"


def three_faces() -> np.ndarray:
    return scene([(20, 20, 40, GREEN), (120, 30, 40, RED), (210, 120, 50, BLUE)])


def test_the_pipeline_counts_the_third_class_as_non_compliant():
    result = fake_three_class_detector().detect(three_faces())
    assert result.classes == THREE_CLASSES and result.compliant_classes == ("with_mask",)
    assert result.counts == {"with_mask": 1, "without_mask": 1, INCORRECT: 1}
    assert result.compliance == pytest.approx(1 / 3)
    blue = next(f for f in result.faces if f.label == INCORRECT)
    assert blue.box == pytest.approx((210, 120, 260, 170), abs=0.5) and set(blue.probabilities) == set(THREE_CLASSES)
    total = summarize([result, result], THREE_CLASSES)
    assert total["counts"] == {"with_mask": 2, "without_mask": 2, INCORRECT: 2} and total["compliance"] == 0.3333
    assert result.to_dict()["counts"][INCORRECT] == 1


def test_which_classes_are_compliant_is_the_models_to_say():
    class Lenient(ThreeColourClassifier):
        compliant_classes = ("with_mask", INCORRECT)

    result = MaskDetector(Lenient(), BlobFinder(), scales="fast", box_adjust=None).detect(three_faces())
    assert result.compliance == pytest.approx(2 / 3)


def _pixels_of(image: np.ndarray, colour) -> np.ndarray:
    return (np.abs(image.astype(int) - colour).sum(axis=2) < 12).nonzero()


def test_the_third_class_is_drawn_orange_with_a_legend_entry():
    image = three_faces()
    result = fake_three_class_detector().detect(image)
    out = draw_result(image, result)
    orange, green, red = class_color(INCORRECT), class_color("with_mask"), class_color("without_mask")
    assert len({orange, green, red}) == 3
    ys, xs = _pixels_of(out, orange)
    # the blue face's box outline (x 210..260, y 120..170) is orange ...
    on_box = (xs >= 207) & (xs <= 263) & (ys >= 117) & (ys <= 173)
    assert on_box.sum() > 100
    # ... and so is a swatch in the legend strip at the bottom, next to the other two classes'
    legend = out[-14:]
    for colour in (orange, green, red):
        assert len(_pixels_of(legend, colour)[0]) > 10, colour


def _video(path: Path, colours, n: int = 24) -> Path:
    """``n`` frames of one square per colour walking right, one above the other."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(n):
        frame = scene([(10 + 6 * i, 10 + 75 * k, 40, colour) for k, colour in enumerate(colours)], size=(240, 320))
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_the_stream_engine_counts_the_third_class_as_non_compliant(tmp_path):
    pytest.importorskip("edgefirst.tracker", reason="tracking needs the video extra (pip install edgefirst-tracker)")
    from maskwatch.core.events import SourceSummary, StatsBucket, TrackEnded
    from maskwatch.stream import StreamEngine

    video = _video(tmp_path / "three.mp4", [GREEN, BLUE, RED])
    engine = StreamEngine(fake_three_class_detector(), stop_when_done=True, stats_interval=60)
    assert engine.compliant_classes == ["with_mask"]
    events = engine.events()
    engine.add_source(str(video), name="door")
    engine.start()
    got = list(events)
    assert engine.join(5)
    ended = {e.label: e for e in got if isinstance(e, TrackEnded)}
    assert set(ended) == set(THREE_CLASSES)
    assert ended["with_mask"].compliant and not ended[INCORRECT].compliant and not ended["without_mask"].compliant
    assert set(ended[INCORRECT].probabilities) == set(THREE_CLASSES)
    buckets = [e for e in got if isinstance(e, StatsBucket)]
    assert sum(b.people[INCORRECT] for b in buckets) == 1
    assert sum(b.compliant_people for b in buckets) == 1 and sum(b.n_people for b in buckets) == 3
    summary = next(e for e in got if isinstance(e, SourceSummary))
    assert summary.people is not None and summary.people.counts[INCORRECT] == 1
    assert summary.people.compliance == pytest.approx(1 / 3, abs=1e-3)
    assert summary.counts[INCORRECT] == 24 and summary.compliance == pytest.approx(1 / 3, abs=1e-3)


def test_a_model_that_counts_nothing_compliant_is_believed_by_the_engine():
    from maskwatch.stream import StreamEngine

    class Strict(ThreeColourClassifier):
        compliant_classes = ()

    engine = StreamEngine(MaskDetector(Strict(), BlobFinder(), scales="fast", box_adjust=None))
    assert engine.compliant_classes == []  # not the default (with_mask): the model said so
