"""Hard-example mining: the faces the model is least sure of, as a review folder a person relabels.

The learning loop the reference notebook suggests (low-confidence samples become better training data):

    >>> from maskwatch.detection.pipeline import MaskDetector                     # doctest: +SKIP
    >>> result = mine(MaskDetector.load(), ["street/", "hall.mp4"])               # doctest: +SKIP
    >>> write_review("review/", result)   # review/<predicted class>/*.jpg + review/mined.csv  # doctest: +SKIP

then ``maskwatch train --data review/ ...`` once wrong files were moved to their right class folder.

How a face is judged. Every face is classified on the pipeline's six test-time views
(:meth:`~maskwatch.detection.pipeline.MaskDetector.face_views`: three crop margins, each also mirrored,
the fp32 classifier). Its label and ``probability`` are the views' mean, as with the ``accurate`` preset.
It is *unsure* when that probability is below ``threshold`` (``low_probability``), when a view's top class
differs from the label (``views_disagree``), or when the views' probabilities of the label span at least
``spread`` (``views_spread``). Unsure faces are ranked by the *worst view*: the lowest probability any view
gives the label, which is low both for a low mean and for views that disagree; ties by mean probability,
then file name, so a run is reproducible.

Where faces come from. Scenes and videos run through the stream engine (:mod:`maskwatch.stream.engine`:
face detection with the preset's views, ByteTrack ids in videos); ``crops_only`` takes images that are
already face crops (each image one face, no detection). In a video, the faces of one person are one
candidate: the same track id, or for a face the tracker has not confirmed, a box overlapping the
person's last box by ``dedupe_iou`` within ``dedupe_frames`` analysed frames. Only that person's least
sure frame (by the engine's one-crop probability) is kept and judged on the six views.

Privacy: the files written are faces of real people. They are meant as training data and stay where
``write_review`` puts them, on this machine; nothing here sends them anywhere.

Re-running into the same folder never duplicates a face: file names are fixed by the source, the frame
and the box, ``mined.csv`` is the ledger of every face ever mined there (rewritten atomically, old rows
kept), and a face already in the ledger or present in any class folder is not written again, so files a
person moved or deleted stay moved or deleted.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import queue
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.core.faces import Faces
from maskwatch.core.geometry import Box, box_iou, crop_box
from maskwatch.core.jpeg import encode_jpeg
from maskwatch.detection.pipeline import PRESETS, TTA_MARGIN_OFFSETS, MaskDetector
from maskwatch.stream.config import EngineConfig, SourceSpec
from maskwatch.stream.detectors import PresetDetectors
from maskwatch.stream.engine import StreamEngine
from maskwatch.stream.sources import VIDEO_EXTENSIONS, Frame, ImageSource, SourceError, parse_source
from maskwatch.stream.subscriptions import Subscription

__all__ = [
    "LEDGER_FIELDS",
    "LEDGER_NAME",
    "LedgerError",
    "MineInputs",
    "MineSettings",
    "MinedFace",
    "MiningResult",
    "ReviewWrite",
    "face_file_name",
    "mine",
    "read_ledger",
    "resolve_inputs",
    "view_uncertainty",
    "write_review",
]

LEDGER_NAME = "mined.csv"
LEDGER_FIELDS = (
    "file",
    "source",
    "frame",
    "timestamp",
    "track",
    "x0",
    "y0",
    "x1",
    "y1",
    "score",
    "predicted",
    "probability",
    "worst_view",
    "views_agreeing",
    "views",
    "spread",
    "why",
)
REASONS = ("low_probability", "views_disagree", "views_spread")
_SCORE_BATCH = 64  # faces judged together (x 6 views per classifier call)


class LedgerError(ValueError):
    """The review folder's ``mined.csv`` is not one this module wrote; the message says what to do."""


@dataclass(frozen=True)
class MineSettings:
    """What counts as unsure, how many to keep, and how video faces are merged into one person."""

    threshold: float = 0.8  # mean probability of the label below this: low_probability
    spread: float = 0.3  # label probability range over the views at least this: views_spread
    limit: int | None = 500  # keep the N least sure (None: all unsure faces)
    dedupe_iou: float = 0.5  # an untracked video face joins the person whose last box overlaps this much ...
    dedupe_frames: int = 5  # ... seen within this many analysed frames
    close_after: int = 90  # a person unseen for this many analysed frames is judged (bounded memory)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.spread <= 1.0:
            raise ValueError(f"spread must be in (0, 1], got {self.spread}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if not 0.0 < self.dedupe_iou <= 1.0:
            raise ValueError(f"dedupe_iou must be in (0, 1], got {self.dedupe_iou}")
        if self.dedupe_frames < 1 or self.close_after < self.dedupe_frames:
            raise ValueError("need dedupe_frames >= 1 and close_after >= dedupe_frames")


@dataclass(frozen=True)
class Uncertainty:
    """How sure the six views are of one face's label, and why it counts as unsure (empty: it does not)."""

    label: str
    probability: float  # mean over the views of the label's probability
    worst_view: float  # lowest probability a view gives the label (the ranking key)
    views_agreeing: int  # views whose top class is the label
    views: int
    spread: float  # highest minus lowest view probability of the label
    reasons: tuple[str, ...]


def view_uncertainty(
    probabilities: np.ndarray, classes: Sequence[str], *, threshold: float, spread: float
) -> Uncertainty:
    """Judge one face from its per-view class probabilities ``(views, classes)``."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1, len(classes))
    mean = p.mean(axis=0)
    best = int(np.argmax(mean))
    of_label = p[:, best]
    agreeing = int((p.argmax(axis=1) == best).sum())
    span = float(of_label.max() - of_label.min())
    reasons = []
    if mean[best] < threshold:
        reasons.append("low_probability")
    if agreeing < len(p):
        reasons.append("views_disagree")
    if span >= spread:
        reasons.append("views_spread")
    return Uncertainty(
        label=classes[best],
        probability=float(mean[best]),
        worst_view=float(of_label.min()),
        views_agreeing=agreeing,
        views=len(p),
        spread=span,
        reasons=tuple(reasons),
    )


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.") or "face"


def face_file_name(source: str, frame: int, box: Sequence[float]) -> str:
    """The file name of a mined face: source stem, a short hash of the source's absolute path (two
    folders may hold the same file name), the frame and the box in whole pixels. The same face gets the
    same name on every run, which is what keeps re-runs from duplicating it."""
    digest = hashlib.sha1(os.path.abspath(source).encode("utf-8", "surrogateescape")).hexdigest()[:6]
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return f"{_stem(Path(source).stem)[:60]}-{digest}_f{int(frame)}_{x0}-{y0}-{x1}-{y1}.jpg"


@dataclass(frozen=True)
class MinedFace:
    """One unsure face: where it is, what the model says, why it was mined, and its crop (RGB, the
    classifier's framing: the box grown by the model's crop margin)."""

    name: str
    source: str
    frame: int
    timestamp: float | None
    box: Box
    score: float | None  # the face detector's (None: a crop read with ``crops_only``)
    track_id: int | None
    judgement: Uncertainty
    crop: np.ndarray = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return self.judgement.label

    @property
    def rank_key(self) -> tuple[float, float, str]:
        """Least sure first: worst view, then mean probability, then name."""
        return (self.judgement.worst_view, self.judgement.probability, self.name)

    def row(self, file: str) -> dict[str, str]:
        """Its ``mined.csv`` row (``file``: where it was written, relative to the review folder)."""
        j = self.judgement
        return {
            "file": file,
            "source": self.source,
            "frame": str(self.frame),
            "timestamp": "" if self.timestamp is None else f"{self.timestamp:.3f}",
            "track": "" if self.track_id is None else str(self.track_id),
            **{k: f"{v:.1f}" for k, v in zip(("x0", "y0", "x1", "y1"), self.box, strict=True)},
            "score": "" if self.score is None else f"{self.score:.4f}",
            "predicted": j.label,
            "probability": f"{j.probability:.4f}",
            "worst_view": f"{j.worst_view:.4f}",
            "views_agreeing": str(j.views_agreeing),
            "views": str(j.views),
            "spread": f"{j.spread:.4f}",
            "why": ";".join(j.reasons),
        }


@dataclass
class MiningResult:
    """What a mining run saw and the unsure faces it kept, least sure first."""

    faces: list[MinedFace]
    classes: list[str]
    frames: int = 0  # images and video frames analysed
    faces_seen: int = 0  # faces found in them (or crops read)
    candidates: int = 0  # faces judged after merging each video person into one
    unsure: int = 0  # of those, the unsure ones (before the limit)
    skipped: int = 0  # unreadable images or frames
    skipped_reasons: list[str] = field(default_factory=list)  # why (the first 100 of each source)
    failed_sources: list[str] = field(default_factory=list)  # videos that could not be read, with the reason
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def failed(self) -> int:
        """Inputs that failed: unreadable images and frames, and sources that failed."""
        return self.skipped + len(self.failed_sources)


# --------------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class MineInputs:
    """The files to mine: still images (scenes, or face crops with ``crops_only``) and video files."""

    images: list[Path]
    videos: list[Path]
    excluded: int = 0  # files left out because they lie inside the review folder


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def resolve_inputs(data: Sequence[str | os.PathLike[str]], *, exclude: Path | None = None) -> MineInputs:
    """Images and videos named by ``data`` (files, folders searched recursively, globs), minus those inside
    ``exclude`` (the review folder: its crops must not be mined again). Raises :class:`SourceError` for a
    missing input, one holding no image or video, or a webcam/stream (mining reads files)."""
    images: list[Path] = []
    videos: list[Path] = []
    excluded = 0
    for item in data:
        kind, value = parse_source(os.fspath(item))
        if kind in ("webcam", "stream"):
            raise SourceError(f"{item}: mine reads files (images, folders, globs, video files), not live sources")
        paths = list(value) if kind == "files" else [value]
        kept = [p for p in paths if not _inside(p, exclude)]
        excluded += len(paths) - len(kept)
        if not kept:
            where = f": all lie inside the review folder {exclude}" if paths else ""
            raise SourceError(f"{item}: no images or videos found there{where}")
        for path in kept:
            (videos if path.suffix.lower() in VIDEO_EXTENSIONS else images).append(path)
    return MineInputs(images, videos, excluded)


# --------------------------------------------------------------------------------------------------------
# candidates: one per still-image face, one per video person


@dataclass
class _Candidate:
    """A face kept for judging: the pixels around it (enough for every view's margin) and its box there."""

    source: str
    frame: int
    timestamp: float | None
    box: Box  # in the source image
    score: float | None  # the face detector's
    track_id: int | None
    probability: float  # the engine's one-crop probability of its label (picks a person's least sure frame)
    patch: np.ndarray
    patch_box: np.ndarray  # (1, 4): ``box`` in ``patch`` coordinates


def _candidate(
    image: np.ndarray, box: Sequence[float], margin: float, *, source: str, frame: int,
    timestamp: float | None, score: float | None, track_id: int | None, probability: float,
) -> _Candidate:  # fmt: skip
    """Cut the box grown by ``margin`` (the widest view) out of the image: every view cut from the patch
    equals the view cut from the whole image (:func:`~maskwatch.core.geometry.crop_box`, whole-pixel
    offsets), so a video person's frame need not be kept whole."""
    h, w = image.shape[:2]
    left, top, right, bottom = crop_box(box, margin, w, h)
    patch = np.ascontiguousarray(image[top:bottom, left:right])
    x0, y0, x1, y1 = (float(v) for v in box)
    return _Candidate(
        source, int(frame), timestamp, (x0, y0, x1, y1), score, track_id, float(probability), patch,
        np.array([[x0 - left, y0 - top, x1 - left, y1 - top]]),
    )  # fmt: skip


@dataclass
class _Person:
    best: _Candidate
    last_box: np.ndarray
    last_seen: int
    track_id: int | None

    def final(self) -> _Candidate:
        """The least sure frame, carrying the person's track id even if that frame came before the id."""
        return self.best if self.best.track_id is not None else dataclasses.replace(self.best, track_id=self.track_id)


class _VideoPeople:
    """The faces of one video grouped into people (track id, else box overlap with a recent person), each
    keeping only its least sure frame; people unseen for ``close_after`` frames are handed out."""

    def __init__(self, settings: MineSettings):
        self.settings = settings
        self.open: dict[int, _Person] = {}
        self.by_track: dict[int, int] = {}
        self.tick = 0
        self._next = 0

    def _match(self, box: np.ndarray, used: set[int], tracked: bool) -> int | None:
        recent = [
            key
            for key, person in self.open.items()
            if key not in used
            and self.tick - person.last_seen <= self.settings.dedupe_frames
            and not (tracked and person.track_id is not None)  # two tracks are two people
        ]
        if not recent:
            return None
        overlap = box_iou(box[None], np.stack([self.open[k].last_box for k in recent]))[0]
        best = int(np.argmax(overlap))
        return recent[best] if overlap[best] >= self.settings.dedupe_iou else None

    def add_frame(self, frame: Frame, faces: Faces, margin: float) -> list[_Candidate]:
        self.tick += 1
        used: set[int] = set()
        probabilities = faces.best_probabilities
        for row in np.argsort(~faces.tracked, kind="stable"):  # tracked faces claim their people first
            box = faces.boxes[row]
            track_id = int(faces.track_ids[row]) if faces.tracked[row] else None
            known = self.by_track.get(track_id) if track_id is not None else None
            # a track whose person was already judged and returns late is a new candidate
            key = known if known in self.open else self._match(box, used, track_id is not None)
            if key is None:
                key, self._next = self._next, self._next + 1
            person = self.open.get(key)
            probability = float(probabilities[row])
            if person is None or probability < person.best.probability:
                candidate = _candidate(
                    frame.image, box, margin, source=frame.source, frame=frame.index, timestamp=frame.timestamp,
                    score=float(faces.scores[row]), track_id=track_id, probability=probability,
                )  # fmt: skip
                if person is None:
                    person = self.open[key] = _Person(candidate, box, self.tick, track_id)
                person.best = candidate
            person.last_box, person.last_seen = box, self.tick
            if track_id is not None:
                if person.track_id is None:
                    person.track_id = track_id
                self.by_track[track_id] = key
            used.add(key)
        stale = [k for k, p in self.open.items() if self.tick - p.last_seen > self.settings.close_after]
        if not stale:
            return []
        done = [self.open.pop(k).final() for k in stale]
        self.by_track = {t: k for t, k in self.by_track.items() if k in self.open}
        return done

    def close(self) -> list[_Candidate]:
        done = [p.final() for p in self.open.values()]
        self.open.clear()
        self.by_track.clear()
        return done


# --------------------------------------------------------------------------------------------------------
# judging and ranking


class _Judge:
    """Judges candidates on the six views in batches and keeps the ``limit`` least sure (bounded memory)."""

    def __init__(self, detector: MaskDetector, settings: MineSettings):
        # the six views on the fp32 classifier, whatever preset found the faces
        self.views = detector.configured(classify_tta=True, classifier_precision="fp32")
        self.classes = list(self.views.classes)
        self.settings = settings
        self.pending: list[_Candidate] = []
        self.kept: list[MinedFace] = []
        self.judged = 0
        self.unsure = 0

    @property
    def margin(self) -> float:
        """The widest view's margin: how much of the image a candidate keeps around its face."""
        return self.views.crop_margin + max(TTA_MARGIN_OFFSETS)

    def add(self, candidates: Iterable[_Candidate]) -> None:
        self.pending.extend(candidates)
        if len(self.pending) >= _SCORE_BATCH:
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        crops = [view for c in batch for view in self.views.face_views(c.patch, c.patch_box)]
        per_view = self.views.classify(crops).reshape(len(batch), self.views.views_per_face, len(self.classes))
        self.judged += len(batch)
        for candidate, probabilities in zip(batch, per_view, strict=True):
            judgement = view_uncertainty(
                probabilities, self.classes, threshold=self.settings.threshold, spread=self.settings.spread
            )
            if not judgement.reasons:
                continue
            self.unsure += 1
            self.kept.append(
                MinedFace(
                    name=face_file_name(candidate.source, candidate.frame, candidate.box),
                    source=candidate.source,
                    frame=candidate.frame,
                    timestamp=candidate.timestamp,
                    box=candidate.box,
                    score=candidate.score,
                    track_id=candidate.track_id,
                    judgement=judgement,
                    crop=np.ascontiguousarray(self.views.crops(candidate.patch, candidate.patch_box)[0]),
                )
            )
        limit = self.settings.limit
        if limit is not None and len(self.kept) > 2 * limit:
            self.kept = sorted(self.kept, key=lambda f: f.rank_key)[:limit]

    def ranked(self) -> list[MinedFace]:
        self.flush()
        return sorted(self.kept, key=lambda f: f.rank_key)[: self.settings.limit]


# --------------------------------------------------------------------------------------------------------
# the run


FrameCallback = Callable[[str, int | None], None]  # (source name, frames expected) per analysed frame


def mine(
    detector: MaskDetector,
    inputs: MineInputs | Sequence[str | os.PathLike[str]],
    *,
    crops_only: bool = False,
    preset: str = "auto",
    stride: int = 1,
    fps: float | None = None,
    track: bool = True,
    settings: MineSettings | None = None,
    on_frame: FrameCallback | None = None,
) -> MiningResult:
    """Find the unsure faces of ``inputs`` (see the module docstring). ``preset``: the engine's detector
    views (``auto``: accurate for still images, fast for videos); ``stride`` / ``fps``: which video frames
    are analysed; ``track``: ByteTrack ids in videos (else box overlap alone merges a person's faces).
    Ctrl-C stops early; what was found so far is returned with ``interrupted`` set."""
    settings = settings or MineSettings()
    if not isinstance(inputs, MineInputs):
        inputs = resolve_inputs(inputs)
    if preset != "auto" and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose auto or one of {', '.join(PRESETS)}")
    judge = _Judge(detector, settings)
    result = MiningResult(faces=[], classes=list(judge.classes))
    started = time.perf_counter()
    if crops_only:
        _mine_crops(inputs, judge, result, on_frame)
    else:
        _mine_scenes(detector, inputs, judge, result, preset, stride, fps, track, on_frame)
    result.faces = judge.ranked()
    result.candidates = judge.judged
    result.unsure = judge.unsure
    result.seconds = time.perf_counter() - started
    return result


def _mine_crops(inputs: MineInputs, judge: _Judge, result: MiningResult, on_frame: FrameCallback | None) -> None:
    """Each image is one face, framed like the classifier's crops: its box is the image less the model's
    margin, so the middle view is the whole image."""
    if inputs.videos:
        raise SourceError(f"--crops-only reads face images, not videos ({inputs.videos[0]})")
    source = ImageSource(inputs.images)
    inset = judge.views.crop_margin / (1 + 2 * judge.views.crop_margin)
    try:
        for frame in source:
            h, w = frame.image.shape[:2]
            box = (inset * w, inset * h, w - inset * w, h - inset * h)
            judge.add([_candidate(frame.image, box, judge.margin, source=frame.source, frame=0, timestamp=None,
                                  score=None, track_id=None, probability=1.0)])  # fmt: skip
            result.frames += 1
            result.faces_seen += 1
            if on_frame is not None:
                on_frame("crops", len(source))
    except KeyboardInterrupt:
        result.interrupted = True
    result.skipped, result.skipped_reasons = source.stats.skipped, list(source.stats.reasons)


def _mine_scenes(
    detector: MaskDetector,
    inputs: MineInputs,
    judge: _Judge,
    result: MiningResult,
    preset: str,
    stride: int,
    fps: float | None,
    track: bool,
    on_frame: FrameCallback | None,
) -> None:
    """Run the engine over the inputs and turn its analysed frames into candidates."""
    from maskwatch.core.events import SourceSummary
    from maskwatch.stream.engine import AnalysedFrame

    config = EngineConfig(
        classify_every=None,  # every face classified on every frame: a person's least sure frame is wanted
        min_track_frames=1,
        image_preset="accurate" if preset == "auto" else preset,
        video_preset="fast" if preset == "auto" else preset,
        stop_when_done=True,
        stats_interval=3600.0,
    )
    # one crop per face: the views are judged afterwards, on the few faces kept, so the ``accurate``
    # preset's six crops would be classified twice
    engine = StreamEngine(detector, config, detectors=PresetDetectors(detector, classify_tta=False))
    if inputs.images:
        name = str(inputs.images[0]) if len(inputs.images) == 1 else f"{len(inputs.images)} images"
        engine.add_source(SourceSpec(uri=name, name=name, paths=list(inputs.images)))
    for video in inputs.videos:
        engine.add_source(SourceSpec(uri=str(video), name=str(video), stride=stride, target_fps=fps, track=track))
    people: dict[str, _VideoPeople] = {}
    subscription = engine.events(frames=True)
    engine.start()
    while True:
        try:
            for item in _until_ended(engine, subscription):
                if isinstance(item, AnalysedFrame):
                    faces = item.result.faces
                    result.frames += 1
                    result.faces_seen += len(faces)
                    if item.frame.kind == "image":
                        judge.add(
                            _candidate(item.frame.image, faces.boxes[i], judge.margin, source=item.frame.source,
                                       frame=0, timestamp=None, score=float(faces.scores[i]), track_id=None,
                                       probability=float(faces.best_probabilities[i]))
                            for i in range(len(faces))
                        )  # fmt: skip
                    else:
                        group = people.setdefault(item.source, _VideoPeople(judge.settings))
                        judge.add(group.add_frame(item.frame, faces, judge.margin))
                    if on_frame is not None:
                        on_frame(item.source, item.expected)
                elif isinstance(item, SourceSummary) and item.source in people:
                    judge.add(people.pop(item.source).close())
            break
        except KeyboardInterrupt:
            result.interrupted = True
            engine.stop(0)  # ask only: the sources' last frames and events still arrive in this subscription
    for group in people.values():
        judge.add(group.close())
    for summary in engine.summaries.values():  # the engine's own account, whatever events were missed
        result.skipped += summary.skipped
        result.skipped_reasons.extend(summary.skipped_reasons)
        if summary.error:
            result.failed_sources.append(f"{summary.source}: {summary.error}")


def _until_ended(engine: StreamEngine, subscription: Subscription) -> Iterator[Any]:
    """The subscription's items until the engine has ended and they are all read. Not a plain ``for``: the
    engine gives a full queue only half a second to take its end marker, and judging a batch of faces
    between two frames can take longer than that, so a plain loop could wait for ever."""
    while True:
        try:
            yield subscription.get(timeout=0.25)
        except StopIteration:
            return
        except queue.Empty:
            if not engine.join(0):
                continue
            while True:  # ended: what is still queued, then stop
                try:
                    yield subscription.get(timeout=0)
                except (StopIteration, queue.Empty):
                    return


# --------------------------------------------------------------------------------------------------------
# the review folder


@dataclass
class ReviewWrite:
    """What :func:`write_review` did."""

    folder: Path
    ledger: Path
    written: list[Path] = field(default_factory=list)  # new files
    already: list[str] = field(default_factory=list)  # faces mined by an earlier run (kept where they are)
    errors: list[str] = field(default_factory=list)  # files that could not be written, with the reason
    per_class: dict[str, int] = field(default_factory=dict)  # new files per predicted class


def read_ledger(folder: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of ``folder/mined.csv`` (none when it does not exist); :class:`LedgerError` when it is not
    a ledger this module wrote (checked before any work, so a run cannot end by refusing to write it)."""
    path = Path(folder) / LEDGER_NAME
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != LEDGER_FIELDS:
                raise LedgerError(
                    f"{path} is not a maskwatch mine ledger (columns {reader.fieldnames}); "
                    "move it away or pick another --out"
                )
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LedgerError(f"cannot read {path}: {exc}") from exc


def _present(folder: Path) -> set[str]:
    """File names already in the review folder's class folders (wherever a person moved them)."""
    if not folder.is_dir():
        return set()
    return {p.name for sub in folder.iterdir() if sub.is_dir() for p in sub.rglob("*.jpg") if p.is_file()}


def _write_bytes(data: bytes, path: Path) -> None:
    path.write_bytes(data)


def write_review(
    folder: str | os.PathLike[str], result: MiningResult, *, classes: Sequence[str] | None = None
) -> ReviewWrite:
    """Write ``result``'s faces into ``folder/<predicted class>/`` and rewrite ``folder/mined.csv``
    atomically (earlier rows kept, new faces appended in rank order). Every class of the model gets its
    folder, empty or not, so a person can move a file to any class. Faces already mined there (by name, in
    the ledger or in any class folder) are not written again."""
    from maskwatch.checkpoint import atomic_write

    folder = Path(folder)
    rows = read_ledger(folder)
    known = {Path(row["file"]).name for row in rows} | _present(folder)
    report = ReviewWrite(folder, folder / LEDGER_NAME)
    for name in classes or result.classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for face in result.faces:
        if face.name in known:
            report.already.append(face.name)
            continue
        target = folder / face.label / face.name
        try:
            atomic_write(target, partial(_write_bytes, encode_jpeg(face.crop, quality=95)))
        except (OSError, ValueError) as exc:  # JpegError is a ValueError
            report.errors.append(f"{target}: {exc}")
            continue
        known.add(face.name)
        report.written.append(target)
        report.per_class[face.label] = report.per_class.get(face.label, 0) + 1
        rows.append(face.row(f"{face.label}/{face.name}"))

    def dump(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=LEDGER_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(report.ledger, dump)
    return report
