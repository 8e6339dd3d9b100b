"""Find the labelled images of a dataset, whatever its layout, as plain lists of samples.

Layouts understood (detected automatically):

* class folders: ``ROOT/<class>/*.jpg``, optionally under ``train/ valid/ test/``;
* Roboflow multiclass CSV: ``ROOT/<split>/_classes.csv`` (``filename, with_mask, without_mask``, one-hot);
* PASCAL VOC scenes with ``--crops``: ``ROOT/images/*.jpg`` + ``ROOT/annotations/*.xml`` (read by
  :mod:`maskwatch.data.voc`, the same reader as the detection evaluation); each box whose longest side is at
  least ``min_face`` px becomes one face crop (grown by the margin, :func:`~maskwatch.detection.geometry.grow_box`).

A dataset without a validation split gets one carved from ``train``; a dataset without any split is split
stratified with a seed. Nothing here decodes pixels except :func:`verify`, which drops unusable files and
records why, so that all problems are known before training starts.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from maskwatch.config import DEFAULT_CROP_MARGIN
from maskwatch.data.images import BadImageError, Skipped, check_images, has_image_extension, load_rgb
from maskwatch.data.voc import parse_voc, voc_image_for
from maskwatch.detection.geometry import grow_box

SPLIT_ALIASES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
ROBOFLOW_CSV = "_classes.csv"


class DatasetError(ValueError):
    """The dataset cannot be used as asked; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled image, or one face region (``box`` = left, top, right, bottom) of an image."""

    path: str
    label: int
    box: tuple[int, int, int, int] | None = None

    def load(self) -> Image.Image:
        """Decode the sample as RGB (raises BadImageError for unusable files)."""
        return self.crop(load_rgb(self.path))

    def crop(self, image: Image.Image) -> Image.Image:
        """This sample's region of its already decoded image (the whole image when there is no box)."""
        if self.box is None:
            return image
        left, top, right, bottom = self.box
        width, height = image.size
        box = (max(0, left), max(0, top), min(width, right), min(height, bottom))
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            raise BadImageError(self.path, f"face box {self.box} lies outside the {width}x{height} image")
        return image.crop(box)


@dataclass
class LabeledSet:
    """A dataset's classes and samples per split, plus every file that was left out and why."""

    root: str
    layout: str
    classes: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[Skipped] = field(default_factory=list)
    predefined_splits: tuple[str, ...] = ()

    def split(self, name: str) -> list[Sample]:
        """Samples of one split; ``all`` is every sample of every split."""
        if name == "all":
            return [s for samples in self.splits.values() for s in samples]
        key = SPLIT_ALIASES.get(name, name)
        if key not in self.splits:
            raise DatasetError(f"{self.root} has no split {name!r}; it has {sorted(self.splits)}")
        return self.splits[key]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split, for logs and reports."""
        result = {}
        for name, samples in self.splits.items():
            tally = Counter(s.label for s in samples)
            result[name] = {c: tally.get(i, 0) for i, c in enumerate(self.classes)}
        return result

    def verify(self, splits: Sequence[str] | None = None, workers: int = 2) -> list[Skipped]:
        """Decode every image of ``splits`` (default all) and drop unusable ones; return them."""
        names = list(self.splits) if splits is None else [SPLIT_ALIASES.get(s, s) for s in splits]
        paths = sorted({s.path for n in names for s in self.splits.get(n, [])})
        bad = check_images(paths, workers=workers)
        bad_paths = {b.path for b in bad}
        for name in names:
            if name in self.splits:
                self.splits[name] = [s for s in self.splits[name] if s.path not in bad_paths]
        self.skipped.extend(bad)
        return bad

    def require_trainable(self, splits: Sequence[str] = ("train", "valid")) -> None:
        """Raise DatasetError unless every class has images in each of ``splits``."""
        if len(self.classes) < 2:
            raise DatasetError(f"{self.root}: need at least two classes, found {self.classes}")
        counts = self.counts()
        for split in splits:
            per_class = counts.get(split)
            if not per_class or sum(per_class.values()) == 0:
                raise DatasetError(f"{self.root}: split {split!r} has no usable images")
            present = [c for c, n in per_class.items() if n > 0]
            empty = [c for c, n in per_class.items() if n == 0]
            if empty:
                only = f"split {split!r} holds only one class ({present[0]!r}): " if len(present) == 1 else ""
                raise DatasetError(f"{self.root}: {only}class {empty[0]!r} has no usable images in split {split!r}")


def _split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        key = SPLIT_ALIASES.get(child.name.lower())
        if child.is_dir() and key and key not in found:
            found[key] = child
    return found


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_class_folders(folder: Path, class_index: dict[str, int], skipped: list[Skipped]) -> list[Sample]:
    samples = []
    for class_dir in _class_folders(folder):
        if class_dir.name not in class_index:
            skipped.append(Skipped(str(class_dir), "class not known to the model"))
            continue
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if not has_image_extension(path):
                skipped.append(Skipped(str(path), f"unknown image extension {path.suffix!r}"))
                continue
            samples.append(Sample(str(path), class_index[class_dir.name]))
    return samples


def _roboflow_header(csv_path: Path) -> list[str]:
    with csv_path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    names = [h.strip() for h in header]
    if len(names) < 3 or names[0].lower() != "filename":
        raise DatasetError(f"{csv_path}: expected a header 'filename, <class>, <class>, ...', got {header}")
    return names[1:]


def _read_roboflow(
    folder: Path, csv_classes: list[str], class_index: dict[str, int], skipped: list[Skipped]
) -> list[Sample]:
    csv_path = folder / ROBOFLOW_CSV
    header = _roboflow_header(csv_path)
    if header != csv_classes:
        raise DatasetError(f"{csv_path}: classes {header} differ from the other splits' {csv_classes}")
    samples = []
    with csv_path.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for line_no, row in enumerate(reader, start=2):
            row = [cell.strip() for cell in row]
            if not row or not row[0]:
                continue
            where = f"{csv_path}:{line_no}"
            path = folder / row[0]
            try:
                hot = [int(float(v)) for v in row[1:]]
            except ValueError:
                skipped.append(Skipped(where, f"non-numeric label in row {row}"))
                continue
            if len(hot) != len(header) or sum(hot) != 1 or any(v not in (0, 1) for v in hot):
                skipped.append(Skipped(where, f"row is not one-hot over {len(header)} classes: {row}"))
                continue
            name = header[hot.index(1)]
            if not path.is_file():
                skipped.append(Skipped(str(path), f"listed in {csv_path.name} line {line_no} but missing"))
                continue
            if name not in class_index:
                skipped.append(Skipped(str(path), f"class {name!r} not known to the model"))
                continue
            if not has_image_extension(path):
                skipped.append(Skipped(str(path), f"unknown image extension {path.suffix!r}"))
                continue
            samples.append(Sample(str(path), class_index[name]))
    return samples


def _voc_classes(folder: Path) -> list[str]:
    names: set[str] = set()
    for xml_path in sorted((folder / "annotations").glob("*.xml")):
        try:
            names.update(o.label for o in parse_voc(xml_path).objects)
        except (ET.ParseError, ValueError):
            continue
    return sorted(names)


def _read_voc_crops(
    folder: Path, class_index: dict[str, int], skipped: list[Skipped], min_face: int, margin: float
) -> list[Sample]:
    images_dir, annotations_dir = folder / "images", folder / "annotations"
    samples = []
    for xml_path in sorted(annotations_dir.glob("*.xml")):
        try:
            annotation = parse_voc(xml_path)
            image_path = voc_image_for(annotation, images_dir)
        except (ET.ParseError, ValueError) as exc:
            skipped.append(Skipped(str(xml_path), f"unreadable annotation ({exc})"))
            continue
        if image_path is None:
            skipped.append(Skipped(str(xml_path), "no image with this annotation's name"))
            continue
        for obj in annotation.degenerate:
            skipped.append(Skipped(str(xml_path), f"degenerate box {obj.box} of {obj.label!r} (no width or height)"))
        for obj in annotation.objects:
            if obj.label not in class_index:
                continue  # counted in open_dataset's summary, not a bad file
            x0, y0, x1, y1 = obj.box
            if max(x1 - x0, y1 - y0) < min_face:
                continue
            samples.append(Sample(str(image_path), class_index[obj.label], grow_box(obj.box, margin)))
    return samples


def stratified_split(samples: list[Sample], ratios: dict[str, float], seed: int) -> dict[str, list[Sample]]:
    """Split samples per class with a seeded shuffle; the first key takes the remainder."""
    rng = np.random.default_rng(seed)
    names = list(ratios)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    by_label: dict[int, list[Sample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        start = 0
        for name in names[1:]:
            take = round(ratios[name] * len(group))
            out[name].extend(group[i] for i in order[start : start + take])
            start += take
        out[names[0]].extend(group[i] for i in order[start:])
    return out


def open_dataset(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    crops: bool = False,
    min_face: int = 32,
    crop_margin: float = DEFAULT_CROP_MARGIN,
    val_ratio: float = 0.15,
    test_ratio: float = 0.15,
    seed: int = 0,
) -> LabeledSet:
    """Discover a dataset's samples. ``classes`` fixes names and order (e.g. a trained model's)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    skipped: list[Skipped] = []
    split_dirs = _split_dirs(root)
    containers = split_dirs or {"all": root}

    if not crops and any((v / "annotations").is_dir() and (v / "images").is_dir() for v in containers.values()):
        raise DatasetError(
            f"{root} is a PASCAL VOC scenes folder (images/ + annotations/), not class folders: add --crops to "
            "use the face crops cut from its boxes"
        )
    if crops:
        layout = "voc"
        containers = {k: v for k, v in containers.items() if (v / "annotations").is_dir()}
        if not containers:
            raise DatasetError(f"{root}: --crops needs images/ and annotations/ (PASCAL VOC) folders")
        found = sorted({c for folder in containers.values() for c in _voc_classes(folder)})
    elif any((folder / ROBOFLOW_CSV).is_file() for folder in containers.values()):
        layout = "roboflow"
        containers = {k: v for k, v in containers.items() if (v / ROBOFLOW_CSV).is_file()}
        found = _roboflow_header(next(iter(containers.values())) / ROBOFLOW_CSV)
    else:
        layout = "folders"
        found = sorted({p.name for folder in containers.values() for p in _class_folders(folder)})

    class_names = list(classes) if classes is not None else found
    if not class_names:
        raise DatasetError(f"{root}: no classes found (expected class folders, {ROBOFLOW_CSV} or VOC annotations)")
    class_index = {name: i for i, name in enumerate(class_names)}

    splits: dict[str, list[Sample]] = {}
    for name, folder in containers.items():
        if layout == "voc":
            splits[name] = _read_voc_crops(folder, class_index, skipped, min_face, crop_margin)
        elif layout == "roboflow":
            splits[name] = _read_roboflow(folder, found, class_index, skipped)
        else:
            splits[name] = _read_class_folders(folder, class_index, skipped)

    if sum(len(s) for s in splits.values()) == 0:
        raise DatasetError(f"{root}: no images found")

    predefined = tuple(k for k in splits if k != "all")
    if "all" in splits:
        ratios = {"train": 1 - val_ratio - test_ratio, "valid": val_ratio, "test": test_ratio}
        splits = stratified_split(splits.pop("all"), ratios, seed)
    elif "train" in splits and "valid" not in splits and val_ratio > 0:
        carved = stratified_split(splits["train"], {"train": 1 - val_ratio, "valid": val_ratio}, seed)
        splits.update(carved)
    return LabeledSet(str(root), layout, class_names, splits, skipped, predefined)
