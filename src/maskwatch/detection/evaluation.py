"""Detection evaluation against PASCAL VOC boxes (torch-free).

Two views of a detector's output on annotated scenes:

* **face finding**, class-agnostic: greedy IoU matching per image, then recall by face size (longest side
  of the ground-truth box) and precision, at IoU ≥ 0.5 and ≥ 0.3, plus the error of the per-image face count;
* **per-class AP@0.5** (and their mean, mAP) over a given class list, computed with ``pycocotools``
  (COCO-style: 101-point interpolated precision, at the single IoU threshold 0.5, one area range, no
  per-image cap on detections). This is close to, but not the same as, VOC2010's all-point AP;
* **privacy coverage**: the share of annotated faces whose box is at least :data:`PRIVACY_COVER` covered
  by what :func:`maskwatch.detection.privacy.blur_faces` blurs, by face size (the buckets of ``recall``),
  and the share of the image blurred (over-blurring is a cost too). On videos made from the images:
  :func:`maskwatch.stream.privacy.evaluate_privacy_video`.

:func:`evaluate_voc` runs the scene pipeline (:class:`~maskwatch.detection.pipeline.MaskDetector`) over a
VOC folder and reports both; :mod:`maskwatch.detection.report_page` lays its numbers out as HTML.

Formats (the same as torchmetrics' ``MeanAveragePrecision``):

* a prediction per image: ``{"boxes": (N, 4) x0 y0 x1 y1 pixels, "scores": (N,), "labels": (N,)}``;
  ``labels`` may be class indices into ``classes`` or class names, and may be omitted for a face detector
  without a classifier (then only the class-agnostic metrics are computed);
* a ground truth per image: ``{"boxes": (M, 4), "labels": (M,)}``, or what
  :func:`maskwatch.data.voc.read_voc` returns (the one VOC reader, shared with the face-crop datasets).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maskwatch.core.geometry import Box, box_iou
from maskwatch.data.voc import parse_voc, read_voc

if TYPE_CHECKING:
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.detection.results import FrameResult

__all__ = [
    "AP_METHOD",
    "PRIVACY_COVER",
    "RANKING",
    "SIZE_BUCKETS",
    "ImageSubset",
    "average_precision",
    "evaluate_detection",
    "evaluate_voc",
    "face_coverage",
    "face_metrics",
    "match_greedy",
    "privacy_coverage",
    "privacy_policy",
    "read_voc",
    "score_results",
    "voc_target",
]

# name → [low, high) on the longest side of the ground-truth box, in pixels
SIZE_BUCKETS: dict[str, tuple[float, float]] = {
    "<20": (0, 20),
    "20-32": (20, 32),
    "32-64": (32, 64),
    ">=64": (64, math.inf),
    ">=20": (20, math.inf),
    "all": (0, math.inf),
}


PRIVACY_COVER = 0.9  # a face is hidden when at least this share of its annotated box is blurred


def voc_target(objects: Sequence[tuple[str, Box]]) -> dict[str, Any]:
    """Turn :func:`~maskwatch.data.voc.read_voc` output into a ``{"boxes", "labels"}`` ground-truth dict
    (labels = names)."""
    boxes = np.array([b for _, b in objects], dtype=np.float64).reshape(-1, 4)
    return {"boxes": boxes, "labels": [name for name, _ in objects]}


def match_greedy(
    pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching: by falling score, each prediction takes the free ground truth it overlaps
    most, if that IoU is ≥ ``iou_threshold``. Returns (gt_matched (M,), pred_matched (N,)) booleans."""
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_matched = np.zeros(len(gt_boxes), dtype=bool)
    pred_matched = np.zeros(len(pred_boxes), dtype=bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return gt_matched, pred_matched
    ious = box_iou(pred_boxes, gt_boxes)
    for i in np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable"):
        candidates = np.where(gt_matched, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou_threshold:
            gt_matched[j] = pred_matched[i] = True
    return gt_matched, pred_matched


def _as_target(gt: Mapping[str, Any] | Sequence[tuple[str, Box]]) -> Mapping[str, Any]:
    return gt if isinstance(gt, Mapping) else voc_target(gt)


def _boxes(d: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(d.get("boxes", []), dtype=np.float64).reshape(-1, 4)


def _scores(d: Mapping[str, Any], n: int) -> np.ndarray:
    scores = d.get("scores")
    return np.ones(n) if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)


def face_metrics(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any] | Sequence[tuple[str, Box]]],
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Class-agnostic recall per size bucket, precision and matched counts at one IoU threshold."""
    hit = dict.fromkeys(SIZE_BUCKETS, 0)
    total = dict.fromkeys(SIZE_BUCKETS, 0)
    tp = n_pred = 0
    for pred, gt in zip(predictions, ground_truths, strict=True):
        gt_boxes, pred_boxes = _boxes(_as_target(gt)), _boxes(pred)
        scores = _scores(pred, len(pred_boxes))
        gt_matched, pred_matched = match_greedy(pred_boxes, scores, gt_boxes, iou_threshold)
        sizes = np.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1])
        for name, (lo, hi) in SIZE_BUCKETS.items():
            in_bucket = (sizes >= lo) & (sizes < hi)
            total[name] += int(in_bucket.sum())
            hit[name] += int((in_bucket & gt_matched).sum())
        tp += int(pred_matched.sum())
        n_pred += len(pred_boxes)
    recall = {name: (hit[name] / total[name] if total[name] else math.nan) for name in SIZE_BUCKETS}
    return {
        "recall": recall,
        "precision": tp / n_pred if n_pred else math.nan,
        "n_faces_by_bucket": total,
        "true_positives": tp,
        "n_predictions": n_pred,
    }


def face_coverage(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M,) the share of each box's pixels (those whose centre lies inside it; a box narrower than a pixel
    is the pixel under its centre) that ``mask`` (an image's blurred pixels, H x W bool) covers."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    h, w = mask.shape
    out = np.zeros(len(boxes))
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        left, right = max(0, math.ceil(x0 - 0.5)), min(w, math.floor(x1 - 0.5) + 1)
        top, bottom = max(0, math.ceil(y0 - 0.5)), min(h, math.floor(y1 - 0.5) + 1)
        if right <= left or bottom <= top:
            cx, cy = int(min(max((x0 + x1) / 2, 0), w - 1)), int(min(max((y0 + y1) / 2, 0), h - 1))
            out[k] = float(mask[cy, cx])
        else:
            out[k] = float(mask[top:bottom, left:right].mean())
    return out


def privacy_coverage(
    results: Sequence[FrameResult], ground_truths: Sequence[Mapping[str, Any] | Sequence[tuple[str, Box]]]
) -> dict[str, Any]:
    """How well the blur hides the annotated faces: ``privacy_coverage`` (size bucket -> share of faces whose
    box is at least :data:`PRIVACY_COVER` blurred, NaN for an empty bucket), ``blurred_area_share`` (blurred
    pixels / all pixels) and ``n_faces_by_bucket``. The blurred pixels are exactly those
    :func:`~maskwatch.detection.privacy.blur_faces` changes (:func:`~maskwatch.detection.privacy.blur_regions`
    of each result, :func:`~maskwatch.detection.privacy.blur_mask`)."""
    from maskwatch.detection.privacy import blur_mask, blur_regions

    hit = dict.fromkeys(SIZE_BUCKETS, 0)
    total = dict.fromkeys(SIZE_BUCKETS, 0)
    blurred = pixels = 0
    for result, gt in zip(results, ground_truths, strict=True):
        boxes = _boxes(_as_target(gt))
        mask = blur_mask(blur_regions(result), result.width, result.height)
        blurred += int(mask.sum())
        pixels += mask.size
        hidden = face_coverage(mask, boxes) >= PRIVACY_COVER
        sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        for name, (lo, hi) in SIZE_BUCKETS.items():
            in_bucket = (sizes >= lo) & (sizes < hi)
            total[name] += int(in_bucket.sum())
            hit[name] += int((in_bucket & hidden).sum())
    return {
        "privacy_coverage": {k: (hit[k] / total[k] if total[k] else math.nan) for k in SIZE_BUCKETS},
        "blurred_area_share": blurred / pixels if pixels else math.nan,
        "n_faces_by_bucket": total,
    }


def _label_index(label: Any, classes: Sequence[str]) -> int:
    if isinstance(label, str):
        if label not in classes:
            raise ValueError(f"label {label!r} is not one of the classes {list(classes)}")
        return classes.index(label)
    index = int(label)
    if not 0 <= index < len(classes):
        raise ValueError(f"label index {index} is outside the {len(classes)} classes")
    return index


def average_precision(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any] | Sequence[tuple[str, Box]]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Per-class AP at one IoU threshold with pycocotools (COCO 101-point interpolation).

    A class without any ground-truth box gets NaN. Ground-truth labels not in ``classes`` are ignored (and
    so are predictions with such labels). Pass ``classes=["face"]`` with all labels 0 for a face-only AP.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = list(classes)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    max_dets = 1
    for image_id, (pred, gt) in enumerate(zip(predictions, ground_truths, strict=True), start=1):
        images.append({"id": image_id})
        target = _as_target(gt)
        gt_boxes = _boxes(target)
        for box, label in zip(gt_boxes, list(target.get("labels", [])), strict=True):
            if isinstance(label, str) and label not in classes:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": _label_index(label, classes) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
        pred_boxes = _boxes(pred)
        if "labels" not in pred:
            raise ValueError("average_precision needs predicted 'labels'")
        scores = _scores(pred, len(pred_boxes))
        labels = list(pred["labels"])
        max_dets = max(max_dets, len(pred_boxes))
        for box, score, label in zip(pred_boxes, scores, labels, strict=True):
            if isinstance(label, str) and label not in classes:
                continue
            x0, y0, x1, y1 = (float(v) for v in box)
            results.append(
                {
                    "image_id": image_id,
                    "category_id": _label_index(label, classes) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    has_gt = dict.fromkeys(range(1, len(classes) + 1), False)
    for ann in annotations:
        has_gt[ann["category_id"]] = True
    if not results:
        return {name: (0.0 if has_gt[k + 1] else math.nan) for k, name in enumerate(classes)}

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.params.iouThrs = np.array([iou_threshold])
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"]  # [iou, recall points, class, area, max dets]
    ap: dict[str, float] = {}
    for k, name in enumerate(classes):
        p = precision[0, :, k, 0, 0]
        ap[name] = float(p.mean()) if has_gt[k + 1] and (p > -1).all() else math.nan
    return ap


def evaluate_detection(
    predictions: Sequence[Mapping[str, Any]],
    ground_truths: Sequence[Mapping[str, Any] | Sequence[tuple[str, Box]]],
    classes: Sequence[str],
) -> dict[str, Any]:
    """All detection metrics in one dict.

    Keys: ``map50`` (mean of the defined per-class APs; None without predicted labels), ``ap50``
    (class → AP@0.5), ``ap50_face`` (class-agnostic AP@0.5), ``recall`` / ``recall_iou30`` (size bucket →
    recall at IoU 0.5 / 0.3), ``precision`` / ``precision_iou30``, ``n_faces_by_bucket``, ``n_images``,
    ``n_faces``, ``n_predictions``, ``count_mae`` (mean absolute error of the per-image face count).
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} ground truths")
    targets = [_as_target(gt) for gt in ground_truths]
    at50 = face_metrics(predictions, targets, 0.5)
    at30 = face_metrics(predictions, targets, 0.3)
    counts_gt = np.array([len(_boxes(t)) for t in targets], dtype=np.float64)
    counts_pred = np.array([len(_boxes(p)) for p in predictions], dtype=np.float64)

    faces_pred = [
        {"boxes": _boxes(p), "scores": _scores(p, len(_boxes(p))), "labels": [0] * len(_boxes(p))} for p in predictions
    ]
    faces_gt = [{"boxes": _boxes(t), "labels": [0] * len(_boxes(t))} for t in targets]
    ap_face = average_precision(faces_pred, faces_gt, ["face"])["face"]

    labelled = len(predictions) > 0 and all("labels" in p for p in predictions)
    ap50 = average_precision(predictions, targets, classes) if labelled else {}
    defined = [v for v in ap50.values() if not math.isnan(v)]
    return {
        "map50": float(np.mean(defined)) if defined else None,
        "ap50": ap50,
        "ap50_face": ap_face,
        "recall": at50["recall"],
        "recall_iou30": at30["recall"],
        "precision": at50["precision"],
        "precision_iou30": at30["precision"],
        "n_faces_by_bucket": at50["n_faces_by_bucket"],
        "n_images": len(targets),
        "n_faces": int(counts_gt.sum()),
        "n_predictions": int(counts_pred.sum()),
        "count_mae": float(np.abs(counts_pred - counts_gt).mean()) if len(targets) else math.nan,
        "ap_method": "pycocotools COCOeval, 101-point interpolated, IoU 0.5, no detection cap",
    }


# --------------------------------------------------------------------------------------------------------
# evaluation against VOC boxes

AP_METHOD = (
    "COCO-style: pycocotools COCOeval, 101-point interpolated precision, IoU 0.5, one area range, no cap on "
    "detections per image"
)
RANKING = (
    "every candidate face (fused detector score > 0, each view at the candidate threshold) is scored for each "
    "class as detector score x class probability, as two-stage detectors report per-class scores; "
    "ap50_argmax ranks only each face's predicted class by the same product"
)


def score_results(
    results: Sequence[FrameResult],
    targets: Sequence[Mapping[str, Any]],
    *,
    classes: Sequence[str],
    model_classes: Sequence[str],
    score_threshold: float,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """The numbers of :func:`evaluate_voc` for pipeline results (every candidate face, as
    ``detect(score_threshold=0)`` returns them) against their images' ground truths: one home for the
    scoring, so studies that build results another way (cached detector views) score them identically.
    NaN stands for undefined (JSON: null)."""
    classes = list(classes)
    gt_labels = {label for t in targets for label in t["labels"]}
    ap_classes = classes + [c for c in model_classes if c not in classes and c in gt_labels]

    operating, per_class, argmax = [], [], []
    for result in results:
        faces = result.faces
        labels = faces.label_names
        kept = np.flatnonzero((faces.scores >= score_threshold) & (faces.confidence >= min_confidence))
        operating.append(
            {"boxes": faces.boxes[kept], "scores": faces.scores[kept], "labels": [labels[i] for i in kept]}
        )
        hyp_scores = [
            faces.scores * faces.probabilities[:, faces.classes.index(name)]
            if name in faces.classes
            else np.zeros(len(faces))
            for name in ap_classes
        ]
        per_class.append(
            {
                "boxes": np.concatenate([faces.boxes] * len(ap_classes)) if ap_classes else np.zeros((0, 4)),
                "scores": np.concatenate(hyp_scores) if hyp_scores else np.zeros(0),
                "labels": [name for name in ap_classes for _ in range(len(faces))],
            }
        )
        argmax.append({"boxes": faces.boxes, "scores": faces.confidence, "labels": labels})

    face = evaluate_detection(operating, targets, classes=[])
    ap50 = average_precision(per_class, targets, ap_classes)
    ap50_argmax = average_precision(argmax, targets, ap_classes)
    faces_pred = [{"boxes": r.faces.boxes, "scores": r.faces.scores, "labels": [0] * len(r.faces)} for r in results]
    faces_gt = [{"boxes": t["boxes"], "labels": [0] * len(t["boxes"])} for t in targets]
    ap_face = average_precision(faces_pred, faces_gt, ["face"])["face"]

    privacy = privacy_coverage(results, targets)

    def mean_of(ap: Mapping[str, float], over: Sequence[str] = classes) -> float | None:
        values = [ap[c] for c in over if c in ap and not math.isnan(ap[c])]
        return float(np.mean(values)) if values else None

    return {
        "n_faces": face["n_faces"],
        "n_faces_by_bucket": face["n_faces_by_bucket"],
        "map50": mean_of(ap50),
        "ap50": ap50,
        "map50_argmax": mean_of(ap50_argmax),
        "ap50_argmax": ap50_argmax,
        "ap50_face": ap_face,
        "map_classes": classes,
        "map50_all": mean_of(ap50, ap_classes),  # every class scored (a third class included)
        "map_all_classes": ap_classes,
        "recall": face["recall"],
        "recall_iou30": face["recall_iou30"],
        "precision": face["precision"],
        "precision_iou30": face["precision_iou30"],
        "count_mae": face["count_mae"],
        "n_predictions": face["n_predictions"],
        "operating_point": {"score_threshold": score_threshold, "min_confidence": min_confidence},
        "privacy_coverage": privacy["privacy_coverage"],
        "blurred_area_share": privacy["blurred_area_share"],
    }


def privacy_policy(detector: MaskDetector) -> dict[str, Any]:
    """What ``privacy_coverage`` measured: the blur's settings (recorded with the numbers)."""
    from maskwatch.detection.privacy import BLUR_HOLD_S, HEAD_GROW

    return {
        "cover": PRIVACY_COVER,
        "blur_threshold": getattr(detector.active_finder, "score_threshold", None),
        "head_grow": {"sides": HEAD_GROW[0], "top": HEAD_GROW[1], "bottom": HEAD_GROW[2]},
        "hold_s": BLUR_HOLD_S,
        "what": "a face is hidden when at least `cover` of its annotated box is blurred; every detector "
        "candidate down to `blur_threshold` is blurred, grown by `head_grow` (fractions of the box), and in "
        "video each lost privacy track's predicted box for `hold_s`",
    }


def _clean(value: Any) -> Any:
    """NaN → None, recursively through dicts (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ImageSubset:
    """The images of a VOC folder to score (by stem), and where that list came from, so a result says
    which images it is about (a split must never be mistaken for the whole set)."""

    stems: frozenset[str]
    split: str | None = None  # e.g. "valid"
    source: str | None = None  # e.g. "data/splits/scenes/valid.txt"

    @classmethod
    def from_split_lists(cls, folder: str | os.PathLike[str], split: str) -> ImageSubset:
        """One split of a split-list folder (:func:`maskwatch.data.voc.read_split_lists`); ``ValueError``
        when the folder has no such split."""
        from maskwatch.data.voc import SPLIT_LIST_NAMES, read_split_lists

        lists = read_split_lists(folder)
        if split not in lists:
            raise ValueError(f"{folder} has no {split!r} split (it has: {', '.join(sorted(lists))})")
        return cls(frozenset(lists[split]), split, str(Path(folder) / SPLIT_LIST_NAMES[split]))

    def describe(self) -> dict[str, Any]:
        """What goes in the metrics JSON."""
        return {"split": self.split, "list": self.source, "n_listed": len(self.stems)}


def _subset(images: ImageSubset | Collection[str] | None) -> ImageSubset | None:
    if images is None or isinstance(images, ImageSubset):
        return images
    if isinstance(images, str):
        raise TypeError("images must be a collection of image stems, not one string")
    return ImageSubset(frozenset(Path(stem).stem for stem in images))


def evaluate_voc(
    detector: MaskDetector,
    data: str | os.PathLike[str],
    *,
    classes: Sequence[str] = ("with_mask", "without_mask"),
    images: ImageSubset | Collection[str] | None = None,
    limit: int | None = None,
    on_progress: Any = None,
) -> dict[str, Any]:
    """Run the pipeline on a VOC folder (``images/`` + ``annotations/``) and score it.

    Face finding (class-agnostic, every annotated box is a face): recall by face size and precision at
    IoU ≥ 0.5 and ≥ 0.3, and the mean absolute error of the per-image face count, all at the operating point
    (faces with detector score ≥ ``detector.score_threshold``). Per-class AP@0.5 and their mean over
    ``classes`` (``map50``) rank every candidate face (see :data:`RANKING`, :data:`AP_METHOD`); a class of
    the model beyond ``classes`` that the annotations use (a third class) gets its AP too, and ``map50_all``
    averages every class scored.

    ``images``: score only these images (stems, or an :class:`ImageSubset` such as a split), recorded in the
    result's ``images``; a listed image without an annotation is reported in ``skipped``.
    """
    from maskwatch.data.images import BadImageError, decode_rgb
    from maskwatch.data.voc import voc_image_for

    root = Path(data)
    subset = _subset(images)
    xmls = sorted((root / "annotations").glob("*.xml"))
    skipped: list[dict[str, str]] = []
    if subset is not None:
        present = {xml.stem for xml in xmls}
        skipped.extend(
            {"path": str(root / "annotations" / f"{stem}.xml"), "reason": "listed image without an annotation"}
            for stem in sorted(subset.stems - present)
        )
        xmls = [xml for xml in xmls if xml.stem in subset.stems]
    if limit:
        xmls = xmls[:limit]
    if not xmls:
        where = "" if subset is None else f" among the {len(subset.stems)} listed images"
        raise ValueError(f"{root}: no VOC annotations (annotations/*.xml){where}")
    classes = list(classes)
    targets: list[dict[str, Any]] = []
    results: list[FrameResult] = []
    degenerate: list[dict[str, Any]] = []
    seconds = 0.0
    for done, xml in enumerate(xmls, start=1):
        try:
            annotation = parse_voc(xml)
            image_path = voc_image_for(annotation, root / "images")
            if image_path is None:
                raise BadImageError(xml, "no image with this annotation's name")
            target = voc_target([(o.label, o.box) for o in annotation.objects])
            rgb = decode_rgb(image_path)
        except (BadImageError, ValueError, OSError) as exc:
            skipped.append({"path": str(xml), "reason": str(exc)})
            continue
        except SyntaxError as exc:  # xml.etree.ElementTree.ParseError
            skipped.append({"path": str(xml), "reason": f"unreadable annotation ({exc})"})
            continue
        start = time.perf_counter()
        results.append(detector.detect(rgb, source=str(image_path), score_threshold=0.0, min_confidence=0.0))
        seconds += time.perf_counter() - start
        targets.append(target)
        degenerate.extend({"path": str(xml), "label": o.label, "box": list(o.box)} for o in annotation.degenerate)
        if on_progress is not None:
            on_progress(done, len(xmls))
    annotated = {xml.stem for xml in xmls}
    # images nobody annotated are not scored: say so (with a list, its missing annotations are said above)
    if not limit and subset is None and (root / "images").is_dir():
        skipped.extend(
            {"path": str(image), "reason": "image without an annotation (annotations/<name>.xml)"}
            for image in sorted((root / "images").iterdir())
            if image.is_file() and not image.name.startswith(".") and image.stem not in annotated
        )
    if not results:
        raise ValueError(f"{root}: none of the {len(xmls)} annotated images could be read")

    scores = score_results(
        results,
        targets,
        classes=classes,
        model_classes=detector.classes,
        score_threshold=detector.score_threshold,
        min_confidence=detector.min_confidence,
    )
    n_frames = len(results)
    return _clean(
        {
            "data": str(root),
            "images": {"split": None, "list": None, "n_listed": None} if subset is None else subset.describe(),
            "n_images": n_frames,
            **scores,
            "ap_method": AP_METHOD,
            "ranking": RANKING,
            "notes": "recall buckets are the longest side of the annotated box in pixels; precision is a lower bound "
            "where scenes leave background faces unannotated",
            "settings": detector.settings(),
            "privacy": privacy_policy(detector),
            "skipped": skipped,
            "degenerate_boxes": degenerate,  # annotated boxes without width or height, left out (data.voc)
            "seconds": round(seconds, 3),
            "images_per_second": n_frames / seconds if seconds > 0 else None,
        }
    )
