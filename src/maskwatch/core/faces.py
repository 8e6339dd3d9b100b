"""``Faces``: every face found in one image, column by column: the one currency from the face detector to
the tracker, the classifier step, drawing, blurring, counting and the events.

A face is a row; each column is one numpy array with a row per face, so a boolean mask or an index array
selects the same faces from every column at once (``faces[faces.kept]``), and nothing is copied face by
face. The columns:

========================  ===========  =================================================================
``boxes``                 (n, 4)       x0, y0, x1, y1 in image pixels
``scores``                (n,)         the face detector's score, 0..1 (fused over its views)
``landmarks``             (n, 5, 2)    x, y: eye on the image left, eye on the image right, nose tip,
                                       mouth corner left, right (zeros when a detector gives none)
``probabilities``         (n, k)       the classifier's class probabilities, in the order of ``classes``;
                                       a row of NaN: not classified (yet)
``track_ids``             (n,)         the tracker's id; :data:`NO_TRACK` (-1): not part of a track
``track_probabilities``   (n, k)       the track's verdict so far (mean over its classified frames);
                                       NaN: no verdict
``classified``            (n,)         classified on this frame (False: a track's verdict was reused, or
                                       not classified at all)
``kept``                  (n,)         the faces that count: passed the pipeline's gates (detector score,
                                       classifier confidence). Rows not kept stay in the frame's
                                       candidates (privacy blurs from the candidates, not only the kept)
``predicted``             (n,)         the tracker's box, not the detector's: the detector did not run on
                                       this frame (the stream engine's detector interval and motion gate)
                                       and the face was carried from its last detection along its track
========================  ===========  =================================================================

``classes`` names the probability columns. A detector's faces have no classes yet (``k`` = 0); the
pipeline widens them to its model's classes (:meth:`Faces.with_classes`) before classifying.

Iterating (or indexing with an int) gives light row views (:class:`FaceView`: ``face.box``,
``face.label``, ``face.probability`` ...) over the same arrays, for code that reads one face at a time;
they are views, not a second type the data is converted into. The wire format of a face (pydantic
:class:`~maskwatch.core.events.FaceRecord`) is made from these columns only where an event is built.

numpy only (the leaf layer): reading faces never imports OpenCV or a model runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from maskwatch.core.contract import compliance_rate
from maskwatch.core.geometry import Box

__all__ = ["NO_TRACK", "FaceView", "Faces"]

NO_TRACK = -1  # ``track_ids`` of a face that is not part of a (confirmed) track

_COLUMNS = (
    "boxes",
    "scores",
    "landmarks",
    "probabilities",
    "track_ids",
    "track_probabilities",
    "classified",
    "kept",
    "predicted",
)


def _r(value: float, digits: int = 4) -> float:
    return float(round(float(value), digits))


class Faces:
    """The faces of one image, columnar (see the module docstring for the columns).

    Build it from arrays (every column but ``boxes`` and ``scores`` is optional: landmarks zeros, no
    probabilities, no track, not classified, kept, not predicted); select rows with a boolean mask, an index
    array or a slice (``faces[faces.scores >= 0.5]``); :meth:`replace` gives a copy with some columns changed.
    The arrays are not copied on construction and should be treated as read-only: every method returns a new
    ``Faces``.
    """

    __slots__ = (*_COLUMNS, "classes")

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    probabilities: np.ndarray
    track_ids: np.ndarray
    track_probabilities: np.ndarray
    classified: np.ndarray
    kept: np.ndarray
    predicted: np.ndarray
    classes: tuple[str, ...]

    def __init__(
        self,
        boxes: Any,
        scores: Any,
        landmarks: Any = None,
        *,
        classes: Sequence[str] = (),
        probabilities: Any = None,
        track_ids: Any = None,
        track_probabilities: Any = None,
        classified: Any = None,
        kept: Any = None,
        predicted: Any = None,
    ) -> None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        k = len(classes)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        landmarks = np.zeros((n, 5, 2)) if landmarks is None else np.asarray(landmarks, dtype=np.float64)
        probabilities = (
            np.full((n, k), np.nan) if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        )
        track_ids = np.full(n, NO_TRACK, dtype=np.int64) if track_ids is None else np.asarray(track_ids, np.int64)
        track_probabilities = (
            np.full((n, k), np.nan)
            if track_probabilities is None
            else np.asarray(track_probabilities, dtype=np.float64)
        )
        classified = np.zeros(n, dtype=bool) if classified is None else np.asarray(classified, dtype=bool)
        kept = np.ones(n, dtype=bool) if kept is None else np.asarray(kept, dtype=bool)
        predicted = np.zeros(n, dtype=bool) if predicted is None else np.asarray(predicted, dtype=bool)
        shapes = {
            "scores": (scores, (n,)),
            "landmarks": (landmarks, (n, 5, 2)),
            "probabilities": (probabilities, (n, k)),
            "track_ids": (track_ids, (n,)),
            "track_probabilities": (track_probabilities, (n, k)),
            "classified": (classified, (n,)),
            "kept": (kept, (n,)),
            "predicted": (predicted, (n,)),
        }
        for name, (array, shape) in shapes.items():
            if array.shape != shape:
                raise ValueError(
                    f"Faces.{name} must have shape {shape} for {n} boxes and {k} classes, got {array.shape}"
                )
        columns = (boxes, scores, landmarks, probabilities, track_ids, track_probabilities, classified, kept, predicted)
        self._set(*columns, classes)

    def _set(self, *columns: Any) -> None:
        for name, value in zip((*_COLUMNS, "classes"), columns, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "classes", tuple(self.classes))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Faces is immutable: use replace(...) for a copy with other columns")

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickling and copying rebuild through the constructor (the columns are read-only by convention)."""
        columns = {name: getattr(self, name) for name in _COLUMNS if name not in ("boxes", "scores", "landmarks")}
        return (_rebuild, (self.boxes, self.scores, self.landmarks, self.classes, columns))

    @classmethod
    def _of(cls, columns: Mapping[str, np.ndarray], classes: tuple[str, ...]) -> Faces:
        """A ``Faces`` from columns known to be consistent (selections): no checks, no conversion."""
        out = cls.__new__(cls)
        out._set(*(columns[name] for name in _COLUMNS), classes)
        return out

    @classmethod
    def empty(cls, classes: Sequence[str] = ()) -> Faces:
        """No face (with these probability columns)."""
        return cls(np.zeros((0, 4)), np.zeros(0), classes=classes)

    @classmethod
    def concat(cls, parts: Iterable[Faces], classes: Sequence[str] | None = None) -> Faces:
        """The rows of ``parts``, in order. Parts without classes (a detector's) take those of the others;
        two different class lists are an error. ``classes``: the result's, when every part is empty."""
        items = list(parts)
        named = {p.classes for p in items if p.classes}
        if len(named) > 1:
            raise ValueError(f"cannot concatenate faces of different classes: {sorted(named)}")
        names = next(iter(named)) if named else tuple(classes or ())
        if classes is not None and named and tuple(classes) != names:
            raise ValueError(f"faces have classes {list(names)}, not {list(classes)}")
        items = [p.with_classes(names) for p in items]
        if not items:
            return cls.empty(names)
        return cls._of({name: np.concatenate([getattr(p, name) for p in items]) for name in _COLUMNS}, names)

    # -- selecting ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    @overload
    def __getitem__(self, index: int | np.integer) -> FaceView: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray | Sequence[int] | Sequence[bool]) -> Faces: ...

    def __getitem__(self, index: Any) -> FaceView | Faces:
        """An int gives that face's :class:`FaceView`; a boolean mask (length n), an index array or a slice
        gives a ``Faces`` of those rows, every column selected the same way."""
        if isinstance(index, int | np.integer):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"face {index} of {n}")
            return FaceView(self, int(index) % n)
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool and index.shape != (len(self),):
                raise IndexError(f"a boolean mask must have one value per face ({len(self)}), got {index.shape}")
            if index.dtype != bool and index.size and not np.issubdtype(index.dtype, np.integer):
                raise IndexError(f"select faces with a boolean mask, indices or a slice, got {index.dtype}")
            if index.dtype != bool and not index.size:
                index = index.astype(np.int64)
        return Faces._of({name: getattr(self, name)[index] for name in _COLUMNS}, self.classes)

    def __iter__(self) -> Iterator[FaceView]:
        return (FaceView(self, i) for i in range(len(self)))

    def __bool__(self) -> bool:
        return len(self) > 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Faces):
            return NotImplemented
        return self.classes == other.classes and all(
            np.array_equal(
                getattr(self, name),
                getattr(other, name),
                equal_nan=np.issubdtype(getattr(self, name).dtype, np.floating),
            )
            for name in _COLUMNS
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Faces(n={len(self)}, classes={list(self.classes)}, kept={int(self.kept.sum())})"

    # -- changing (copies) -------------------------------------------------------------------------------

    def replace(self, **columns: Any) -> Faces:
        """A copy with the given columns (and/or ``classes``) replaced, checked like the constructor."""
        unknown = set(columns) - {*_COLUMNS, "classes"}
        if unknown:
            raise TypeError(f"unknown Faces columns: {sorted(unknown)}")
        if "classes" in columns or "boxes" in columns:  # the row count or the class columns may change
            values: dict[str, Any] = {name: getattr(self, name) for name in _COLUMNS}
            values.update(columns)
            classes = values.pop("classes", self.classes)
            boxes, scores = values.pop("boxes"), values.pop("scores")
            return Faces(boxes, scores, classes=classes, **values)
        # the common case on every frame (flags, probabilities, track ids): only the new columns are checked
        out = {name: getattr(self, name) for name in _COLUMNS}
        for name, value in columns.items():
            old = out[name]
            array = np.asarray(value, dtype=old.dtype)
            if array.shape != old.shape:
                raise ValueError(f"Faces.{name} must have shape {old.shape}, got {array.shape}")
            out[name] = array
        return Faces._of(out, self.classes)

    def with_classes(self, classes: Sequence[str]) -> Faces:
        """These faces with probability columns for ``classes``: unchanged when they already have them, and
        unclassified (NaN) when they had none (a detector's faces)."""
        classes = tuple(classes)
        if classes == self.classes:
            return self
        if self.classes:
            raise ValueError(f"faces have classes {list(self.classes)}, not {list(classes)}")
        n, k = len(self), len(classes)
        return self.replace(
            classes=classes, probabilities=np.full((n, k), np.nan), track_probabilities=np.full((n, k), np.nan)
        )

    def put(self, rows: Any, other: Faces) -> Faces:
        """A copy with the faces at ``rows`` (indices or a mask) replaced by ``other``'s, row for row."""
        index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
        if len(index) != len(other):
            raise ValueError(f"{len(index)} rows to replace, {len(other)} faces given")
        other = other.with_classes(self.classes) if not other.classes else other
        if other.classes != self.classes:
            raise ValueError(f"faces have classes {list(other.classes)}, not {list(self.classes)}")
        columns = {}
        for name in _COLUMNS:
            column = getattr(self, name).copy()
            column[index] = getattr(other, name)
            columns[name] = column
        return Faces._of(columns, self.classes)

    # -- derived columns ---------------------------------------------------------------------------------

    @property
    def has_probabilities(self) -> np.ndarray:
        """(n,) bool: the rows with class probabilities (classified now, or a reused verdict)."""
        if not self.classes:
            return np.zeros(len(self), dtype=bool)
        return ~np.isnan(self.probabilities).any(axis=1)

    @property
    def labels(self) -> np.ndarray:
        """(n,) int: index in ``classes`` of each face's most likely class; -1 where it has no probabilities."""
        return _argmax(self.probabilities, self.has_probabilities)

    @property
    def label_names(self) -> list[str | None]:
        """Each face's most likely class name (None where it has no probabilities)."""
        return [self.classes[i] if i >= 0 else None for i in self.labels]

    @property
    def best_probabilities(self) -> np.ndarray:
        """(n,) float: the probability of each face's most likely class (NaN where it has none)."""
        if not self.classes:
            return np.full(len(self), np.nan)
        out = np.full(len(self), np.nan)
        ok = self.has_probabilities
        out[ok] = self.probabilities[ok].max(axis=1)
        return out

    @property
    def confidence(self) -> np.ndarray:
        """(n,) float: detector score x class probability, the score faces are ranked by (AP, gates)."""
        return self.scores * self.best_probabilities

    @property
    def sizes(self) -> np.ndarray:
        """(n,) float: the longest side of each box in pixels."""
        return np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])

    @property
    def tracked(self) -> np.ndarray:
        """(n,) bool: the faces that are part of a track."""
        return self.track_ids != NO_TRACK

    @property
    def has_verdict(self) -> np.ndarray:
        """(n,) bool: tracked faces whose track has a verdict."""
        if not self.classes:
            return np.zeros(len(self), dtype=bool)
        return ~np.isnan(self.track_probabilities).any(axis=1)

    @property
    def track_labels(self) -> np.ndarray:
        """(n,) int: index in ``classes`` of each face's track verdict; -1 where there is none."""
        return _argmax(self.track_probabilities, self.has_verdict)

    @property
    def shown_labels(self) -> np.ndarray:
        """(n,) int: what a face is shown and counted as in a video: its track's verdict when tracked, else
        this frame's label (-1: neither)."""
        return np.where(self.has_verdict, self.track_labels, self.labels)

    # -- counting ----------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Faces per class of this frame's labels (every class, zeros included; faces without one are not
        counted). Count the faces that count: ``faces[faces.kept].counts()``."""
        labels = self.labels
        tally = np.bincount(labels[labels >= 0], minlength=len(self.classes))
        return {name: int(tally[i]) for i, name in enumerate(self.classes)}

    def compliance(self, compliant_classes: Sequence[str] | None = None) -> float | None:
        """Faces of a compliant class / faces counted (None without any; see
        :func:`~maskwatch.core.contract.compliance_rate`)."""
        return compliance_rate(self.counts(), self.classes, compliant_classes)


def _rebuild(
    boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, classes: Sequence[str], columns: dict[str, Any]
) -> Faces:
    return Faces(boxes, scores, landmarks, classes=classes, **columns)


def _argmax(probabilities: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.full(len(ok), -1, dtype=np.int64)
    if ok.any():
        out[ok] = probabilities[ok].argmax(axis=1)
    return out


class FaceView:
    """One row of a :class:`Faces` (what iterating or ``faces[i]`` gives): reads that face's values from
    the columns, with the names a per-face record would have."""

    __slots__ = ("faces", "index")

    def __init__(self, faces: Faces, index: int) -> None:
        self.faces = faces
        self.index = index

    @property
    def box(self) -> Box:
        x0, y0, x1, y1 = (float(v) for v in self.faces.boxes[self.index])
        return x0, y0, x1, y1

    @property
    def score(self) -> float:
        return float(self.faces.scores[self.index])

    @property
    def landmarks(self) -> np.ndarray:
        """(5, 2) x, y (see :class:`Faces`)."""
        return self.faces.landmarks[self.index]

    def _row(self, column: np.ndarray) -> np.ndarray | None:
        """This face's row of a probability column (None when it has no values there)."""
        if not self.faces.classes:
            return None
        row = column[self.index]
        return None if np.isnan(row).any() else row

    @property
    def label(self) -> str | None:
        """The most likely class (None: not classified)."""
        row = self._row(self.faces.probabilities)
        return None if row is None else self.faces.classes[int(np.argmax(row))]

    @property
    def probability(self) -> float | None:
        """That class's probability."""
        row = self._row(self.faces.probabilities)
        return None if row is None else float(np.max(row))

    @property
    def probabilities(self) -> dict[str, float]:
        """Every class's probability ({} when not classified)."""
        row = self._row(self.faces.probabilities)
        if row is None:
            return {}
        return {name: float(v) for name, v in zip(self.faces.classes, row, strict=True)}

    @property
    def confidence(self) -> float | None:
        """Detector score x class probability."""
        p = self.probability
        return None if p is None else self.score * p

    @property
    def size(self) -> float:
        """The longest side of the box in pixels."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    @property
    def track_id(self) -> int | None:
        value = int(self.faces.track_ids[self.index])
        return None if value == NO_TRACK else value

    @property
    def track_label(self) -> str | None:
        """The track's verdict so far (votes over its frames); None without one."""
        row = self._row(self.faces.track_probabilities)
        return None if row is None else self.faces.classes[int(np.argmax(row))]

    @property
    def track_probability(self) -> float | None:
        row = self._row(self.faces.track_probabilities)
        return None if row is None else float(np.max(row))

    @property
    def classified(self) -> bool:
        return bool(self.faces.classified[self.index])

    @property
    def kept(self) -> bool:
        return bool(self.faces.kept[self.index])

    @property
    def predicted(self) -> bool:
        """The tracker's box (the detector did not run on this frame)."""
        return bool(self.faces.predicted[self.index])

    def to_dict(self) -> dict[str, Any]:
        """This face as JSON-ready values (the scene pipeline's JSON output)."""
        probability, confidence = self.probability, self.confidence
        out: dict[str, Any] = {
            "box": [_r(v, 1) for v in self.box],
            "score": _r(self.score),
            "label": self.label,
            "probability": None if probability is None else _r(probability),
            "probabilities": {k: _r(v) for k, v in self.probabilities.items()},
            "confidence": None if confidence is None else _r(confidence),
            "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in self.landmarks],
        }
        if self.track_id is not None:
            out["track_id"] = self.track_id
            out["track_label"] = self.track_label
            track_probability = self.track_probability
            out["track_probability"] = None if track_probability is None else _r(track_probability)
        return out

    def __repr__(self) -> str:
        return f"FaceView(box={tuple(round(v, 1) for v in self.box)}, score={self.score:.3f}, label={self.label!r})"
