"""Dataset discovery: class folders, Roboflow CSV, VOC crops, splitting, and errors before training."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import write_class_folders
from PIL import Image

from maskwatch.data.datasets import DatasetError, open_dataset


def test_class_folders_with_splits(tiny_dataset):
    data = open_dataset(tiny_dataset)
    assert data.layout == "folders"
    assert data.classes == ["with_mask", "without_mask"]
    assert data.counts() == {s: {"with_mask": 12, "without_mask": 12} for s in ("test", "train", "valid")}
    assert data.predefined_splits == ("test", "train", "valid")


def test_missing_valid_split_is_carved_from_train(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=20, splits=("train", "test"))
    data = open_dataset(root, val_ratio=0.25, seed=3)
    assert data.counts()["valid"] == {"with_mask": 5, "without_mask": 5}
    assert data.counts()["train"] == {"with_mask": 15, "without_mask": 15}
    train_paths = {s.path for s in data.split("train")}
    assert not train_paths & {s.path for s in data.split("valid")}


def test_unsplit_folder_is_split_stratified_and_seeded(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=20, splits=(None,))
    a = open_dataset(root, val_ratio=0.2, test_ratio=0.1, seed=1)
    b = open_dataset(root, val_ratio=0.2, test_ratio=0.1, seed=1)
    c = open_dataset(root, val_ratio=0.2, test_ratio=0.1, seed=2)
    assert a.counts() == {
        "train": {"with_mask": 14, "without_mask": 14},
        "valid": {"with_mask": 4, "without_mask": 4},
        "test": {"with_mask": 2, "without_mask": 2},
    }
    assert a.splits == b.splits
    assert a.split("valid") != c.split("valid")
    assert len(a.split("all")) == 40


def _roboflow(tmp_path, rows, header="filename, with_mask, without_mask"):
    split = tmp_path / "rf" / "train"
    split.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (8, 8)).save(split / name)
    (split / "_classes.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return tmp_path / "rf"


def test_roboflow_csv_with_spaces_and_bad_rows(tmp_path):
    root = _roboflow(tmp_path, ["a.jpg, 1, 0", "b.jpg, 0, 1", "c.jpg, 1, 1", "d.jpg, x, 0", "gone.jpg, 0, 1",
                                "e.jpg, 0, 0"])
    data = open_dataset(root, val_ratio=0)
    assert data.layout == "roboflow"
    assert data.classes == ["with_mask", "without_mask"]
    assert sorted((s.path.split("/")[-1], s.label) for s in data.split("train")) == [("a.jpg", 0), ("b.jpg", 1)]
    reasons = " | ".join(s.reason for s in data.skipped)
    assert "not one-hot" in reasons and "non-numeric" in reasons and "missing" in reasons
    assert any(s.path.endswith("gone.jpg") for s in data.skipped)


def test_roboflow_three_classes(tmp_path):
    root = _roboflow(tmp_path, ["a.jpg, 1, 0, 0", "b.jpg, 0, 1, 0", "c.jpg, 0, 0, 1"],
                     header="filename, with_mask, without_mask, mask_weared_incorrect")
    data = open_dataset(root, val_ratio=0)
    assert data.classes == ["with_mask", "without_mask", "mask_weared_incorrect"]
    assert sorted(s.label for s in data.split("train")) == [0, 1, 2]


def _voc(root, boxes, size=(200, 100)):
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", size, (90, 90, 90)).save(root / "images" / "scene.jpg")
    objects = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in boxes
    )
    (root / "annotations" / "scene.xml").write_text(
        f"<annotation><filename>scene.jpg</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
        f"</size>{objects}</annotation>"
    )
    return root


def test_voc_crops_respect_min_face_and_margin(tmp_path):
    root = _voc(tmp_path / "voc", [("with_mask", (10, 10, 50, 50)), ("without_mask", (100, 20, 140, 60)),
                                   ("with_mask", (150, 10, 160, 20)), ("mask_weared_incorrect", (60, 10, 95, 45))])
    data = open_dataset(root, crops=True, min_face=32, crop_margin=0.25, classes=["with_mask", "without_mask"],
                        val_ratio=0, test_ratio=0)
    samples = sorted(data.split("all"), key=lambda s: s.box)
    assert [(s.label, s.box) for s in samples] == [(0, (0, 0, 60, 60)), (1, (90, 10, 150, 70))]
    crop = samples[0].load()  # clamped to the image
    assert crop.size == (60, 60)
    every_class = open_dataset(root, crops=True, min_face=32)
    assert every_class.classes == ["mask_weared_incorrect", "with_mask", "without_mask"]


def test_voc_without_crops_flag_is_not_mistaken_for_classes(tmp_path):
    root = _voc(tmp_path / "voc", [("with_mask", (10, 10, 50, 50))])
    with pytest.raises(DatasetError):
        open_dataset(root, crops=False, val_ratio=0, test_ratio=0).require_trainable(["train"])


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "empty" / "train" / "with_mask").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        open_dataset(tmp_path / "empty")


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope")


def test_empty_class_is_an_error_before_training(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=4)
    for path in (root / "train" / "without_mask").iterdir():
        path.write_bytes(b"")  # every image of one class is unusable
    data = open_dataset(root)
    bad = data.verify()
    assert len(bad) == 4 and all("empty" in b.reason for b in bad)
    with pytest.raises(DatasetError, match="'without_mask' has no usable images in split 'train'"):
        data.require_trainable()


def test_single_class_split_is_an_error(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=4, classes=("with_mask",))
    with pytest.raises(DatasetError, match="at least two classes"):
        open_dataset(root).require_trainable()
    root2 = write_class_folders(tmp_path / "e", per_class=4)
    for path in (root2 / "valid" / "with_mask").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match="split 'valid' holds only one class"):
        open_dataset(root2).require_trainable()


def test_bad_files_are_reported_and_skipped(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=5)
    (root / "train" / "with_mask" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    (root / "train" / "with_mask" / "readme.txt").write_text("hello")
    data = open_dataset(root)
    data.verify()
    data.require_trainable()
    assert Counter(s.label for s in data.split("train")) == {0: 5, 1: 5}
    reasons = {s.path.split("/")[-1]: s.reason for s in data.skipped}
    assert "unknown image extension" in reasons["readme.txt"]
    assert "broken.jpg" in reasons


@pytest.mark.integration
def test_shared_datasets_open_as_documented():
    from conftest import shared_or_skip

    faces = open_dataset(shared_or_skip("faces"))
    assert faces.counts()["test"] == {"with_mask": 307, "without_mask": 259}
    pis = open_dataset(shared_or_skip("pis"))
    assert pis.layout == "roboflow" and sum(pis.counts()["test"].values()) == 153
    scenes = open_dataset(shared_or_skip("scenes"), crops=True, min_face=32, classes=["with_mask", "without_mask"])
    assert len(scenes.split("all")) == 755


# -- split lists and several datasets


def _voc_scenes(root, stems, faces=(("with_mask", 40), ("without_mask", 40), ("with_mask", 10))):
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for stem in stems:
        Image.new("RGB", (200, 60), (90, 90, 90)).save(root / "images" / f"{stem}.jpg")
        objects = "".join(
            f"<object><name>{name}</name><bndbox><xmin>{10 + 50 * i}</xmin><ymin>5</ymin>"
            f"<xmax>{10 + 50 * i + side}</xmax><ymax>{5 + side}</ymax></bndbox></object>"
            for i, (name, side) in enumerate(faces)
        )
        (root / "annotations" / f"{stem}.xml").write_text(f"<annotation><filename>{stem}.jpg</filename>{objects}"
                                                          "</annotation>")
    return root


def _lists(folder, **splits):
    folder.mkdir()
    for split, stems in splits.items():
        (folder / f"{split}.txt").write_text("# a comment\n" + "\n".join(stems) + "\n")
    return folder


def test_split_lists_assign_voc_images_and_count_the_rest(tmp_path):
    root = _voc_scenes(tmp_path / "scenes", [f"s{i}" for i in range(7)])
    lists = _lists(tmp_path / "lists", train=["s0", "s1", "s2"], valid=["s3"], test=["s4", "gone"])
    data = open_dataset(root, crops=True, min_face=12, split_lists=lists)
    assert data.predefined_splits == ("train", "valid", "test")
    assert {name: len(samples) for name, samples in data.splits.items()} == {"train": 6, "valid": 2, "test": 2}
    assert {s.path.split("/")[-1] for s in data.split("test")} == {"s4.jpg"}
    assert data.left_out["image in no split list"] == 2  # s5, s6
    assert data.left_out["listed image without usable faces or not in the dataset"] == 1  # gone
    assert data.left_out["face smaller than min_face 12 px"] == 7
    small = open_dataset(root, crops=True, min_face=10, split_lists=lists)  # faces below 32 px are usable
    assert len(small.split("train")) == 9 and "face smaller than min_face 10 px" not in small.left_out


def test_split_lists_for_class_folders_and_their_limits(tmp_path):
    root = write_class_folders(tmp_path / "d", per_class=4, splits=(None,))
    lists = _lists(tmp_path / "lists", train=["with_mask_0", "with_mask_1", "without_mask_0", "without_mask_1"],
                   valid=["with_mask_2", "without_mask_2"])
    data = open_dataset(root, split_lists=lists, val_ratio=0.5)
    assert data.counts() == {"train": {"with_mask": 2, "without_mask": 2}, "valid": {"with_mask": 1, "without_mask": 1}}
    assert data.left_out["image in no split list"] == 2
    with pytest.raises(DatasetError, match="own split folders"):
        open_dataset(write_class_folders(tmp_path / "e", per_class=2), split_lists=lists)
    with pytest.raises(DatasetError, match="holds no split list"):
        open_dataset(root, split_lists=tmp_path)
    (lists / "test.txt").write_text("with_mask_0\n")
    with pytest.raises(DatasetError, match="listed in both"):
        open_dataset(root, split_lists=lists)


def test_a_mix_takes_the_union_of_classes_and_keeps_each_dataset_apart(tmp_path):
    from maskwatch.config import DataSource
    from maskwatch.data.datasets import open_mix

    faces = write_class_folders(tmp_path / "faces", per_class=3)
    scenes = _voc_scenes(tmp_path / "scenes", ["s0", "s1", "s2", "s3"],
                         faces=(("with_mask", 40), ("without_mask", 40), ("mask_weared_incorrect", 40)))
    lists = _lists(tmp_path / "lists", train=["s0", "s1"], valid=["s2"], test=["s3"])
    sources = [DataSource(str(faces), name="faces"),
               DataSource(str(scenes), crops=True, min_face=12, splits=str(lists), weight=2, name="scenes")]
    mix = open_mix(sources)
    assert mix.classes == ["mask_weared_incorrect", "with_mask", "without_mask"]
    assert mix.names == ["faces", "scenes"] and mix.weights == [1.0, 2.0]
    assert [s.label for s in mix.split("train")] == [1, 1, 1, 2, 2, 2, 1, 2, 0, 1, 2, 0]
    assert mix.groups("train").tolist() == [0] * 6 + [1] * 6
    assert mix.counts()["valid"] == {"mask_weared_incorrect": 1, "with_mask": 4, "without_mask": 4}
    mix.require_trainable()  # faces has no third class; the mix as a whole has it in train and valid
    two = open_mix(sources, classes=["with_mask", "without_mask"])
    assert len(two.split("train")) == 10
    assert two.parts[1].data.left_out == {"label 'mask_weared_incorrect' is not one of the classes": 4}
    single = open_mix(sources[:1])
    assert single.classes == ["with_mask", "without_mask"]
    with pytest.raises(DatasetError, match="no dataset given"):
        open_mix([])
