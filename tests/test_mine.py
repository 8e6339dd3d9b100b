"""``maskwatch mine``: unsure faces into a review folder, and the round trip back into training.

The networks are replaced by fakes where they are not the point (faces are coloured squares on black, as in
:mod:`fakes`); :class:`ShadeClassifier` makes some faces unsure on purpose: it reads only the *left half* of a
crop and calls it masked in proportion to green / (green + red), so a brownish square is unsure, and a
square whose halves differ reads differently mirrored (its test-time views disagree). One test runs the
bundled model and CenterFace on real shared scenes (skipped when absent); the round trip trains a real
tiny model.
"""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_or_skip, write_class_folders
from fakes import GREEN, RED, BlobFinder, save_rgb, scene
from typer.testing import CliRunner

from maskwatch.cli import app
from maskwatch.detection.pipeline import MaskDetector
from maskwatch.mining import (
    LEDGER_FIELDS,
    MineSettings,
    _candidate,
    face_file_name,
    mine,
    view_uncertainty,
)

runner = CliRunner()
CLASSES = ["with_mask", "without_mask"]


def shade(p: float) -> tuple[int, int, int]:
    """A colour the fake classifier reads as P(with_mask) = p."""
    return round(200 * (1 - p)), round(200 * p), 0


UNSURE_MASK, UNSURE_BARE = shade(0.6), shade(0.4)


class ShadeClassifier:
    classes = CLASSES
    backend = "fake"
    crop_margin = 0.15
    compliant_classes = ("with_mask",)

    def predict_proba(self, images):
        out = []
        for im in images:
            left = im[:, : max(1, im.shape[1] // 2)].reshape(-1, 3).astype(float)
            lit = left[left.max(axis=1) > 20]
            g, r = (lit[:, 1].sum(), lit[:, 0].sum()) if len(lit) else (1.0, 1.0)
            p = g / max(g + r, 1e-9)
            out.append([p, 1 - p])
        return np.array(out).reshape(-1, 2)


def fake_load(cls, model=None, *, backend=None, preset="accurate", detector_model=None, threads=2, batch_size=32,
              candidate_threshold=0.1, **options):  # fmt: skip
    options.setdefault("scales", preset)
    return MaskDetector(ShadeClassifier(), BlobFinder(), box_adjust=None, **options)


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(MaskDetector, "load", classmethod(fake_load))


def two_faced(x, y, side, left, right):
    """Squares for a face whose left half is ``left`` and right half ``right``."""
    half = side // 2
    return [(x, y, half, left), (x + half, y, side - half, right)]


def halves(image, x, y, side, left, right):
    image[y : y + side, x : x + side // 2] = left
    image[y : y + side, x + side // 2 : x + side] = right


def write_scenes(folder: Path) -> dict[str, str]:
    """Two scenes (PNG: exact colours) with sure, unsure and two-faced faces; the expected mined labels
    by file-name prefix of each unsure face."""
    one = scene([(20, 20, 40, GREEN), (100, 20, 40, RED), (180, 20, 40, UNSURE_MASK)])
    halves(one, 20, 120, 40, GREEN, shade(0.4))  # views disagree: 1.0 as is, 0.4 mirrored
    two = scene([(20, 20, 40, UNSURE_BARE), (100, 100, 40, GREEN)])
    save_rgb(folder / "one.png", one)
    save_rgb(folder / "two.png", two)
    return {"one": "3 unsure faces", "two": "1 unsure face"}


def read_rows(folder: Path) -> list[dict]:
    with (folder / "mined.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == LEDGER_FIELDS
        return list(reader)


def jpgs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


# -- judging one face ---------------------------------------------------------------------------------------


def test_views_that_agree_and_are_sure_are_not_mined_and_each_reason_is_named():
    sure = view_uncertainty(np.tile([0.97, 0.03], (6, 1)), CLASSES, threshold=0.8, spread=0.3)
    assert sure.reasons == () and sure.label == "with_mask" and sure.views_agreeing == 6
    low = view_uncertainty(np.tile([0.3, 0.7], (6, 1)), CLASSES, threshold=0.8, spread=0.3)
    assert low.reasons == ("low_probability",) and low.label == "without_mask"
    assert low.probability == pytest.approx(0.7) and low.worst_view == pytest.approx(0.7)
    views = np.array([[0.95, 0.05]] * 5 + [[0.45, 0.55]])  # mean 0.87: sure on average, one view disagrees
    split = view_uncertainty(views, CLASSES, threshold=0.8, spread=0.6)
    assert split.reasons == ("views_disagree",) and split.views_agreeing == 5
    assert split.worst_view == pytest.approx(0.45) and split.spread == pytest.approx(0.5)
    wide = view_uncertainty(np.array([[0.99, 0.01]] * 3 + [[0.6, 0.4]] * 3), CLASSES, threshold=0.7, spread=0.3)
    assert wide.reasons == ("views_spread",)


def test_file_names_are_fixed_by_source_frame_and_box_and_tell_same_named_files_apart(tmp_path):
    name = face_file_name(str(tmp_path / "a" / "street 1.jpg"), 12, (10.4, 20.6, 50.2, 61.0))
    assert name == face_file_name(str(tmp_path / "a" / "street 1.jpg"), 12, (10.4, 20.6, 50.2, 61.0))
    assert name.startswith("street_1-") and name.endswith("_f12_10-21-50-61.jpg")
    assert name != face_file_name(str(tmp_path / "b" / "street 1.jpg"), 12, (10.4, 20.6, 50.2, 61.0))


def test_views_cut_from_a_kept_patch_equal_views_cut_from_the_whole_image():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    detector = MaskDetector(ShadeClassifier(), BlobFinder(), scales="accurate", box_adjust=None)
    for box in [(30.3, 40.7, 70.2, 90.9), (0.0, 2.2, 25.5, 30.0), (140.2, 100.1, 160.0, 120.0)]:
        candidate = _candidate(
            image, box, 0.2, source="x", frame=0, timestamp=None, score=None, track_id=None, probability=1
        )
        whole = detector.face_views(image, np.array([box]))
        kept = detector.face_views(candidate.patch, candidate.patch_box)
        assert len(whole) == len(kept) == 6
        for a, b in zip(whole, kept, strict=True):
            np.testing.assert_array_equal(a, b)


def test_the_command_defaults_are_the_library_defaults():
    import inspect

    from maskwatch.commands.mine import mine as command

    options = inspect.signature(command).parameters
    defaults = MineSettings()
    assert [options[name].default.default for name in ("threshold", "spread", "limit")] == [
        defaults.threshold,
        defaults.spread,
        defaults.limit,
    ]


# -- the command on scenes ----------------------------------------------------------------------------------


def test_mine_writes_unsure_faces_by_predicted_class_least_sure_first(tmp_path, fake_models):
    data, out = tmp_path / "scenes", tmp_path / "review"
    write_scenes(data)
    result = runner.invoke(app, ["mine", "--data", str(data), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(Path(r["source"]).stem, r["predicted"], r["why"]) for r in rows] == [
        ("one", "with_mask", "low_probability;views_disagree;views_spread"),  # views 1.0 and 0.4: worst 0.4
        ("one", "with_mask", "low_probability"),  # 0.6
        ("two", "without_mask", "low_probability"),  # 0.6 for without_mask
    ]
    assert float(rows[0]["worst_view"]) == pytest.approx(0.4, abs=0.03)
    assert rows[0]["views_agreeing"] == "3" and rows[0]["views"] == "6"
    assert all(0.3 <= float(r["score"]) <= 1 for r in rows)  # the fake detector's score: the face's brightness
    assert [float(r["probability"]) for r in rows] == pytest.approx([0.7, 0.6, 0.6], abs=0.03)
    # files: in the predicted class's folder, under the name the CSV gives, crops of the face
    assert {p.relative_to(out).as_posix() for p in jpgs(out)} == {r["file"] for r in rows}
    for row in rows:
        assert row["file"].split("/")[0] == row["predicted"]
        crop = cv2.imread(str(out / row["file"]))
        assert 40 <= crop.shape[0] <= 56 and 40 <= crop.shape[1] <= 56  # 40 px face + 15 % margin a side
    assert (out / "without_mask").is_dir() and (out / "with_mask").is_dir()


def test_rerun_never_duplicates_and_keeps_what_a_person_moved_or_deleted(tmp_path, fake_models):
    data, out = tmp_path / "scenes", tmp_path / "review"
    write_scenes(data)
    args = ["mine", "--data", str(data), "--out", str(out), "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    first = read_rows(out)
    moved = out / first[1]["file"]  # predicted with_mask; a person says it is without_mask
    shutil.move(moved, out / "without_mask" / moved.name)
    (out / first[2]["file"]).unlink()  # and this one is not worth keeping
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert read_rows(out) == first  # the ledger is unchanged
    files = {p.relative_to(out).as_posix() for p in jpgs(out)}
    assert files == {first[0]["file"], f"without_mask/{moved.name}"}  # nothing restored, nothing doubled
    assert "already mined there" in again.output


def test_limit_keeps_the_least_sure_and_out_inside_data_is_not_mined(tmp_path, fake_models):
    data = tmp_path / "scenes"
    write_scenes(data)
    out = data / "review"  # inside the data folder: its crops must not be mined on the next run
    args = ["mine", "--data", str(data), "--out", str(out), "--limit", "1", "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    rows = read_rows(out)
    assert len(rows) == 1 and "views_disagree" in rows[0]["why"]
    result = runner.invoke(app, [*args[:-2], "5", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(read_rows(out)) == 3  # the two new ones, none of the review crops
    assert all("review" not in r["source"] for r in read_rows(out))


def test_threshold_decides_what_counts_as_unsure(tmp_path, fake_models):
    data, out = tmp_path / "scenes", tmp_path / "review"
    write_scenes(data)
    args = ["mine", "--data", str(data), "--out", str(out), "--threshold", "0.5", "--no-progress"]
    assert runner.invoke(app, args).exit_code == 0
    assert [r["why"] for r in read_rows(out)] == ["views_disagree;views_spread"]  # 0.6 is sure enough at 0.5


def test_crops_only_judges_each_image_as_one_face(tmp_path, fake_models):
    crops, out = tmp_path / "crops", tmp_path / "review"
    for name, colour in [("sure", GREEN), ("unsure", UNSURE_BARE), ("bare", RED)]:
        image = np.zeros((46, 46, 3), np.uint8)
        image[3:43, 3:43] = colour
        save_rgb(crops / f"{name}.png", image)
    result = runner.invoke(app, ["mine", "--data", str(crops), "--out", str(out), "--crops-only", "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert [(Path(r["source"]).stem, r["predicted"]) for r in rows] == [("unsure", "without_mask")]
    assert (rows[0]["x0"], rows[0]["frame"], rows[0]["score"]) == ("5.3", "0", "")  # image less 15 % margin


def test_user_errors_exit_2_before_any_work_and_unreadable_images_exit_1(tmp_path, fake_models):
    data, out = tmp_path / "scenes", tmp_path / "review"
    write_scenes(data)
    base = ["mine", "--data", str(data), "--no-progress"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mined.csv").write_text("a,b\n1,2\n")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    for args, message in [
        ([*base, "--out", str(a_file)], "is a file"),
        ([*base, "--out", str(out), "--threshold", "1.5"], "--threshold must be in (0, 1]"),
        ([*base, "--out", str(out), "--limit", "0"], "--limit must be >= 1"),
        ([*base, "--out", str(out), "--preset", "quick"], "unknown --preset"),
        (["mine", "--data", str(tmp_path / "nope"), "--out", str(out)], "no such file or folder"),
        (["mine", "--data", "webcam:0", "--out", str(out)], "not live sources"),
        ([*base, "--out", str(foreign)], "not a maskwatch mine ledger"),
        (["mine", "--data", str(video), "--out", str(out), "--crops-only"], "not videos"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
    assert not out.exists()  # nothing was written by a refused run
    (data / "broken.jpg").write_bytes(b"not an image")
    result = runner.invoke(app, [*base, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "1 unreadable image(s) or frame(s)" in " ".join(result.output.split())
    assert len(read_rows(out)) == 3  # the other images were mined all the same


def test_ctrl_c_writes_what_was_mined_so_far_and_exits_130(tmp_path, fake_models, monkeypatch):
    from rich.progress import Progress

    data, out = tmp_path / "scenes", tmp_path / "review"
    for k in range(8):
        save_rgb(data / f"s{k}.png", scene([(20, 20, 40, UNSURE_MASK)]))
    calls = []

    def advance(self, task, amount=1):  # the progress bar hears of each analysed frame: Ctrl-C at the first
        calls.append(task)
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Progress, "advance", advance)
    result = runner.invoke(app, ["mine", "--data", str(data), "--out", str(out), "--no-progress"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output
    rows = read_rows(out)
    assert 1 <= len(rows) <= 8 and len(jpgs(out)) == len(rows)  # the frames analysed before it stopped


# -- videos: one face per person, at their least sure frame -------------------------------------------------


def write_video(path: Path, n: int = 10) -> tuple[Path, int]:
    """Person A walks right and is least sure at frame 4; person B stands, unsure, in every frame; C is
    sure. Returns the path and A's least sure frame."""
    p_a = [0.95, 0.9, 0.85, 0.8, 0.6, 0.8, 0.85, 0.9, 0.95, 0.95][:n]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(n):
        rgb = scene([(10 + 6 * i, 20, 40, shade(p_a[i])), (200, 120, 40, UNSURE_BARE), (60, 170, 40, GREEN)])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, int(np.argmin(p_a))


@pytest.mark.parametrize("track", ["--track", "--no-track"])
def test_video_people_are_mined_once_at_their_least_sure_frame(tmp_path, fake_models, track):
    video, least_sure = write_video(tmp_path / "walk.mp4")
    out = tmp_path / "review"
    result = runner.invoke(app, ["mine", "--data", str(video), "--out", str(out), track, "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    by_label = {r["predicted"]: r for r in rows}
    assert len(rows) == 2 and set(by_label) == {"with_mask", "without_mask"}  # A and B, once each; not C
    assert int(by_label["with_mask"]["frame"]) == least_sure
    assert float(by_label["with_mask"]["x0"]) == pytest.approx(10 + 6 * least_sure, abs=2)
    assert by_label["with_mask"]["timestamp"] == f"{least_sure / 10:.3f}"
    if track == "--track":
        assert by_label["with_mask"]["track"] != ""


def test_a_slow_judge_still_sees_the_engine_end(tmp_path, monkeypatch):
    """Judging between two frames may take longer than the engine waits to hand over its end marker
    (0.5 s on a full queue); mining must end anyway, with every face judged."""
    import threading

    import maskwatch.mining as mining

    class SlowViews(ShadeClassifier):
        def predict_proba(self, images):
            if len(images) >= 6:  # the judge's six views, not the engine's one crop
                time.sleep(0.7)
            return super().predict_proba(images)

    monkeypatch.setattr(mining, "_SCORE_BATCH", 1)
    data = tmp_path / "scenes"
    for k in range(6):
        save_rgb(data / f"s{k}.png", scene([(20, 20, 40, UNSURE_MASK)]))
    detector = MaskDetector(SlowViews(), BlobFinder(), box_adjust=None, scales="fast")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(mine(detector, [data])), daemon=True)
    worker.start()
    worker.join(60)
    assert done, "mining did not end"
    assert done[0].frames == 6 and done[0].candidates == 6 and len(done[0].faces) == 6


def test_video_person_merging_is_bounded_by_frames_and_overlap(tmp_path, fake_models):
    """Without the tracker and with no grace between frames, each frame of the walker would be a person;
    the default merge makes it one (the same call path as the command, through the library)."""
    video, _ = write_video(tmp_path / "walk.mp4")
    detector = fake_load(MaskDetector, preset="fast")
    merged = mine(detector, [video], track=False, settings=MineSettings(threshold=0.99))
    strict = mine(detector, [video], track=False, settings=MineSettings(threshold=0.99, dedupe_iou=0.99))
    assert merged.frames == strict.frames == 10 and merged.faces_seen == 30
    assert merged.candidates == 3  # A, B, C
    assert strict.candidates > 10  # A moves 6 px a frame: at IoU 0.99 every frame of A is someone new


def test_a_person_unseen_for_long_is_judged_at_their_least_sure_frame_with_their_track_id():
    from maskwatch.core.faces import NO_TRACK, Faces
    from maskwatch.mining import _VideoPeople
    from maskwatch.stream.sources import Frame

    people = _VideoPeople(MineSettings(dedupe_frames=1, close_after=5))
    image = np.zeros((100, 100, 3), np.uint8)
    classes = ["with_mask", "without_mask"]

    def frame(i, faces):
        return people.add_frame(Frame(image, "v.mp4", i, i / 10, "video"), Faces.concat(faces, classes), 0.2)

    def face(x, p, track):
        return Faces([(x, 10.0, x + 20.0, 30.0)], [0.9], classes=classes, probabilities=[[p, 1 - p]],
                     track_ids=[NO_TRACK if track is None else track], classified=[True])  # fmt: skip

    handed = frame(0, [face(10, 0.6, None)])  # least sure before the tracker confirmed the person
    handed += frame(1, [face(12, 0.9, 7)])  # overlaps: the same person, now with a track id
    for i in range(2, 8):
        handed += frame(i, [])
    assert [(c.frame, c.track_id, c.probability) for c in handed] == [(0, 7, 0.6)]
    assert people.open == {} and people.by_track == {}
    frame(8, [face(12, 0.9, 7)])  # the track comes back after being judged: a new candidate
    assert len(people.close()) == 1


# -- the round trip: mine, correct, train, and the correction is what training reads ------------------------


@pytest.mark.slow
def test_round_trip_mine_move_train_uses_the_corrected_label(tmp_path, fake_models):
    from maskwatch.config import load_config
    from maskwatch.training import load_data

    data, out = tmp_path / "scenes", tmp_path / "review"
    for k in range(6):  # enough unsure faces of each predicted class for train / valid / test splits
        save_rgb(data / f"s{k}.png", scene([(20, 20, 40, shade(0.55 + 0.02 * k)), (120, 120, 40, shade(0.3))]))
    result = runner.invoke(app, ["mine", "--data", str(data), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert sorted(r["predicted"] for r in rows) == ["with_mask"] * 6 + ["without_mask"] * 6
    wrong = next(r for r in rows if r["predicted"] == "with_mask")
    name = Path(wrong["file"]).name
    shutil.move(out / wrong["file"], out / "without_mask" / name)  # the reviewer's correction

    original = write_class_folders(tmp_path / "original", per_class=6, size=40)
    run = tmp_path / "run"
    args = ["train", "--data", str(out), "--data", str(original), "--out", str(run), "--epochs", "1",
            "--views", "1", "--finetune", "0", "--image-size", "32", "--batch-size", "8", "--no-augment"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (run / "model.pt").is_file()
    # the datasets as this run opened them (its saved config, the loader training uses)
    dataset = load_data(load_config(run / "config.yaml"))
    samples = [(Path(s.path).name, dataset.classes[s.label]) for split in dataset.splits.values() for s in split]
    assert [label for n, label in samples if n == name] == ["without_mask"]  # used, with the corrected label
    mined = sorted(Path(r["file"]).name for r in rows)
    assert sorted(n for n, _ in samples if n in mined) == mined  # every reviewed face is in the data, once


# -- the bundled model on real scenes -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_bundled_model_mines_real_scenes_and_a_rerun_adds_nothing(tmp_path):
    from maskwatch.detection.centerface import CenterFaceDetector, ModelNotFoundError

    images = shared_or_skip("scenes", "images")
    try:
        CenterFaceDetector(max_side=None, box_adjust=None)
    except ModelNotFoundError as exc:
        pytest.skip(f"CenterFace model not installed: {exc}")
    data, out = tmp_path / "scenes", tmp_path / "review"
    data.mkdir()
    for stem in ("maksssksksss115", "maksssksksss130", "maksssksksss132"):  # scenes/valid images
        (data / f"{stem}.jpg").symlink_to(images / f"{stem}.jpg")
    args = ["mine", "--data", str(data), "--out", str(out), "--threshold", "0.999", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = read_rows(out)
    assert rows, "no face below 0.999 in three crowded scenes"
    worst = [float(r["worst_view"]) for r in rows]
    assert worst == sorted(worst)
    for row in rows:
        assert row["predicted"] in CLASSES and (out / row["file"]).is_file() and row["views"] == "6"
        assert float(row["worst_view"]) <= float(row["probability"]) < 0.999 or "views" in row["why"]
        assert Path(row["source"]).parent == data and row["why"]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert read_rows(out) == rows and len(jpgs(out)) == len(rows)
