"""Find the labelled images of a dataset, whatever its layout, as plain lists of samples.

Layouts understood (detected automatically):

* class folders: ``ROOT/<class>/*.jpg``, optionally under ``train/ valid/ test/``;
* Roboflow multiclass CSV: ``ROOT/<split>/_classes.csv`` (``filename, with_mask, without_mask``, one-hot);
* PASCAL VOC scenes with ``--crops``: ``ROOT/images/*.jpg`` + ``ROOT/annotations/*.xml`` (read by
  :mod:`maskwatch.data.voc`, the same reader as the detection evaluation); each box whose longest side is at
  least ``min_face`` px becomes one face crop (grown by the margin, :func:`~maskwatch.core.geometry.grow_box`).

A split-list folder (``split_lists=``, :func:`~maskwatch.data.voc.read_split_lists`) assigns a dataset
without split folders to train/valid/test by image stem; images in no list are left out and counted. A
dataset without a validation split gets one carved from ``train``; a dataset without any split is split
stratified with a seed. Nothing here decodes pixels except :func:`verify`, which drops unusable files and
records why, so that all problems are known before training starts.

Several datasets train together as a :class:`DatasetMix` (:func:`open_mix`): one class list for all, each
dataset keeping its own splits.
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

from maskwatch.core.contract import DEFAULT_CROP_MARGIN
from maskwatch.core.geometry import grow_box
from maskwatch.data.images import BadImageError, Skipped, check_images, has_image_extension, load_rgb
from maskwatch.data.source import DataSource
from maskwatch.data.voc import parse_voc, read_split_lists, voc_image_for

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
    left_out: Counter[str] = field(default_factory=Counter)  # usable data not taken, by reason (not bad files)

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

    def relabel(self, classes: Sequence[str]) -> LabeledSet:
        """The same data under another class list (names and order); samples of other classes are left out
        and counted."""
        index = {name: i for i, name in enumerate(classes)}
        mapping = {i: index.get(name) for i, name in enumerate(self.classes)}
        left_out = Counter(self.left_out)
        splits: dict[str, list[Sample]] = {}
        for split, samples in self.splits.items():
            kept = []
            for sample in samples:
                label = mapping[sample.label]
                if label is None:
                    left_out[f"label {self.classes[sample.label]!r} is not one of the classes"] += 1
                else:
                    kept.append(Sample(sample.path, label, sample.box))
            splits[split] = kept
        return LabeledSet(
            self.root, self.layout, list(classes), splits, list(self.skipped), self.predefined_splits, left_out
        )

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
    folder: Path,
    class_index: dict[str, int],
    skipped: list[Skipped],
    min_face: int,
    margin: float,
    left_out: Counter[str],
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
                left_out[f"label {obj.label!r} is not one of the classes"] += 1  # not a bad file
                continue
            x0, y0, x1, y1 = obj.box
            if max(x1 - x0, y1 - y0) < min_face:
                left_out[f"face smaller than min_face {min_face} px"] += 1
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
    split_lists: str | Path | None = None,
) -> LabeledSet:
    """Discover a dataset's samples. ``classes`` fixes names and order (e.g. a trained model's);
    ``split_lists`` is a folder of ``train.txt`` / ``valid.txt`` / ``test.txt`` image stems that assigns
    the images of a dataset without split folders (such as VOC scenes) to those splits."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    skipped: list[Skipped] = []
    left_out: Counter[str] = Counter()
    split_dirs = _split_dirs(root)
    containers = split_dirs or {"all": root}
    lists: dict[str, set[str]] | None = None
    if split_lists is not None:
        if split_dirs:
            raise DatasetError(
                f"{root} has its own split folders ({', '.join(split_dirs)}); split lists are for datasets without"
            )
        try:
            lists = read_split_lists(split_lists)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"split lists {split_lists}: {exc}") from exc

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
            splits[name] = _read_voc_crops(folder, class_index, skipped, min_face, crop_margin, left_out)
        elif layout == "roboflow":
            splits[name] = _read_roboflow(folder, found, class_index, skipped)
        else:
            splits[name] = _read_class_folders(folder, class_index, skipped)

    if sum(len(s) for s in splits.values()) == 0:
        raise DatasetError(f"{root}: no images found")

    if lists is not None:
        splits = _assign_by_lists(splits.pop("all"), lists, left_out)
    predefined = tuple(k for k in splits if k != "all")
    if "all" in splits:
        ratios = {"train": 1 - val_ratio - test_ratio, "valid": val_ratio, "test": test_ratio}
        splits = stratified_split(splits.pop("all"), ratios, seed)
    elif "train" in splits and "valid" not in splits and val_ratio > 0:
        carved = stratified_split(splits["train"], {"train": 1 - val_ratio, "valid": val_ratio}, seed)
        splits.update(carved)
    return LabeledSet(str(root), layout, class_names, splits, skipped, predefined, left_out)


def _assign_by_lists(
    samples: list[Sample], lists: dict[str, set[str]], left_out: Counter[str]
) -> dict[str, list[Sample]]:
    """Samples per split by their image's stem; images in no list (and listed images not found) are counted."""
    split_of = {stem: split for split, stems in lists.items() for stem in stems}
    out: dict[str, list[Sample]] = {split: [] for split in lists}
    unlisted: set[str] = set()
    found: set[str] = set()
    for sample in samples:
        stem = Path(sample.path).stem
        split = split_of.get(stem)
        if split is None:
            unlisted.add(sample.path)
            continue
        found.add(stem)
        out[split].append(sample)
    if unlisted:
        left_out["image in no split list"] += len(unlisted)
    missing = len(split_of) - len(found)
    if missing:
        left_out["listed image without usable faces or not in the dataset"] += missing
    return out


@dataclass
class DatasetPart:
    """One dataset of a mix: its name (logs, history, metrics), sampling weight and samples."""

    name: str
    weight: float
    data: LabeledSet


@dataclass
class DatasetMix:
    """Several datasets under one class list; each keeps its own train/valid/test. A split of the mix is
    the concatenation of the parts' splits, in part order; :meth:`groups` says which part each sample is from."""

    classes: list[str]
    parts: list[DatasetPart]

    @property
    def names(self) -> list[str]:
        return [part.name for part in self.parts]

    @property
    def weights(self) -> list[float]:
        return [part.weight for part in self.parts]

    @property
    def skipped(self) -> list[Skipped]:
        return [item for part in self.parts for item in part.data.skipped]

    @property
    def splits(self) -> dict[str, list[Sample]]:
        names = dict.fromkeys(name for part in self.parts for name in part.data.splits)
        return {name: self.split(name) for name in names}

    def split(self, name: str) -> list[Sample]:
        """The concatenated samples of split ``name`` over the parts that have it."""
        key = SPLIT_ALIASES.get(name, name)
        return [s for part in self.parts if key in part.data.splits or name == "all" for s in part.data.split(name)]

    def groups(self, name: str) -> np.ndarray:
        """The part index of each sample of :meth:`split` (``name``)."""
        key = SPLIT_ALIASES.get(name, name)
        sizes = [len(p.data.split(name)) if key in p.data.splits or name == "all" else 0 for p in self.parts]
        return np.repeat(np.arange(len(self.parts)), sizes)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split over all parts."""
        total: dict[str, dict[str, int]] = {}
        for part in self.parts:
            for split, per_class in part.data.counts().items():
                row = total.setdefault(split, dict.fromkeys(self.classes, 0))
                for name, n in per_class.items():
                    row[name] += n
        return total

    def verify(self, splits: Sequence[str] | None = None, workers: int = 2) -> list[Skipped]:
        """:meth:`LabeledSet.verify` for every part."""
        return [bad for part in self.parts for bad in part.data.verify(splits, workers=workers)]

    def require_trainable(self, splits: Sequence[str] = ("train", "valid")) -> None:
        """One dataset: :meth:`LabeledSet.require_trainable`. Several: every class must have images in each of
        ``splits`` of the mix (a part may hold some classes only, e.g. a folder of corrected faces)."""
        if len(self.parts) == 1:
            self.parts[0].data.require_trainable(splits)
            return
        if len(self.classes) < 2:
            raise DatasetError(f"need at least two classes, found {self.classes}")
        counts = self.counts()
        for split in splits:
            per_class = counts.get(split, {})
            empty = [c for c in self.classes if per_class.get(c, 0) == 0]
            if empty:
                raise DatasetError(
                    f"class {empty[0]!r} has no usable images in split {split!r} of any dataset "
                    f"({', '.join(self.names)})"
                )


def open_mix(
    sources: Sequence[DataSource],
    *,
    classes: Sequence[str] | None = None,
    val_ratio: float = 0.15,
    test_ratio: float = 0.15,
    seed: int = 0,
) -> DatasetMix:
    """Open every dataset of ``sources`` (options resolved, e.g. by ``TrainConfig.sources()``). The classes
    are ``classes`` when given, else one dataset's own (in its order) or the sorted union of several."""
    if not sources:
        raise DatasetError("no dataset given (--data DIR)")
    opened = []
    for source in sources:
        opened.append(
            open_dataset(
                source.path,
                crops=bool(source.crops),
                min_face=32 if source.min_face is None else source.min_face,
                crop_margin=DEFAULT_CROP_MARGIN if source.crop_margin is None else source.crop_margin,
                val_ratio=val_ratio,
                test_ratio=test_ratio,
                seed=seed,
                split_lists=source.splits,
            )
        )
    if classes is not None:
        names = list(classes)
    elif len(opened) == 1:
        names = opened[0].classes
    else:
        names = sorted({c for data in opened for c in data.classes})
    parts = []
    for source, data in zip(sources, opened):
        if data.classes != names:
            data = data.relabel(names)
        parts.append(DatasetPart(source.name or Path(source.path).name, source.weight, data))
    return DatasetMix(names, parts)
