"""The one PASCAL VOC annotation reader, for the face-crop datasets and for the detection evaluation.

Rule (the same for training crops and for scoring detections, so both see the same faces):

* an ``<object>`` needs a ``<name>`` and a ``<bndbox>``, else it is not an object (left out silently, as
  VOC tools do);
* coordinates are floats, taken as written: VOC's 1-based pixel indices are not shifted and nothing is
  rounded here (rounding happens once, where a crop is cut: :func:`maskwatch.core.geometry.grow_box`);
* corners given the wrong way round (``xmax < xmin``) are swapped into order;
* a missing or non-numeric coordinate makes the file unreadable (``ValueError``, the caller reports it);
* a box with no width or no height is *degenerate*: it is reported in :attr:`VocAnnotation.degenerate` and
  left out of :attr:`VocAnnotation.objects`, since it can neither be cropped nor matched.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from maskwatch.core.geometry import Box

__all__ = [
    "SPLIT_LIST_NAMES",
    "VocAnnotation",
    "VocObject",
    "parse_voc",
    "read_split_lists",
    "read_voc",
    "voc_image_for",
]

# split -> file of a split-list folder (VOC ImageSets style: one image stem a line; e.g. data/splits/scenes)
SPLIT_LIST_NAMES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


@dataclass(frozen=True)
class VocObject:
    """One annotated object: its class name and its box ``(x0, y0, x1, y1)``, corners in order."""

    label: str
    box: Box


@dataclass(frozen=True)
class VocAnnotation:
    """A parsed annotation file: the image it names, its usable objects and its degenerate boxes."""

    path: str
    filename: str | None
    objects: list[VocObject] = field(default_factory=list)
    degenerate: list[VocObject] = field(default_factory=list)


def parse_voc(path: str | os.PathLike[str]) -> VocAnnotation:
    """Parse a VOC annotation by the module's rule. Raises ``ET.ParseError`` (a ``SyntaxError``) for
    malformed XML and ``ValueError`` for an incomplete box."""
    root = ET.parse(path).getroot()
    objects: list[VocObject] = []
    degenerate: list[VocObject] = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None or not name:
            continue
        try:
            x0, y0, x1, y1 = (float((bb.findtext(k) or "nan").strip()) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise ValueError(f"{path}: object {name!r} has a non-numeric bndbox ({exc})") from exc
        if any(math.isnan(v) or math.isinf(v) for v in (x0, y0, x1, y1)):
            raise ValueError(f"{path}: object {name!r} has an incomplete bndbox")
        item = VocObject(name, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        (degenerate if x0 == x1 or y0 == y1 else objects).append(item)
    filename = (root.findtext("filename") or "").strip() or None
    return VocAnnotation(str(path), filename, objects, degenerate)


def read_voc(path: str | os.PathLike[str]) -> list[tuple[str, Box]]:
    """The usable objects of an annotation as ``(class_name, box)`` pairs, in file order (:func:`parse_voc`)."""
    return [(o.label, o.box) for o in parse_voc(path).objects]


def voc_image_for(annotation: VocAnnotation | str | os.PathLike[str], images_dir: Path) -> Path | None:
    """The image an annotation describes: the file its ``<filename>`` names, else the same stem with any
    image extension."""
    from maskwatch.data.images import has_image_extension

    if not isinstance(annotation, VocAnnotation):
        annotation = parse_voc(annotation)
    images_dir = Path(images_dir)
    if annotation.filename:
        named = images_dir / annotation.filename
        if named.is_file():
            return named
    for candidate in sorted(images_dir.glob(Path(annotation.path).stem + ".*")):
        if has_image_extension(candidate):
            return candidate
    return None


def read_split_lists(folder: str | os.PathLike[str]) -> dict[str, set[str]]:
    """The image stems of each split of a split-list folder (``train.txt``, ``valid.txt``, ``test.txt``, one
    stem a line, ``#`` comments allowed; a missing file is an absent split). Raises ``ValueError`` when the
    folder holds none of them or a stem is listed in two splits (a test image must never be trained on)."""
    folder = Path(folder)
    lists: dict[str, set[str]] = {}
    for split, name in SPLIT_LIST_NAMES.items():
        path = folder / name
        if path.is_file():
            lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
            lists[split] = {Path(line).stem for line in lines if line}
    if not lists:
        raise ValueError(f"{folder} holds no split list ({', '.join(SPLIT_LIST_NAMES.values())})")
    seen: dict[str, str] = {}
    for split, stems in lists.items():
        for stem in stems:
            if stem in seen:
                raise ValueError(f"{folder}: image {stem!r} is listed in both {seen[stem]!r} and {split!r}")
            seen[stem] = split
    return lists
