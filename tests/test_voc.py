"""One VOC reader: the face-crop dataset and the detection evaluation see the same boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskwatch.core.faces import Faces
from maskwatch.core.geometry import grow_box
from maskwatch.data.datasets import open_dataset
from maskwatch.data.voc import parse_voc, read_voc, voc_image_for
from maskwatch.detection.evaluation import evaluate_voc
from maskwatch.detection.pipeline import MaskDetector

# corners written the wrong way round and fractional; a second face in order; one box without height
BOX = "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
XML = (
    "<annotation><filename>street.png</filename>"
    + BOX.format("with_mask", 60.6, 70.4, 20.2, 30.5)
    + BOX.format("without_mask", 100, 20, 140.5, 60)
    + BOX.format("without_mask", 150, 90, 170, 90)
    + "<object><name>no box</name></object></annotation>"
)
SWAPPED = (20.2, 30.5, 60.6, 70.4)
ORDERED = (100.0, 20.0, 140.5, 60.0)


@pytest.fixture()
def scenes(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", (200, 120), (40, 40, 40)).save(tmp_path / "images" / "street.png")
    (tmp_path / "annotations" / "street.xml").write_text(XML)
    return tmp_path


def test_the_rule(scenes):
    annotation = parse_voc(scenes / "annotations" / "street.xml")
    assert [(o.label, o.box) for o in annotation.objects] == [("with_mask", SWAPPED), ("without_mask", ORDERED)]
    assert [(o.label, o.box) for o in annotation.degenerate] == [("without_mask", (150.0, 90.0, 170.0, 90.0))]
    assert read_voc(scenes / "annotations" / "street.xml") == [("with_mask", SWAPPED), ("without_mask", ORDERED)]
    assert voc_image_for(annotation, scenes / "images") == scenes / "images" / "street.png"


def test_incomplete_box_is_an_unreadable_annotation(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><object><name>x</name><bndbox><xmin>1</xmin><ymin>oops</ymin>"
                   "<xmax>3</xmax><ymax>4</ymax></bndbox></object></annotation>")
    with pytest.raises(ValueError, match="non-numeric"):
        parse_voc(xml)


class FixedFinder:
    """'Finds' exactly the annotated faces (so evaluation shows which boxes it took as ground truth)."""

    def detect(self, image_rgb: np.ndarray) -> Faces:
        return Faces([SWAPPED, ORDERED], [0.9, 0.9])


class Labeller:
    classes = ("with_mask", "without_mask")

    def predict_proba(self, images):
        return np.tile([0.5, 0.5], (len(images), 1))


def test_crops_and_evaluation_read_the_same_boxes(scenes):
    margin = 0.15
    dataset = open_dataset(scenes, crops=True, min_face=0, crop_margin=margin, val_ratio=0, test_ratio=0)
    crops = sorted((dataset.classes[s.label], s.box) for s in dataset.split("all"))
    assert crops == [("with_mask", grow_box(SWAPPED, margin)), ("without_mask", grow_box(ORDERED, margin))]
    assert any("degenerate" in s.reason for s in dataset.skipped)

    detector = MaskDetector(Labeller(), FixedFinder(), scales=(200,), flip=False, box_adjust=None, upscale=False)
    metrics = evaluate_voc(detector, scenes)
    assert metrics["n_faces"] == 2 and metrics["recall"]["all"] == 1.0 and metrics["precision"] == 1.0
    assert metrics["degenerate_boxes"] == [{"path": str(scenes / "annotations" / "street.xml"),
                                            "label": "without_mask", "box": [150.0, 90.0, 170.0, 90.0]}]  # fmt: skip


def test_split_lists_read_stems_and_refuse_overlap(tmp_path):
    from maskwatch.data.voc import read_split_lists

    (tmp_path / "train.txt").write_text("a\nb.jpg  # a comment\n\n")
    (tmp_path / "test.txt").write_text("c\n")
    assert read_split_lists(tmp_path) == {"train": {"a", "b"}, "test": {"c"}}
    (tmp_path / "valid.txt").write_text("c\n")
    with pytest.raises(ValueError, match="'c' is listed in both"):
        read_split_lists(tmp_path)
    with pytest.raises(ValueError, match="holds no split list"):
        read_split_lists(tmp_path / "nowhere")


def test_committed_scene_split_is_disjoint_and_stratified():
    """The committed scene lists (scripts/split_scenes.py) cover each image once, about 60/20/20."""
    from pathlib import Path

    from maskwatch.data.voc import read_split_lists

    lists = read_split_lists(Path(__file__).resolve().parents[1] / "data" / "splits" / "scenes")
    sizes = {k: len(v) for k, v in lists.items()}
    assert sizes == {"train": 250, "valid": 84, "test": 84}
