"""The two-stage scene pipeline: find faces, then classify each face's mask (torch-free).

    >>> from maskwatch import MaskDetector                                # doctest: +SKIP
    >>> result = MaskDetector.load().detect("street.jpg")                 # doctest: +SKIP
    >>> result.counts, result.compliance                                  # doctest: +SKIP
    ({'with_mask': 7, 'without_mask': 2}, 0.777)
    >>> result.faces[0].label, result.faces[0].probability, result.faces[0].box   # doctest: +SKIP
    ('with_mask', 0.98, (120.3, 44.1, 151.0, 80.7))
    >>> result.faces.boxes.shape, result.faces.labels                     # doctest: +SKIP
    ((9, 4), array([0, 0, 1, 0, 0, 0, 1, 0, 0]))

Stage 1 is CenterFace (:mod:`maskwatch.detection.centerface`), run on one or more *views* of the image
(longest side scaled to each of ``scales``, optionally mirrored) whose detections are fused: boxes that
overlap by more than ``fusion_iou`` are one face, its box the score-weighted mean of the views' boxes and
its score the mean over the views (a view that missed it adds 0). Mirroring and larger scales find more
small faces and place boxes better; they cost one detector run each. The ``accurate`` preset runs 640,
1024 and 1280 px, each mirrored: the 1280 px pair, chosen on scenes/valid
(``benchmarks/study_small_faces.py``, JSON in ``benchmarks/results/small_faces_valid.json``), lifted
recall on faces under 20 px from 0.626 to 0.676 and mAP@0.5 from 0.818 to 0.828 there (scenes/train, also
unseen: 0.722 → 0.740, 0.866 → 0.874), recall on larger faces unchanged, for 1.66x the time per image.
Tiling the enlarged image gave the same as running it whole (CenterFace is fully convolutional). Boxes are
then mapped onto the PASCAL VOC framing (:data:`~maskwatch.detection.centerface.VOC_BOX_ADJUST`).

Stage 2 crops every face kept (score ≥ ``score_threshold``) grown by ``crop_margin`` of its size on each
side (by default the classifier's own margin, stored with the model), exactly how
:func:`maskwatch.data.datasets.open_dataset` cuts training/evaluation crops from VOC boxes, and classifies
all crops of an image (or of a batch of images) in batches. With ``classify_tta``
(the ``accurate`` preset) each face is classified on six crops, the margins ``crop_margin`` − 0.05, + 0 and
+ 0.05 each as is and mirrored, and the probabilities are averaged: most scene faces are 20-60 px, where
the single crop's framing and pixel grid sway the classifier; averaging lifted mAP@0.5 on the shared
scenes from 0.845 to 0.853 (mirroring alone: 0.848).

Faces travel as :class:`~maskwatch.core.faces.Faces` (columns: boxes, detector scores, landmarks, class
probabilities, track ids; iterating gives one view per face with ``box``, ``score``, ``label``,
``probability``, ``probabilities``, ``confidence`` = score × probability, the ranking score used for AP).
A result keeps every detector candidate; the faces that count are those ``kept`` past the gates.
``compliance`` = faces labelled with one of the model's ``compliant_classes`` / faces classified (None when
no face was found).

The classify-and-build step is shared with the stream engine: :meth:`MaskDetector.gate` (which candidates
count), a :class:`CropBatch` (the crops of many images, one classifier call per classifier), then
:meth:`MaskDetector.label` (probabilities in, confidence gate). The engine chooses fewer rows to classify
(its classification budget) and reuses track verdicts for the others.

This module holds the detector only; its results are :mod:`maskwatch.detection.results`, the box arithmetic
:mod:`maskwatch.core.geometry`, the evaluation on VOC scenes :mod:`maskwatch.detection.evaluation`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from maskwatch.core.contract import DEFAULT_CROP_MARGIN, default_compliant_classes
from maskwatch.core.faces import Faces
from maskwatch.core.geometry import box_iou, crop_box, finish_boxes, nms
from maskwatch.detection.centerface import VOC_BOX_ADJUST
from maskwatch.detection.presets import DETECTOR_PRECISIONS, PRESETS, TTA_MARGIN_OFFSETS, check_preset
from maskwatch.detection.privacy import BLUR_SCORE
from maskwatch.detection.results import FrameResult

__all__ = ["PRESETS", "TTA_MARGIN_OFFSETS", "CropBatch", "FaceFinder", "MaskDetector", "ProbabilityModel", "fuse_views"]


class FaceFinder(Protocol):
    """A face detector: :class:`~maskwatch.core.faces.Faces` (boxes, scores, landmarks) in an RGB image, in
    that image's pixels, at the size it is given."""

    def detect(self, image_rgb: np.ndarray) -> Faces: ...


class ProbabilityModel(Protocol):
    """A mask classifier: class probabilities ``(N, classes)`` of N RGB face crops."""

    classes: list[str]

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------------------
# fusing the detector's views


def fuse_views(views: Sequence[Faces], iou: float = 0.3) -> Faces:
    """Fuse the detections of several views of one image (each a :class:`Faces` in the original image's
    pixels) into one set of faces (boxes, scores, landmarks).

    Greedy by score: the best remaining box and every remaining box overlapping it by more than ``iou``
    form one face. From each view the face keeps its best box; the fused box and landmarks are the
    score-weighted mean of those, the fused score the sum of their scores over the number of views (a view
    that missed the face counts 0). With one view this is plain non-maximum suppression.
    """
    n_views = len(views)
    if n_views == 0 or not any(len(v) for v in views):
        return Faces.empty()
    if n_views == 1:
        view = views[0]
        keep = nms(view.boxes, view.scores, iou)
        return Faces(view.boxes[keep], view.scores[keep], view.landmarks[keep])
    boxes = np.concatenate([v.boxes for v in views])
    scores = np.concatenate([v.scores for v in views])
    marks = np.concatenate([v.landmarks for v in views])
    view_of = np.concatenate([np.full(len(v), k) for k, v in enumerate(views)])
    overlap = box_iou(boxes, boxes)
    used = np.zeros(len(scores), dtype=bool)
    out_boxes, out_scores, out_marks = [], [], []
    for leader in np.argsort(-scores, kind="stable"):
        if used[leader]:
            continue
        members = ~used & (overlap[leader] > iou)
        members[leader] = True
        used |= members
        best = [
            int(np.flatnonzero(members & (view_of == k))[np.argmax(scores[members & (view_of == k)])])
            for k in np.unique(view_of[members])
        ]
        weights = scores[best]
        total = float(weights.sum())
        out_boxes.append((boxes[best] * weights[:, None]).sum(0) / total)
        out_marks.append((marks[best] * weights[:, None, None]).sum(0) / total)
        out_scores.append(total / n_views)
    return Faces(np.array(out_boxes), np.array(out_scores), np.array(out_marks).reshape(-1, 5, 2))


def _resize(image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return image, 1.0, 1.0
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp), nw / w, nh / h


# --------------------------------------------------------------------------------------------------------
# the pipeline


def _as_rgb(image: Any) -> np.ndarray:
    """An HxWx3 uint8 RGB array (:func:`maskwatch.data.images.to_rgb_array`: arrays of the accepted shapes
    and types, or the one image decoder for paths, encoded bytes, binary files and PIL images)."""
    from maskwatch.data.images import to_rgb_array

    return to_rgb_array(image)


class MaskDetector:
    """Faces and their masks in whole images.

    Build it with :meth:`load` (the bundled or a given classifier, CenterFace from its usual place), or
    give it a ready classifier (anything with ``classes`` and ``predict_proba(list of RGB crops)``) and a
    face finder (anything with ``detect(rgb) -> list[Face]`` that runs at the size it is given, e.g.
    ``CenterFaceDetector(max_side=None, box_adjust=None, score_threshold=0.1)``).

    Args:
        classifier: the mask classifier.
        face_finder: the face detector.
        scales: longest side(s) the image is resized to for the detector (one run per scale); or a preset
            name in :data:`PRESETS` (``fast``, ``balanced``, ``accurate``) which also sets ``flip``.
        flip: also run the detector on the mirrored image and fuse (test-time augmentation).
        score_threshold: classify faces whose fused detector score is at least this.
        min_confidence: then keep those whose confidence (score × class probability) is at least this
            (a classifier gate; 0 keeps every classified face).
        crop_margin: margin added on each side of a face box before classifying, fraction of its size;
            None: the classifier's own (``classifier.crop_margin``, the framing it was trained on), else
            :data:`~maskwatch.core.contract.DEFAULT_CROP_MARGIN`.
        min_face: faces whose longest side is below this many pixels are not counted (they stay privacy
            candidates: blurred).
        fusion_iou: boxes overlapping by more than this are one face (fusion across views, and NMS).
        box_adjust: ``(dx, dy, sw, sh)`` mapping detector boxes onto VOC framing (None: keep them).
        upscale: scale images smaller than a scale up to it (small faces are found much better).
        classify_tta: classify each face on 6 crops (margins ``crop_margin`` + each of
            :data:`TTA_MARGIN_OFFSETS`, each also mirrored) and average the probabilities; 6x the classifier
            work for steadier labels on small faces. None: the preset decides (off unless ``scales`` names one).
        int8_face_finder: a quantized face detector for the presets that ask for one (``fast``).
        detector: ``fp32`` (``face_finder``) or ``int8`` (``int8_face_finder``, when given; else
            ``face_finder``); None: the preset decides (fp32 unless ``scales`` names one).
        int8_classifier: a quantized copy of ``classifier`` (same classes) for the presets that ask for one.
        classifier_precision: ``fp32`` or ``int8`` (``int8_classifier`` when given), like ``detector``.
        candidate_threshold: a view's detections scoring under this are *privacy candidates* only: left out
            of the fusion (so the faces that count do not depend on them), added where no stronger face is,
            never ``kept`` (blurred, never classified or counted; :mod:`maskwatch.detection.privacy`). 0: every
            detection of the face finder is a candidate. :meth:`load` runs the finder down to its
            ``blur_threshold`` and sets this to its ``candidate_threshold``.
    """

    def __init__(
        self,
        classifier: ProbabilityModel,
        face_finder: FaceFinder,
        *,
        scales: Sequence[int] | str = "accurate",
        flip: bool | None = None,
        score_threshold: float = 0.3,
        min_confidence: float = 0.0,
        crop_margin: float | None = None,
        min_face: float = 0.0,
        fusion_iou: float = 0.3,
        box_adjust: Sequence[float] | None = VOC_BOX_ADJUST,
        upscale: bool = True,
        classify_tta: bool | None = None,
        int8_face_finder: FaceFinder | None = None,
        detector: str | None = None,
        int8_classifier: ProbabilityModel | None = None,
        classifier_precision: str | None = None,
        candidate_threshold: float = 0.0,
    ) -> None:
        if isinstance(scales, str):
            preset = PRESETS[check_preset(scales)]
            scales, flip = preset["scales"], preset["flip"] if flip is None else flip
            classify_tta = preset["classify_tta"] if classify_tta is None else classify_tta
            detector = preset["detector"] if detector is None else detector
            classifier_precision = preset["classifier"] if classifier_precision is None else classifier_precision
        detector = detector or "fp32"
        classifier_precision = classifier_precision or "fp32"
        if detector not in DETECTOR_PRECISIONS:
            raise ValueError(f"detector must be one of {', '.join(DETECTOR_PRECISIONS)}, got {detector!r}")
        if classifier_precision not in DETECTOR_PRECISIONS:
            raise ValueError(f"classifier_precision must be fp32 or int8, got {classifier_precision!r}")
        if int8_classifier is not None and list(int8_classifier.classes) != list(classifier.classes):
            raise ValueError(f"int8_classifier classes {int8_classifier.classes} differ from {classifier.classes}")
        if not scales or any(int(s) < 32 for s in scales):
            raise ValueError(f"scales must be one or more sizes >= 32 px, got {scales}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 <= candidate_threshold <= 1.0:
            raise ValueError(f"candidate_threshold must be in [0, 1], got {candidate_threshold}")
        if crop_margin is None:
            crop_margin = getattr(classifier, "crop_margin", None)
            crop_margin = DEFAULT_CROP_MARGIN if crop_margin is None else float(crop_margin)
        if crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0, got {crop_margin}")
        if classify_tta and crop_margin + min(TTA_MARGIN_OFFSETS) < 0:
            raise ValueError(f"classify_tta needs crop_margin >= {-min(TTA_MARGIN_OFFSETS)}, got {crop_margin}")
        self.classifier = classifier
        self.face_finder = face_finder
        self.int8_face_finder = int8_face_finder
        self.detector = detector
        self.int8_classifier = int8_classifier
        self.classifier_precision_asked = classifier_precision
        # the classifier this pipeline runs: INT8 only where asked for and available
        self.active_classifier = (
            int8_classifier if classifier_precision == "int8" and int8_classifier is not None else classifier
        )
        # the finder this pipeline runs: INT8 only where asked for and available
        self.active_finder = int8_face_finder if detector == "int8" and int8_face_finder is not None else face_finder
        self.classes = list(classifier.classes)
        compliant = getattr(classifier, "compliant_classes", None)
        # the classes that count as a mask worn correctly: the model's, else the default for its classes
        self.compliant_classes = tuple(default_compliant_classes(self.classes) if compliant is None else compliant)
        self.scales = tuple(int(s) for s in scales)
        self.flip = bool(flip)
        self.score_threshold = float(score_threshold)
        self.min_confidence = float(min_confidence)
        self.crop_margin = float(crop_margin)
        self.min_face = float(min_face)
        self.fusion_iou = float(fusion_iou)
        self.box_adjust = None if box_adjust is None else tuple(float(v) for v in box_adjust)
        self.upscale = bool(upscale)
        self.classify_tta = bool(classify_tta)
        self.candidate_threshold = float(candidate_threshold)

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: str | None = None,
        preset: str = "accurate",
        detector_model: str | os.PathLike[str] | None = None,
        candidate_threshold: float = 0.1,
        blur_threshold: float = BLUR_SCORE,
        threads: int = 2,
        batch_size: int = 8,  # faces per classifier run; 32 held 190 MB more at peak, no faster (BENCHMARKS.md)
        spin: bool = False,
        int8_detector: bool = True,
        int8_classifier: bool = True,
        **options: Any,
    ) -> MaskDetector:
        """A ready pipeline: the classifier ``model`` (default: the bundled one, see
        :func:`maskwatch.bundled.default_model_path`) opened with ``backend`` (default: the runtime's own
        choice), and CenterFace (``detector_model`` or its usual place). Each detector view keeps faces
        scoring at least ``candidate_threshold`` before fusion, and privacy candidates (blurred, never
        counted) down to ``blur_threshold`` (:data:`~maskwatch.detection.privacy.BLUR_SCORE`, chosen on
        scenes/valid for the recall-first blur). ``options`` go to the constructor
        (``score_threshold``, ``crop_margin``, ``min_face``, ``scales``, ``flip``, ...).

        ``spin`` is off by default: the detector and the classifier are two ONNX Runtime sessions called in
        turn, and each one's idle threads busy-waiting while the other works made both about 2x slower on
        a 2-core machine (``benchmarks/bench_pipeline.py --spin-ab``).

        ``int8_detector``: also open the shipped INT8 CenterFace for the presets that run it (``fast``);
        ignored when ``detector_model`` names a file (that file is then used everywhere).
        ``int8_classifier``: likewise the bundled model's shipped INT8 export (only with the bundled model and
        no ``backend`` named)."""
        from maskwatch.bundled import default_int8_model_path, default_model_path
        from maskwatch.detection.centerface import CenterFaceDetector, find_centerface_int8_model
        from maskwatch.runtime.base import load_classifier

        model_path = Path(model) if model is not None else default_model_path()
        kwargs: dict[str, Any] = {"batch_size": batch_size, "spin": spin}
        classifier = (
            load_classifier(model_path, **kwargs) if backend is None else load_classifier(model_path, backend, **kwargs)
        )
        floor = min(candidate_threshold, blur_threshold)  # the finders run down to the privacy candidates
        finder = CenterFaceDetector(
            detector_model,
            score_threshold=floor,
            max_side=None,
            box_adjust=None,
            threads=threads,
            spin=spin,
        )
        int8_model = default_int8_model_path() if int8_classifier and model is None and backend is None else None
        if int8_model is not None and int8_model != model_path:  # a wheel install's only classifier: loaded once
            options.setdefault("int8_classifier", load_classifier(int8_model, **kwargs))
        int8_path = find_centerface_int8_model() if int8_detector and detector_model is None else None
        if int8_path is not None:
            options.setdefault("int8_face_finder", CenterFaceDetector(
                int8_path, score_threshold=floor, max_side=None, box_adjust=None, threads=threads,
                spin=spin,
            ))  # fmt: skip
        options.setdefault("scales", preset)
        options.setdefault("candidate_threshold", candidate_threshold)
        return cls(classifier, finder, **options)

    def configured(self, **changes: Any) -> MaskDetector:
        """A pipeline sharing this one's models with some settings changed, e.g. ``configured(scales="fast")``."""
        settings: dict[str, Any] = {
            "scales": self.scales,
            "flip": self.flip,
            "score_threshold": self.score_threshold,
            "min_confidence": self.min_confidence,
            "crop_margin": self.crop_margin,
            "min_face": self.min_face,
            "fusion_iou": self.fusion_iou,
            "box_adjust": self.box_adjust,
            "upscale": self.upscale,
            "classify_tta": self.classify_tta,
            "int8_face_finder": self.int8_face_finder,
            "detector": self.detector,
            "int8_classifier": self.int8_classifier,
            "classifier_precision": self.classifier_precision_asked,
            "candidate_threshold": self.candidate_threshold,
        }
        if isinstance(changes.get("scales"), str):  # the preset decides what is not named
            preset_keys = ("flip", "classify_tta", "detector", "classifier_precision")
            settings.update({key: None for key in preset_keys if key not in changes})
        settings.update(changes)
        return MaskDetector(self.classifier, self.face_finder, **settings)

    def settings(self) -> dict[str, Any]:
        """The pipeline's settings, for reports and JSON."""
        return {
            "classes": list(self.classes),
            "compliant_classes": list(self.compliant_classes),
            "scales": list(self.scales),
            "flip": self.flip,
            "score_threshold": self.score_threshold,
            "min_confidence": self.min_confidence,
            "crop_margin": self.crop_margin,
            "min_face": self.min_face,
            "fusion_iou": self.fusion_iou,
            "box_adjust": None if self.box_adjust is None else list(self.box_adjust),
            "upscale": self.upscale,
            "classify_tta": self.classify_tta,
            "candidate_threshold": self.candidate_threshold,
            "blur_threshold": getattr(self.active_finder, "score_threshold", None),
            "detector": self.detector_precision,
            "classifier_precision": self.classifier_precision,
            "face_finder": repr(self.active_finder),
            "classifier_backend": getattr(self.active_classifier, "backend", type(self.active_classifier).__name__),
        }

    @property
    def classifier_precision(self) -> str:
        """``int8`` when the INT8 classifier runs, else ``fp32``."""
        active = self.active_classifier
        if self.int8_classifier is not None and active is self.int8_classifier:
            return "int8"
        return "int8" if getattr(active, "backend", "") == "onnx-int8" else "fp32"  # e.g. a wheel's only one

    @property
    def detector_precision(self) -> str:
        """``int8`` when the INT8 face detector runs, else ``fp32`` (also when INT8 was asked for but absent)."""
        return "int8" if self.int8_face_finder is not None and self.active_finder is self.int8_face_finder else "fp32"

    def __repr__(self) -> str:
        return (
            f"MaskDetector(classes={self.classes}, scales={self.scales}, flip={self.flip}, "
            f"score_threshold={self.score_threshold}, min_confidence={self.min_confidence}, "
            f"crop_margin={self.crop_margin}, "
            f"min_face={self.min_face}, classify_tta={self.classify_tta})"
        )

    # -- stage 1 -----------------------------------------------------------------------------------------

    def find_faces(self, image: Any) -> Faces:
        """Every candidate the detector returned on the fused views (no score threshold here: all kept, see
        :meth:`gate`), boxes in VOC framing, best score first, with probability columns for the model's
        classes (not classified yet)."""
        rgb = _as_rgb(image)
        mirrored = [False, True] if self.flip else [False]
        views = [self.detect_view(rgb, side, flip) for side in self.scales for flip in mirrored]
        return self.fuse(views, rgb.shape[1], rgb.shape[0]).with_classes(self.classes)

    def view_scale(self, height: int, width: int, side: int) -> float:
        """How much a view at ``side`` enlarges (> 1) or shrinks the image."""
        scale = side / max(height, width)
        return 1.0 if scale > 1 and not self.upscale else scale

    def detect_view(self, rgb: np.ndarray, side: int, mirrored: bool = False) -> Faces:
        """One detector run: the image's longest side scaled to ``side`` (not up unless ``upscale``), maybe
        mirrored; the faces in the original image's pixels, in the detector's own framing (a unit that
        :meth:`fuse` combines; studies cache it)."""
        resized, sx, sy = _resize(rgb, self.view_scale(rgb.shape[0], rgb.shape[1], side))
        src = np.ascontiguousarray(resized[:, ::-1]) if mirrored else resized
        found = self.active_finder.detect(src)
        boxes, scores, marks = found.boxes, found.scores, found.landmarks
        if mirrored and len(scores):
            rw = resized.shape[1]
            boxes = np.stack([rw - boxes[:, 2], boxes[:, 1], rw - boxes[:, 0], boxes[:, 3]], axis=1)
            marks = marks[:, [1, 0, 2, 4, 3]].copy()  # left/right swap places in a mirror
            marks[..., 0] = rw - marks[..., 0]
        return Faces(boxes / [sx, sy, sx, sy], scores, marks / [sx, sy])

    def fuse(self, views: Sequence[Faces], width: int, height: int) -> Faces:
        """The views of one ``width`` x ``height`` image fused (:func:`fuse_views`), mapped onto VOC framing,
        clipped, and sorted best score first.

        Detections under :attr:`candidate_threshold` are privacy candidates: left out of the fusion, they
        join as faces of their own (their view's score, not ``kept``) where they overlap no fused face by
        more than ``fusion_iou``. So are faces under ``min_face``: too small to count, never too small to
        blur."""
        floor = self.candidate_threshold
        weak = None
        if floor > 0 and any(bool((v.scores < floor).any()) for v in views):
            weak = Faces.concat([v[v.scores < floor] for v in views])
            views = [v[v.scores >= floor] for v in views]
        fused = fuse_views(views, self.fusion_iou)
        if weak is not None and len(weak):
            weak = weak[nms(weak.boxes, weak.scores, self.fusion_iou)]
            if len(fused):
                weak = weak[box_iou(weak.boxes, fused.boxes).max(axis=1) <= self.fusion_iou]
            weak = Faces(weak.boxes, weak.scores, weak.landmarks, kept=np.zeros(len(weak), dtype=bool))
            fused = Faces.concat([Faces(fused.boxes, fused.scores, fused.landmarks), weak])
        if not len(fused):
            return fused
        boxes, ok = finish_boxes(fused.boxes, width, height, self.box_adjust, 0.0)
        counts = fused.kept & (np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_face)
        order = np.flatnonzero(ok)[np.argsort(-fused.scores[ok], kind="stable")]
        return Faces(boxes[order], fused.scores[order], fused.landmarks[order], kept=counts[order])

    # -- stage 2 -----------------------------------------------------------------------------------------

    def crops(self, image: np.ndarray, boxes: np.ndarray, margin: float | None = None) -> list[np.ndarray]:
        """The classifier's input for each box: the box grown by ``margin`` (default ``crop_margin``),
        clipped to the image."""
        h, w = image.shape[:2]
        margin = self.crop_margin if margin is None else margin
        out = []
        for box in boxes:
            left, top, right, bottom = crop_box(box, margin, w, h)
            out.append(image[top:bottom, left:right])
        return out

    @property
    def views_per_face(self) -> int:
        """Crops classified per face: 1, or 6 with ``classify_tta``."""
        return 2 * len(TTA_MARGIN_OFFSETS) if self.classify_tta else 1

    def face_views(self, image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        """Every crop the classifier sees for these boxes, :attr:`views_per_face` per face, face by face."""
        if not self.classify_tta:
            return self.crops(image, boxes)
        per_margin = [self.crops(image, boxes, self.crop_margin + offset) for offset in TTA_MARGIN_OFFSETS]
        return [view for face in zip(*per_margin) for crop in face for view in (crop, crop[:, ::-1])]

    def classify(self, crops: Sequence[np.ndarray], views_per_face: int = 1) -> np.ndarray:
        """Class probabilities (N, classes) of face crops, in the classifier's batches; with
        ``views_per_face`` > 1 the crops come face by face and each face's probabilities are averaged."""
        if not crops:
            return np.zeros((0, len(self.classes)))
        probabilities = np.asarray(self.active_classifier.predict_proba(list(crops)), dtype=np.float64)
        if views_per_face > 1:
            probabilities = probabilities.reshape(-1, views_per_face, probabilities.shape[1]).mean(axis=1)
        return probabilities

    # -- the shared classify-and-build step (detect_batch here, and the stream engine) ---------------------

    def gate(self, faces: Faces, score_threshold: float | None = None) -> Faces:
        """Which faces count before classification: those scoring at least ``score_threshold`` (default the
        pipeline's) stay ``kept``; the others stay in the frame's candidates, not kept, not classified."""
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        return faces.replace(kept=faces.kept & (faces.scores >= threshold))

    def label(
        self,
        faces: Faces,
        rows: np.ndarray,
        probabilities: np.ndarray,
        *,
        verdicts: np.ndarray | None = None,
        min_confidence: float | None = None,
    ) -> Faces:
        """Fill in what the classifier said: ``probabilities`` (one row per index in ``rows``, from a
        :class:`CropBatch`) for the faces classified now (marked ``classified``). ``verdicts`` (N, classes),
        the stream engine's classification budget: a kept face not classified now takes its track's
        verdict, or is dropped without one. Then the confidence gate: a face classified now whose detector
        score x class probability is under ``min_confidence`` (default the pipeline's) is not kept."""
        gate = self.min_confidence if min_confidence is None else float(min_confidence)
        classified = np.zeros(len(faces), dtype=bool)
        classified[rows] = True
        filled = faces.probabilities.copy()
        filled[rows] = probabilities
        kept = faces.kept.copy()
        if verdicts is not None:
            reuse = kept & ~classified
            filled[reuse] = verdicts[reuse]
            kept &= ~(reuse & np.isnan(filled).any(axis=1))
        labelled = faces.replace(probabilities=filled, classified=classified, kept=kept)
        under = classified & (labelled.confidence < gate)
        return labelled.replace(kept=kept & ~under) if under.any() else labelled

    # -- both --------------------------------------------------------------------------------------------

    def detect(
        self,
        image: Any,
        *,
        source: str | None = None,
        frame: int = 0,
        timestamp: float | None = None,
        score_threshold: float | None = None,
        min_confidence: float | None = None,
    ) -> FrameResult:
        """Faces and masks in one image: a path, encoded image bytes, a binary file, a PIL image, or an array
        (HxWx3 RGB, HxW or HxWx1 grayscale, HxWx4 RGBA; uint8, or float 0..1 / 0..255): see
        :func:`maskwatch.data.images.to_rgb_array`. An empty or otherwise unusable input is a ValueError."""
        return self.detect_batch(
            [image],
            sources=[source],
            frames=[frame],
            timestamps=[timestamp],
            score_threshold=score_threshold,
            min_confidence=min_confidence,
        )[0]

    def detect_batch(
        self,
        images: Sequence[Any],
        *,
        sources: Sequence[str | None] | None = None,
        frames: Sequence[int] | None = None,
        timestamps: Sequence[float | None] | None = None,
        score_threshold: float | None = None,
        min_confidence: float | None = None,
    ) -> list[FrameResult]:
        """Several images at once: the faces of all of them are classified together, in batches.
        ``score_threshold`` / ``min_confidence`` override the pipeline's for this call."""
        n = len(images)
        sources = list(sources) if sources is not None else [None] * n
        frames = list(frames) if frames is not None else [0] * n
        timestamps = list(timestamps) if timestamps is not None else [None] * n
        sources = [
            str(im) if s is None and isinstance(im, (str, os.PathLike)) else s
            for im, s in zip(images, sources, strict=True)
        ]
        arrays = [_as_rgb(im) for im in images]
        batch = CropBatch()
        found = []
        for rgb in arrays:
            faces = self.gate(self.find_faces(rgb), score_threshold)
            rows = np.flatnonzero(faces.kept)
            found.append((faces, rows, batch.add(self, rgb, faces.boxes[rows])))
        batch.run()
        return [
            FrameResult(
                self.label(faces, rows, batch.probabilities(ticket), min_confidence=min_confidence),
                width=int(rgb.shape[1]),
                height=int(rgb.shape[0]),
                source=sources[k],
                frame=int(frames[k]),
                timestamp=timestamps[k],
                compliant_classes=self.compliant_classes,
            )
            for k, (rgb, (faces, rows, ticket)) in enumerate(zip(arrays, found, strict=True))
        ]


@dataclass(frozen=True)
class _Ticket:
    """Where one image's crops sit in a :class:`CropBatch`."""

    key: int  # the classifier's group
    start: int
    faces: int
    views: int  # crops per face
    classes: int


class CropBatch:
    """The face crops of a round of images, classified in one call per classifier: the pipeline's batch of
    images and the stream engine's round across sources (where the presets may run different classifiers,
    the fp32 model and its INT8 export). :meth:`add` each image's boxes, :meth:`run` once, then read each
    image's :meth:`probabilities` (averaged over the views of a face with ``classify_tta``)."""

    def __init__(self) -> None:
        self._groups: dict[int, tuple[ProbabilityModel, list[np.ndarray]]] = {}
        self._done: dict[int, np.ndarray] = {}

    def add(self, detector: MaskDetector, image: np.ndarray, boxes: np.ndarray, *, gray: bool = False) -> _Ticket:
        """Queue the classifier views of these faces of ``image`` for ``detector``'s classifier; ``gray``: as
        grey faces (a camera in grey mode, :class:`maskwatch.camera_color.CameraColor`)."""
        classifier = detector.active_classifier
        crops = self._groups.setdefault(id(classifier), (classifier, []))[1]
        start = len(crops)
        if len(boxes):
            views = detector.face_views(image, boxes)
            if gray:
                from maskwatch.camera_color import to_gray_faces

                views = to_gray_faces(views)
            crops.extend(views)
        return _Ticket(id(classifier), start, len(boxes), detector.views_per_face, len(detector.classes))

    def run(self) -> None:
        """Classify everything queued (one ``predict_proba`` per classifier with crops)."""
        for key, (classifier, crops) in self._groups.items():
            if crops:
                self._done[key] = np.asarray(classifier.predict_proba(crops), dtype=np.float64)

    def probabilities(self, ticket: _Ticket) -> np.ndarray:
        """``(faces, classes)``: the class probabilities of one :meth:`add`'s faces."""
        if ticket.faces == 0:
            return np.zeros((0, ticket.classes))
        rows = self._done[ticket.key][ticket.start : ticket.start + ticket.faces * ticket.views]
        return rows.reshape(ticket.faces, ticket.views, ticket.classes).mean(axis=1)
