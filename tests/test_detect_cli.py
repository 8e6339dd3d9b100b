"""``maskwatch detect`` and ``maskwatch evaluate-detection`` end to end, on tiny generated images and videos.

The models are replaced by fakes (faces are coloured squares: green = mask, red = no mask) so these tests
check the command's plumbing (sources, JSON Lines schema, annotated outputs, tracking, stream errors, exit
codes), not the networks, and run in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from maskwatch.cli import app
from maskwatch.stream import sources as sources_module
from maskwatch.detection.centerface import Face
from maskwatch.detection.pipeline import MaskDetector

CLASSES = ["with_mask", "without_mask"]
GREEN, RED = (0, 230, 0), (220, 0, 0)
runner = CliRunner()


class BlobFinder:
    def detect(self, image_rgb):
        mask = (image_rgb.max(axis=2) > 20).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        out = []
        for x, y, w, h, _ in stats[1:n]:
            score = float(image_rgb[y + h // 2, x + w // 2].max()) / 255.0
            out.append(Face((float(x), float(y), float(x + w), float(y + h)), score, np.zeros((5, 2), np.float32)))
        return out


class ColourClassifier:
    classes = CLASSES
    backend = "fake"

    def predict_proba(self, images):
        p = [0.97 if im[..., 1].mean() > im[..., 0].mean() else 0.04 for im in images]
        return np.array([[v, 1 - v] for v in p]).reshape(-1, 2)


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    def load(cls, model=None, *, backend=None, preset="accurate", detector_model=None, candidate_threshold=0.1,
             threads=2, batch_size=32, **options):  # fmt: skip
        options.setdefault("scales", preset)
        return MaskDetector(ColourClassifier(), BlobFinder(), box_adjust=None, **options)

    monkeypatch.setattr(MaskDetector, "load", classmethod(load))


def scene(squares, size=(240, 320)) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    for x, y, side, colour in squares:
        image[y : y + side, x : x + side] = colour
    return image


def save_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def text(result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def make_video(path: Path, n: int, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    for i in range(n):  # one masked person walking right, one unmasked person standing still
        rgb = scene([(20 + 8 * i, 60, 48, GREEN), (230, 120, 44, RED)])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_detect_images_writes_json_lines_and_annotated_images(tmp_path):
    folder = tmp_path / "in"
    save_rgb(folder / "a.png", scene([(20, 20, 40, GREEN), (150, 60, 40, RED)]))
    save_rgb(folder / "sub" / "b.png", scene([(100, 100, 50, GREEN)]))
    (folder / "broken.jpg").write_bytes(b"nope")
    out, jsonl = tmp_path / "out", tmp_path / "r.jsonl"
    res = runner.invoke(app, ["detect", str(folder), "--save", str(out), "--json", str(jsonl), "--no-progress"])
    assert res.exit_code == 0, res.output
    records = read_jsonl(jsonl)
    assert [r["type"] for r in records] == ["frame", "frame", "source", "summary"]
    first = records[0]
    assert first["source"].endswith("a.png") and first["counts"] == {"with_mask": 1, "without_mask": 1}
    assert first["compliance"] == 0.5 and first["n_faces"] == 2 and (first["width"], first["height"]) == (320, 240)
    face = first["faces"][0]
    assert set(face) >= {"box", "score", "label", "probability", "probabilities", "confidence", "landmarks"}
    assert records[2]["skipped"] == 1 and records[2]["frames"] == 2
    summary = records[-1]
    assert summary["n_frames"] == 2 and summary["n_faces"] == 3 and summary["skipped"] == 1
    assert summary["counts"] == {"with_mask": 2, "without_mask": 1} and summary["compliance"] == pytest.approx(0.6667)
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.jpg"]
    annotated = cv2.imread(str(out / "a.jpg"))
    assert annotated.shape == (240, 320, 3)


def test_video_in_video_out_same_frame_count_and_people_counted_once(tmp_path):
    video = make_video(tmp_path / "walk.mp4", 12)
    out, jsonl = tmp_path / "out", tmp_path / "v.jsonl"
    res = runner.invoke(app, ["detect", str(video), "--save", str(out), "--json", str(jsonl), "--no-progress"])
    assert res.exit_code == 0, res.output
    written = cv2.VideoCapture(str(out / "walk.mp4"))
    n = 0
    while written.read()[0]:
        n += 1
    assert n == 12
    assert int(written.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    records = read_jsonl(jsonl)
    frames = [r for r in records if r["type"] == "frame"]
    assert [r["frame"] for r in frames] == list(range(12))
    assert all(r["n_faces"] == 2 for r in frames)
    assert any("track_id" in f for r in frames for f in r["faces"])
    people = next(r for r in records if r["type"] == "source")["people"]
    assert people["n_tracks"] == 2  # two people over 12 frames: counted once each
    assert people["counts"] == {"with_mask": 1, "without_mask": 1}
    assert {t["label"] for t in people["tracks"]} == {"with_mask", "without_mask"}
    assert records[-1]["people"]["n_tracks"] == 2
    # each person also gets one "track" line when their track closes, before the source's record
    kinds = [r["type"] for r in records]
    tracks = [r for r in records if r["type"] == "track"]
    assert len(tracks) == 2 and max(i for i, k in enumerate(kinds) if k == "track") < kinds.index("source")
    assert {t["label"] for t in tracks} == {"with_mask", "without_mask"}
    assert {t["track_id"] for t in tracks} == {t["track_id"] for t in people["tracks"]}
    assert all(t["source"].endswith("walk.mp4") for t in tracks)


def test_video_stride(tmp_path):
    video = make_video(tmp_path / "walk.mp4", 9)
    jsonl = tmp_path / "v.jsonl"
    res = runner.invoke(app, ["detect", str(video), "--stride", "4", "--json", str(jsonl), "--no-progress", "--no-track"])
    assert res.exit_code == 0, res.output
    assert [r["frame"] for r in read_jsonl(jsonl) if r["type"] == "frame"] == [0, 4, 8]


class DroppingCapture:
    """A camera that sends a few frames and then is gone for good."""

    opens = 0

    def __init__(self, target):
        DroppingCapture.opens += 1
        self.frames = 3 if DroppingCapture.opens == 1 else 0

    def isOpened(self):  # noqa: N802
        return self.frames > 0

    def read(self):
        if self.frames <= 0:
            return False, None
        self.frames -= 1
        return True, cv2.cvtColor(scene([(40, 40, 40, GREEN)]), cv2.COLOR_RGB2BGR)

    def get(self, prop):
        return 10.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        pass


def test_dropped_stream_is_retried_then_reported(tmp_path, monkeypatch):
    DroppingCapture.opens = 0
    monkeypatch.setattr(sources_module, "_default_capture", DroppingCapture)
    jsonl = tmp_path / "s.jsonl"
    res = runner.invoke(app, ["detect", "rtsp://127.0.0.1:1/cam", "--reconnect-timeout", "1.2", "--json", str(jsonl)])
    assert res.exit_code == 1, res.output
    assert "rtsp://127.0.0.1:1/cam lost" in text(res) and "gave up" in text(res)
    assert DroppingCapture.opens >= 2  # opened, then retried (how often depends on the clock)
    records = read_jsonl(jsonl)
    assert sum(r["type"] == "frame" for r in records) == 3
    source = next(r for r in records if r["type"] == "source")
    assert "gave up" in source["error"] and records[-1]["errors"] == [source["error"]]


def test_bad_sources_and_show_without_gui(tmp_path):
    res = runner.invoke(app, ["detect", str(tmp_path / "nothing.jpg")])
    assert res.exit_code == 2 and "no such file" in text(res)
    image = save_rgb(tmp_path / "a.png", scene([]))
    res = runner.invoke(app, ["detect", str(image), "--show"])
    if res.exit_code == 0:
        pytest.skip("this OpenCV build has a GUI")
    assert res.exit_code == 2 and "--show needs an OpenCV build with a GUI" in text(res)


def write_voc(folder: Path, name: str, image: np.ndarray, objects) -> None:
    save_rgb(folder / "images" / f"{name}.png", image)
    body = "".join(f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                   f"<ymax>{y1}</ymax></bndbox></object>" for label, (x0, y0, x1, y1) in objects)  # fmt: skip
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / f"{name}.xml").write_text(f"<annotation><filename>{name}.png</filename>{body}</annotation>")


def test_evaluate_detection_on_a_hand_made_voc_set(tmp_path):
    # with_mask: an unannotated face (score 0.98) outranks the two annotated ones (0.90, 0.78):
    # precision 1/2 at recall 1/2, 2/3 at recall 1 → COCO 101-point AP = 2/3. without_mask: AP 1.
    data = tmp_path / "voc"
    write_voc(data, "one", scene([(20, 20, 30, (0, 230, 0)), (150, 150, 40, (0, 250, 0))]), [("with_mask", (20, 20, 50, 50))])
    write_voc(data, "two", scene([(30, 30, 70, (0, 200, 0)), (160, 40, 24, (220, 0, 0))]),
              [("with_mask", (30, 30, 100, 100)), ("without_mask", (160, 40, 184, 64)), ("mask_weared_incorrect", (2, 2, 12, 12))])  # fmt: skip
    out, report = tmp_path / "m.json", tmp_path / "m.html"
    res = runner.invoke(app, ["evaluate-detection", "--data", str(data), "--json", str(out), "--report", str(report),
                              "--preset", "fast", "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert {"map50", "ap50", "recall", "precision", "n_images", "n_faces", "recall_iou30", "precision_iou30",
            "count_mae", "n_faces_by_bucket", "ap_method"} <= set(m)  # fmt: skip
    assert m["ap50"]["with_mask"] == pytest.approx(2 / 3, abs=1e-3) and m["ap50"]["without_mask"] == pytest.approx(1.0)
    assert m["map50"] == pytest.approx(5 / 6, abs=1e-3)
    assert (m["n_images"], m["n_faces"]) == (2, 4)
    assert m["recall"]["all"] == 0.75 and m["recall"]["<20"] == 0.0 and m["recall"][">=64"] == 1.0 and m["recall"]["32-64"] is None
    assert m["precision"] == 0.75 and m["count_mae"] == 1.0  # |2 - 1| and |2 - 3|
    assert set(m["recall"]) == {"<20", "20-32", "32-64", ">=64", ">=20", "all"}
    assert "COCO" in m["ap_method"]
    assert "<table>" in report.read_text()
    res = runner.invoke(app, ["evaluate-detection", "--data", str(tmp_path), "--json", str(out)])
    assert res.exit_code == 2
