"""``maskwatch detect`` and ``maskwatch evaluate-detection`` end to end, on tiny generated images and videos.

The models are replaced by fakes (:mod:`fakes`: faces are coloured squares, green = mask, red = no mask) so
these tests check the command's plumbing (sources run at once by the engine, the JSON Lines events and their
schema, annotated outputs, tracking, stream errors, exit codes), not the networks, and run in seconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from fakes import GREEN, RED, BlobFinder, ColourClassifier, make_video, save_rgb, scene
from typer.testing import CliRunner

from maskwatch.cli import app
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.stream import json_schema
from maskwatch.stream import sources as sources_module

runner = CliRunner()
VALIDATOR = jsonschema.Draft202012Validator(json_schema())


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    def load(
        cls,
        model=None,
        *,
        backend=None,
        preset="accurate",
        detector_model=None,
        candidate_threshold=0.1,
        threads=2,
        batch_size=32,
        **options,
    ):
        options.setdefault("scales", preset)
        return MaskDetector(ColourClassifier(), BlobFinder(), box_adjust=None, **options)

    monkeypatch.setattr(MaskDetector, "load", classmethod(load))


def text(result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def read_jsonl(path: Path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for record in records:
        VALIDATOR.validate(record)  # every line is one of the engine's published events
    return records


def test_detect_images_writes_json_lines_and_annotated_images(tmp_path):
    folder = tmp_path / "in"
    save_rgb(folder / "a.png", scene([(20, 20, 40, GREEN), (150, 60, 40, RED)]))
    save_rgb(folder / "sub" / "b.png", scene([(100, 100, 50, GREEN)]))
    (folder / "broken.jpg").write_bytes(b"nope")
    out, jsonl = tmp_path / "out", tmp_path / "r.jsonl"
    res = runner.invoke(app, ["detect", str(folder), "--save", str(out), "--json", str(jsonl), "--no-progress"])
    assert res.exit_code == 1, res.output  # the work ran, one input failed: said, with how many
    assert "1 unreadable image" in text(res)
    records = read_jsonl(jsonl)
    kinds = [r["type"] for r in records]
    assert kinds.count("frame") == 2 and kinds[-2:] == ["source_status", "summary"] and "source" in kinds
    first = next(r for r in records if r["type"] == "frame")
    assert first["path"].endswith("a.png") and first["counts"] == {"with_mask": 1, "without_mask": 1}
    assert first["source"] == str(folder)  # a folder source is recorded by its path
    assert first["compliance"] == 0.5 and first["n_faces"] == 2 and (first["width"], first["height"]) == (320, 240)
    assert first["saved"] == str(out / "a.jpg")  # each frame record names the annotated file it saved
    face = first["faces"][0]
    assert set(face) >= {"box", "score", "label", "probability", "probabilities", "confidence", "landmarks"}
    source = next(r for r in records if r["type"] == "source")
    assert source["skipped"] == 1 and source["frames"] == 2 and "broken.jpg" in source["skipped_reasons"][0]
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
    assert any(f["track_id"] is not None for r in frames for f in r["faces"])
    people = next(r for r in records if r["type"] == "source")["people"]
    assert people["n_people"] == 2  # two people over 12 frames: counted once each
    assert people["counts"] == {"with_mask": 1, "without_mask": 1}
    assert records[-1]["people"]["n_people"] == 2
    # each person gets one track_started and one track_ended line, before the source's record
    kinds = [r["type"] for r in records]
    ended = [r for r in records if r["type"] == "track_ended"]
    assert len(ended) == 2 and kinds.count("track_started") == 2
    assert max(i for i, k in enumerate(kinds) if k == "track_ended") < kinds.index("source")
    assert {t["label"] for t in ended} == {"with_mask", "without_mask"}
    assert all(t["source"].endswith("walk.mp4") for t in ended)
    buckets = [r for r in records if r["type"] == "stats"]
    assert sum(b["n_people"] for b in buckets) == 2


def test_two_videos_run_concurrently_with_per_source_speed(tmp_path):
    a = make_video(tmp_path / "a.mp4", 30, people=2)
    b = make_video(tmp_path / "b.mp4", 30, people=3)
    jsonl = tmp_path / "two.jsonl"
    res = runner.invoke(app, ["detect", str(a), str(b), "--json", str(jsonl), "--no-progress"])
    assert res.exit_code == 0, res.output
    records = read_jsonl(jsonl)
    frames = [r["source"] for r in records if r["type"] == "frame"]
    assert frames.count(str(a)) == 30 and frames.count(str(b)) == 30
    first_b = frames.index(str(b))
    assert first_b < frames.index(str(a)) + 5 and frames[first_b:].count(str(a)) > 10  # interleaved, not in turn
    sources = {r["source"]: r for r in records if r["type"] == "source"}
    assert sources[str(a)]["people"]["n_people"] == 2 and sources[str(b)]["people"]["n_people"] == 3
    assert all(s["analysed_fps"] > 0 and s["dropped"] == 0 for s in sources.values())
    assert records[-1]["n_sources"] == 2 and records[-1]["people"]["n_people"] == 5
    assert "frames/s" in text(res)


def test_video_stride(tmp_path):
    video = make_video(tmp_path / "walk.mp4", 9)
    jsonl = tmp_path / "v.jsonl"
    res = runner.invoke(
        app, ["detect", str(video), "--stride", "4", "--json", str(jsonl), "--no-progress", "--no-track"]
    )
    assert res.exit_code == 0, res.output
    assert [r["frame"] for r in read_jsonl(jsonl) if r["type"] == "frame"] == [0, 4, 8]


class DroppingCapture:
    """A camera that sends a few frames and then is gone for good."""

    opens = 0

    def __init__(self, target, *args):
        DroppingCapture.opens += 1
        self.frames = 3 if DroppingCapture.opens == 1 else 0

    def isOpened(self):
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


def test_dropped_stream_is_retried_then_reported_and_a_bad_video_does_not_stop_the_others(tmp_path, monkeypatch):
    DroppingCapture.opens = 0
    monkeypatch.setattr(sources_module, "_network_capture", DroppingCapture)
    monkeypatch.setenv("MASKWATCH_DETECT_ENGINE__DECODER", "thread")  # the fake capture lives in this process
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    good = make_video(tmp_path / "good.mp4", 5)
    jsonl = tmp_path / "s.jsonl"
    res = runner.invoke(
        app,
        [
            "detect",
            "rtsp://127.0.0.1:1/cam",
            str(broken),
            str(good),
            "--reconnect-timeout",
            "1.2",
            "--json",
            str(jsonl),
            "--no-progress",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "2 failed source(s)" in text(res) and "gave up" in text(res)
    assert DroppingCapture.opens >= 2  # opened, then retried (how often depends on the clock)
    records = read_jsonl(jsonl)
    sources = {r["source"]: r for r in records if r["type"] == "source"}
    stream = sources["rtsp://127.0.0.1:1/cam"]
    # the 3 frames arrived at once: a live source keeps only the latest, the others count as dropped
    assert stream["frames"] + stream["dropped"] == 3 and stream["frames"] >= 1
    assert "gave up" in stream["error"] and "attempt" in stream["error"]
    assert "cannot open video" in sources[str(broken)]["error"]
    assert sources[str(good)]["frames"] == 5 and sources[str(good)]["error"] is None
    states = [r["state"] for r in records if r["type"] == "source_status" and r["source"] == "rtsp://127.0.0.1:1/cam"]
    assert states[:2] == ["connecting", "live"] and "lost" in states and states[-1] == "failed"
    assert sorted(records[-1]["errors"]) == sorted([stream["error"], sources[str(broken)]["error"]])


def test_bad_sources_output_paths_and_show_without_gui(tmp_path):
    res = runner.invoke(app, ["detect", str(tmp_path / "nothing.jpg")])
    assert res.exit_code == 2 and "no such file" in text(res)
    image = save_rgb(tmp_path / "a.png", scene([]))
    res = runner.invoke(app, ["detect", str(image), "--json", str(tmp_path)])
    assert res.exit_code == 2 and "is a folder" in text(res)
    res = runner.invoke(app, ["detect", str(image), "--save", str(image)])
    assert res.exit_code == 2 and "is a file" in text(res)
    res = runner.invoke(app, ["detect", str(image), "--batch-size", "0"])
    assert res.exit_code == 2 and "--batch-size must be >= 1" in text(res)
    res = runner.invoke(app, ["detect", str(image), "--show"])
    if res.exit_code == 0:
        pytest.skip("this OpenCV build has a GUI")
    assert res.exit_code == 2 and "--show needs an OpenCV build with a GUI" in text(res)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the output-path check above")
def test_unwritable_save_folder_is_refused_before_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    image = save_rgb(tmp_path / "a.png", scene([]))
    res = runner.invoke(app, ["detect", str(image), "--save", str(locked / "out")])
    assert res.exit_code == 2


def test_failed_annotated_writes_are_counted_and_fail_the_run(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    for k in range(4):
        save_rgb(folder / f"{k}.png", scene([(20, 20, 40, GREEN)]))
    out, jsonl = tmp_path / "out", tmp_path / "r.jsonl"
    real = Path.write_bytes
    calls = []

    def full_disk(path, data):
        if path.parent != out:
            return real(path, data)
        calls.append(path)
        if len(calls) % 2 == 0:  # every second annotated image: the disk is full
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    res = runner.invoke(app, ["detect", str(folder), "--save", str(out), "--json", str(jsonl), "--no-progress"])
    assert res.exit_code == 1 and "2 file(s) not written" in text(res)
    records = read_jsonl(jsonl)
    assert records[-1]["write_errors"] == 2
    assert sum(r["saved"] is not None for r in records if r["type"] == "frame") == 2
    assert len(list(out.iterdir())) == 2


def test_json_to_stdout_keeps_messages_on_stderr(tmp_path):
    image = save_rgb(tmp_path / "a.png", scene([(20, 20, 40, GREEN)]))
    res = (
        CliRunner(mix_stderr=False).invoke(app, ["detect", str(image), "--json", "-", "--no-progress"])
        if "mix_stderr" in CliRunner.__init__.__code__.co_varnames
        else runner.invoke(app, ["detect", str(image), "--json", "-", "--no-progress"])
    )
    assert res.exit_code == 0
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert json.loads(lines[-1])["type"] == "summary" and json.loads(lines[0])["type"] == "source_status"


def write_voc(folder: Path, name: str, image: np.ndarray, objects) -> None:
    save_rgb(folder / "images" / f"{name}.png", image)
    body = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
        f"<ymax>{y1}</ymax></bndbox></object>"
        for label, (x0, y0, x1, y1) in objects
    )
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename>{body}</annotation>"
    )


def test_evaluate_detection_on_a_hand_made_voc_set(tmp_path):
    # with_mask: an unannotated face (score 0.98) outranks the two annotated ones (0.90, 0.78):
    # precision 1/2 at recall 1/2, 2/3 at recall 1 → COCO 101-point AP = 2/3. without_mask: AP 1.
    data = tmp_path / "voc"
    write_voc(
        data, "one", scene([(20, 20, 30, (0, 230, 0)), (150, 150, 40, (0, 250, 0))]), [("with_mask", (20, 20, 50, 50))]
    )
    write_voc(
        data,
        "two",
        scene([(30, 30, 70, (0, 200, 0)), (160, 40, 24, (220, 0, 0))]),
        [
            ("with_mask", (30, 30, 100, 100)),
            ("without_mask", (160, 40, 184, 64)),
            ("mask_weared_incorrect", (2, 2, 12, 12)),
        ],
    )
    out, report = tmp_path / "m.json", tmp_path / "m.html"
    res = runner.invoke(
        app,
        [
            "evaluate-detection",
            "--data",
            str(data),
            "--json",
            str(out),
            "--report",
            str(report),
            "--preset",
            "fast",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())
    assert {
        "map50",
        "ap50",
        "recall",
        "precision",
        "n_images",
        "n_faces",
        "recall_iou30",
        "precision_iou30",
        "count_mae",
        "n_faces_by_bucket",
        "ap_method",
    } <= set(m)
    assert m["ap50"]["with_mask"] == pytest.approx(2 / 3, abs=1e-3) and m["ap50"]["without_mask"] == pytest.approx(1.0)
    assert m["map50"] == pytest.approx(5 / 6, abs=1e-3)
    assert (m["n_images"], m["n_faces"]) == (2, 4)
    assert (
        m["recall"]["all"] == 0.75
        and m["recall"]["<20"] == 0.0
        and m["recall"][">=64"] == 1.0
        and m["recall"]["32-64"] is None
    )
    assert m["precision"] == 0.75 and m["count_mae"] == 1.0  # |2 - 1| and |2 - 3|
    assert set(m["recall"]) == {"<20", "20-32", "32-64", ">=64", ">=20", "all"}
    assert "COCO" in m["ap_method"]
    assert "<table>" in report.read_text()
    assert set(m["privacy_coverage"]) == set(m["recall"]) and m["privacy_coverage"]["32-64"] is None  # JSON: null
    assert "hidden by the blur" in report.read_text()
    res = runner.invoke(app, ["evaluate-detection", "--data", str(tmp_path), "--json", str(out)])
    assert res.exit_code == 2


def test_ctrl_c_writes_the_summary_and_every_person_then_exits_130(tmp_path, monkeypatch):
    import _thread
    import signal
    import threading

    from fakes import fake_detector

    monkeypatch.setattr(MaskDetector, "load", classmethod(lambda cls, *a, **k: fake_detector(finder_delay=0.03)))
    video = make_video(tmp_path / "long.mp4", 200)
    jsonl = tmp_path / "c.jsonl"
    # a terminal's Ctrl-C reaches Python's own handler; make sure this process has it: interrupt_main does
    # nothing while SIGINT is ignored, as it is in a suite started as a background job (``make test &``)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.5, _thread.interrupt_main)
    timer.start()
    try:
        res = runner.invoke(app, ["detect", str(video), "--json", str(jsonl), "--no-progress"])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert res.exit_code == 130, res.output
    records = read_jsonl(jsonl)
    summary = records[-1]
    frames = [r for r in records if r["type"] == "frame"]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert 0 < summary["n_frames"] == len(frames) < 200  # what was done, counted right (not 0)
    started = {r["track_id"] for r in records if r["type"] == "track_started"}
    ended = {r["track_id"] for r in records if r["type"] == "track_ended"}
    assert started and started == ended  # open tracks were closed and written


def test_evaluate_detection_reports_skipped_files_and_exits_1(tmp_path):
    data = tmp_path / "voc"
    write_voc(data, "good", scene([(20, 20, 40, GREEN)]), [("with_mask", (20, 20, 60, 60))])
    (data / "annotations" / "broken.xml").write_text("<annotation><object>")  # malformed XML
    (data / "annotations" / "orphan.xml").write_text("<annotation><filename>orphan.png</filename></annotation>")
    save_rgb(data / "images" / "unannotated.png", scene([]))
    out = tmp_path / "m.json"
    res = runner.invoke(app, ["evaluate-detection", "--data", str(data), "--json", str(out), "--no-progress",
                              "--preset", "fast"])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "2 of 3 annotated images could not be used" in text(res)
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(out.read_text())["skipped"]}
    assert set(reasons) == {"broken.xml", "orphan.xml", "unannotated.png"}
    assert "unreadable annotation" in reasons["broken.xml"] or "annotation" in reasons["broken.xml"]
    assert "no image" in reasons["orphan.xml"] and "without an annotation" in reasons["unannotated.png"]
    assert "skipped" in text(res) and "broken.xml" in text(res)


def test_a_voc_folder_without_crops_says_to_add_crops(tmp_path):
    from maskwatch.data.datasets import DatasetError, open_dataset

    data = tmp_path / "voc"
    write_voc(data, "good", scene([(20, 20, 40, GREEN)]), [("with_mask", (20, 20, 60, 60))])
    with pytest.raises(DatasetError, match="add --crops"):
        open_dataset(data)
    assert open_dataset(data, crops=True, min_face=8).layout == "voc"


def test_the_color_flag_and_the_config_key_turn_every_face_grey(tmp_path):
    """``--color gray`` (or ``engine.camera_defaults.color`` in ``--config``) sends grey faces to the
    classifier (the stand-in calls a grey face unmasked) and the stats say so; a wrong mode exits 2."""
    video = make_video(tmp_path / "walk.mp4", 8)
    config = tmp_path / "detect.yaml"
    config.write_text("engine:\n  camera_defaults:\n    color: gray\n")
    for args in (["--color", "gray"], ["--config", str(config)], []):
        jsonl = tmp_path / "v.jsonl"
        res = runner.invoke(app, ["detect", str(video), "--json", str(jsonl), "--no-progress", *args])
        assert res.exit_code == 0, res.output
        records = read_jsonl(jsonl)
        people = next(r for r in records if r["type"] == "source")["people"]["counts"]
        modes = {r["color_mode"] for r in records if r["type"] in ("stats", "source_status")}
        if args:
            assert people == {"with_mask": 0, "without_mask": 2} and modes == {"gray"}
        else:
            assert people == {"with_mask": 1, "without_mask": 1} and modes == {"color"}
    res = runner.invoke(app, ["detect", str(video), "--color", "infrared"])
    assert res.exit_code == 2 and "color" in text(res) and "Traceback" not in res.output
def _textured_face_scene() -> np.ndarray:
    """One 'face': a green square with a fine texture (a solid square looks the same blurred or not)."""
    image = scene([])
    texture = np.random.default_rng(0).integers(120, 256, (60, 60), dtype=np.uint8)
    image[40:100, 100:160, 1] = texture
    return image


def _texture(rgb: np.ndarray) -> float:
    return float(np.abs(np.diff(rgb.astype(np.int16), axis=1)).mean())


def test_detect_blur_blurs_every_face_in_saved_images_and_videos(tmp_path):
    image = save_rgb(tmp_path / "in" / "a.png", _textured_face_scene())
    video = tmp_path / "in" / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for _ in range(5):
        writer.write(cv2.cvtColor(_textured_face_scene(), cv2.COLOR_RGB2BGR))
    writer.release()
    inside = (slice(55, 85), slice(115, 145))  # the face's middle, clear of the drawn box and label
    for source in (image, video):
        plain, blurred = tmp_path / "plain" / source.stem, tmp_path / "blurred" / source.stem
        res = runner.invoke(app, ["detect", str(source), "--save", str(plain), "--no-progress"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["detect", str(source), "--save", str(blurred), "--blur", "--no-progress"])
        assert res.exit_code == 0, res.output
        if source == image:
            pairs = [(cv2.imread(str(plain / "a.jpg")), cv2.imread(str(blurred / "a.jpg")))]
        else:
            (a,), (b,) = plain.glob("*.mp4"), blurred.glob("*.mp4")
            pairs = list(zip(_frames(a), _frames(b), strict=True))
            assert len(pairs) == 5
        for sharp, soft in pairs:
            assert _texture(soft[inside]) < 0.3 * _texture(sharp[inside])  # unreadable with --blur only
    res = runner.invoke(app, ["detect", str(image), "--blur"])
    assert res.exit_code == 2 and "--blur" in res.output  # nothing written or shown: nothing to blur


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)
