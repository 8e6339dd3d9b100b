"""Study: what it takes to analyse one 640x480 stream at >= 25 frames/s (and four at >= 6) on 2 cores.

    .venv/bin/python benchmarks/study_stream.py                         # every part (about 25 min)
    .venv/bin/python benchmarks/study_stream.py --parts sizes,camera    # some parts only
    .venv/bin/python benchmarks/study_stream.py --rounds 9 --json benchmarks/results/stream_study.json

Parts (each one's results are merged into ``--json`` under its name, so parts can be run separately):

* ``sizes``: CenterFace run once (no flip) with the longest side at each of ``--sizes`` on the shared scenes
  (``MaskDetector(scales=(S,), flip=False).find_faces``, operating point score >= 0.3 as ``evaluate_voc``):
  face recall at IoU 0.5 by face size (longest side of the annotated box, original image pixels), recall at
  IoU 0.3, precision, face AP; plus the detector's ms per 640x480 frame at each size.
* ``camera``: the same on 640x480 "camera frames" (each scene image scaled to fit 640x480 and centred on a
  black canvas; boxes and size buckets in frame pixels), so that S = 640 means no resizing at all.
* ``int8det``: CenterFace quantized with ONNX Runtime (opset 9 -> 13, then static QDQ and QOperator, and
  QDQ with the output heads (the convolutions producing the outputs, and the sigmoid) left in fp32,
  per-channel int8 weights, uint8 activations, MinMax, calibrated on ``--calib`` 640x480 camera frames; and
  dynamic), face recall on all scenes and ms per 640x480 frame at each of ``--int8-sizes``, fp32 and each
  INT8 model side by side (a model over 3x slower than fp32 on a first pass is only timed once).
* ``camera_int8``: face recall on the camera frames for fp32 and each INT8 detector at ``--int8-sizes``.
* ``int8cls``: the bundled classifier as ONNX fp32 vs INT8 (``maskwatch export --format onnx-int8``'s recipe,
  via the export cache), ms per face at batch sizes 1, 4, 8 on real scene face crops (``predict_proba``,
  preprocessing included; ``session.run`` alone too).
* ``costs``: other per-frame costs on 640x480: mp4 decode (cv2.VideoCapture), MJPEG decode (cv2.imdecode),
  BGR->RGB, the detector's own pre/post-processing, ``to_batch`` of a frame's crops, ByteTrack
  (``FaceTracker.update``), ``draw_result``, JPEG encode, mp4 encode.
* ``threads``: detector alone on 640x480: one session with 1 vs 2 intra-op threads, serial; two 1-thread
  sessions driven by two Python threads at once; one 2-thread session driven by two Python threads.
  (Also for the INT8 detector when ``int8det`` has written it.)
* ``batch``: whether CenterFace runs a batch of N 640x480 frames in one call (outputs equal to one by one),
  and ms per frame at batch 1, 2, 4 (fp32, and INT8 QDQ when written).
* ``dettime``: the detector's ms per 640x480 frame, fp32 at every ``--sizes`` and each INT8 model at every
  ``--int8-sizes``, all in one interleaved set (the headline speed table; needs ``int8det`` first).
* ``e2e``: whole frames of a 640x480 video (20 scenes images, ``--e2e-hold`` frames each): detection, every
  face classified, ByteTrack, drawing; today's fast preset vs INT8 classifier vs INT8 detector (640, 512),
  detector-only (the bound of a per-track classification budget), and two Python threads each running its
  own pipeline with 1-thread sessions (several streams). Frames/s; decoding and encoding not included.

Timings: variants run in one process, interleaved round by round (the order rotates each round); each
figure is the median over rounds, each ratio the median of per-round ratios. ONNX Runtime sessions are
opened as ``MaskDetector.load`` opens them (2 threads, no spinning) unless a part says otherwise. The JSON
records the load average before and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MASKWATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scenes"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "stream_study.json"
FRAME_W, FRAME_H = 640, 480
BUCKETS = ("<20", "20-32", "32-64", ">=64", ">=20", "all")
OPERATING_THRESHOLD = 0.3  # MaskDetector's score_threshold (evaluate_voc's operating point)
CANDIDATE_THRESHOLD = 0.1  # MaskDetector.load's candidate_threshold


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_info() -> dict[str, Any]:
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"loadavg": [round(v, 2) for v in os.getloadavg()], "uptime": up, "time": time.strftime("%H:%M:%S")}


# --------------------------------------------------------------------------------------------------------
# data


def load_scenes(data: Path, limit: int = 0) -> list[tuple[str, np.ndarray, dict[str, Any]]]:
    """(name, RGB image, VOC target) for every readable annotated scene, decoded as evaluate_voc does."""
    from maskwatch.data.datasets import voc_image_for
    from maskwatch.data.images import load_rgb
    from maskwatch.detection.evaluation import read_voc, voc_target

    out = []
    for xml in sorted((data / "annotations").glob("*.xml"))[: limit or None]:
        image = voc_image_for(xml, data / "images")
        if image is None:
            continue
        out.append((xml.stem, np.asarray(load_rgb(image)), voc_target(read_voc(xml))))
    return out


def camera_frame(rgb: np.ndarray, target: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The image scaled to fit 640x480, centred on a black 640x480 canvas; its boxes mapped likewise."""
    h, w = rgb.shape[:2]
    scale = min(FRAME_W / w, FRAME_H / h)
    nw, nh = round(w * scale), round(h * scale)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interp)
    x0, y0 = (FRAME_W - nw) // 2, (FRAME_H - nh) // 2
    frame = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    frame[y0 : y0 + nh, x0 : x0 + nw] = resized
    boxes = target["boxes"] * [nw / w, nh / h, nw / w, nh / h] + [x0, y0, x0, y0]
    return frame, {"boxes": boxes, "labels": list(target["labels"])}


class _NoClassifier:
    """Stand-in classifier: these studies only need the face boxes (``MaskDetector.find_faces``)."""

    classes = ("with_mask", "without_mask")

    def predict_proba(self, images):  # pragma: no cover - never called
        raise NotImplementedError


def face_finder(model_path: str | None = None, threads: int = 2, spin: bool = False):
    """CenterFace opened exactly as ``MaskDetector.load`` opens it."""
    from maskwatch.detection.centerface import CenterFaceDetector

    return CenterFaceDetector(model_path, score_threshold=CANDIDATE_THRESHOLD, max_side=None, box_adjust=None,
                              threads=threads, spin=spin)  # fmt: skip


def pipeline(finder, side: int):
    from maskwatch.detection.pipeline import MaskDetector

    return MaskDetector(_NoClassifier(), finder, scales=(side,), flip=False)


# --------------------------------------------------------------------------------------------------------
# measuring


def face_scores(detector, samples: list[tuple[np.ndarray, dict[str, Any]]]) -> dict[str, Any]:
    """Recall by size etc. at the operating point, plus class-agnostic AP over all candidates."""
    from maskwatch.detection.evaluation import average_precision, evaluate_detection

    operating, candidates, targets = [], [], []
    for rgb, target in samples:
        faces = detector.find_faces(rgb)
        boxes, scores = faces.boxes, faces.scores
        keep = scores >= OPERATING_THRESHOLD
        operating.append({"boxes": boxes[keep], "scores": scores[keep]})
        candidates.append({"boxes": boxes, "scores": scores, "labels": [0] * len(scores)})
        targets.append(target)
    m = evaluate_detection(operating, targets, classes=[])
    ap = average_precision(candidates, [{"boxes": t["boxes"], "labels": [0] * len(t["boxes"])} for t in targets],
                           ["face"])["face"]  # fmt: skip
    r = lambda d: {b: round(float(d[b]), 4) for b in BUCKETS}
    return {"recall": r(m["recall"]), "recall_iou30": r(m["recall_iou30"]), "precision": round(m["precision"], 4),
            "ap50_face_all_candidates": round(ap, 4), "n_faces_by_bucket": m["n_faces_by_bucket"],
            "n_predictions": m["n_predictions"], "count_mae": round(m["count_mae"], 3)}  # fmt: skip


def interleaved(variants: dict[str, Callable[[], int]], rounds: int, baseline: str | None = None) -> dict[str, Any]:
    """Run each variant once per round (order rotating); each call returns how many units it processed.
    Returns per variant: ms per unit (median, min, all rounds) and the median per-round ratio to ``baseline``."""
    names = list(variants)
    per: dict[str, list[float]] = {n: [] for n in names}
    for k in range(rounds):
        order = names[k % len(names) :] + names[: k % len(names)]
        for name in order:
            t0 = time.perf_counter()
            units = variants[name]()
            per[name].append(1000 * (time.perf_counter() - t0) / max(units, 1))
    out: dict[str, Any] = {}
    for name in names:
        v = per[name]
        out[name] = {"ms_median": round(statistics.median(v), 3), "ms_min": round(min(v), 3),
                     "ms_rounds": [round(x, 3) for x in v]}  # fmt: skip
        if baseline is not None:
            ratios = [b / x for b, x in zip(per[baseline], v, strict=True)]
            out[name]["speedup_vs_" + baseline] = round(statistics.median(ratios), 3)
    return out


def test_frames(scenes, n: int) -> list[np.ndarray]:
    """``n`` 640x480 camera frames from scenes with faces (a fixed, spread-out choice)."""
    step = max(1, len(scenes) // n)
    return [camera_frame(rgb, t)[0] for _, rgb, t in scenes[::step][:n]]


# --------------------------------------------------------------------------------------------------------
# parts


def part_sizes(args, scenes, camera: bool) -> dict[str, Any]:
    finder = face_finder()
    detectors = {s: pipeline(finder, s) for s in args.sizes}
    samples = [camera_frame(rgb, t) if camera else (rgb, t) for _, rgb, t in scenes]
    quality = {}
    for s, det in detectors.items():
        t0 = time.perf_counter()
        quality[s] = face_scores(det, samples)
        where = "camera" if camera else "scenes"
        log(f"{where} {s}px: recall {quality[s]['recall']} ({time.perf_counter() - t0:.0f} s)")
    base = quality[args.sizes[0]]["recall"]
    for s in args.sizes:
        quality[s]["recall_delta_vs_" + str(args.sizes[0])] = {b: round(quality[s]["recall"][b] - base[b], 4)
                                                               for b in BUCKETS}  # fmt: skip
    out: dict[str, Any] = {"quality": {str(s): q for s, q in quality.items()}}
    if not camera:  # timing on 640x480 frames, once (the camera part would repeat it)
        frames = test_frames(scenes, args.frames)

        def run(det):
            def go():
                for f in frames:
                    det.find_faces(f)
                return len(frames)

            return go

        for det in detectors.values():
            run(det)()  # warm-up: ORT plans memory per shape
        timing = interleaved({str(s): run(d) for s, d in detectors.items()}, args.rounds, str(args.sizes[0]))
        out["ms_per_640x480_frame"] = timing
        key = "speedup_vs_" + str(args.sizes[0])
        log("find_faces ms/frame: " + ", ".join(f"{s} {t['ms_median']:.1f} (x{t[key]:.2f})" for s, t in timing.items()))
    return out


def _detector_input(finder, frames) -> list[np.ndarray]:
    return [finder._prepare(f, 1.0)[0] for f in frames]


def quantize_centerface(work: Path, calib: list[np.ndarray], input_name: str) -> dict[str, Path]:
    """fp32 (dynamic shapes) and INT8 variants of CenterFace in ``work``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,  # fmt: skip
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from maskwatch.detection.centerface import find_centerface_model, make_dynamic

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.k = 0

        def get_next(self):
            if self.k >= len(calib):
                return None
            self.k += 1
            return {input_name: calib[self.k - 1]}

        def rewind(self):
            self.k = 0

    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "centerface-fp32-dynamic.onnx"
    fp32.write_bytes(make_dynamic(find_centerface_model().read_bytes()))
    # the file is opset 9, whose DequantizeLinear has no axis: per-channel QDQ needs opset >= 13
    import onnx
    from onnx import version_converter

    opset13 = work / "centerface-fp32-opset13.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(fp32)), 13), str(opset13))
    pre = work / "centerface-fp32-pre.onnx"
    # symbolic shape inference fails on this graph (and leaves temp files in the working directory)
    quant_pre_process(str(opset13), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 13:
        onnx.save(version_converter.convert_version(model, 13), str(pre))
    models = {"fp32": fp32}
    recipes = {
        "int8_qdq": {"quant_format": QuantFormat.QDQ},
        "int8_qoperator": {"quant_format": QuantFormat.QOperator},
    }
    model = onnx.load(str(pre))  # the exporter left every node unnamed; nodes_to_exclude needs names
    for k, node in enumerate(model.graph.node):
        node.name = node.name or f"{node.op_type}_{k}"
    onnx.save(model, str(pre))
    outputs = {o.name for o in model.graph.output}
    head_nodes = [n for n in model.graph.node if set(n.output) & outputs]  # 3 convolutions and the sigmoid
    head_inputs = {i for n in head_nodes if n.op_type == "Sigmoid" for i in n.input}
    heads = [n.name for n in model.graph.node if n in head_nodes or set(n.output) & head_inputs]
    recipes["int8_qdq_fp32_heads"] = {"quant_format": QuantFormat.QDQ, "nodes_to_exclude": heads}
    for name, extra in recipes.items():
        dst = work / f"centerface-{name}.onnx"
        t0 = time.perf_counter()
        quantize_static(str(pre), str(dst), Reader(), per_channel=True, reduce_range=False,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibMaxIntermediateOutputs": 4}, **extra)  # fmt: skip
        log(f"quantized {name} in {time.perf_counter() - t0:.0f} s")
        models[name] = dst
    dst = work / "centerface-int8_dynamic.onnx"
    quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    models["int8_dynamic"] = dst
    return models


def part_int8det(args, scenes) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    calib_idx = sorted(rng.choice(len(scenes), size=min(args.calib, len(scenes)), replace=False).tolist())
    base = face_finder()
    calib = _detector_input(base, [camera_frame(scenes[i][1], scenes[i][2])[0] for i in calib_idx])
    models = quantize_centerface(args.work, calib, base._input)
    finders = {}
    for name, path in models.items():
        try:
            finders[name] = face_finder(str(path))
        except Exception as exc:
            log(f"{name}: cannot open ({exc})")
    out: dict[str, Any] = {"calibration": f"{len(calib)} scenes (seed 0) as 640x480 camera frames, MinMax",
                           "models": {n: {"path": str(p), "mb": round(p.stat().st_size / 1e6, 2)}
                                      for n, p in models.items()},
                           "quality_scenes": {}}  # fmt: skip
    frames = test_frames(scenes, args.frames)

    def run(det):
        def go():
            for fr in frames:
                det.find_faces(fr)
            return len(frames)

        return go

    for f in finders.values():
        run(pipeline(f, 640))()
    slow = {}  # more than 3x slower than fp32 on a first pass: one timing round only, no recall
    t_fp32 = interleaved({"fp32": run(pipeline(finders["fp32"], 640))}, 1)["fp32"]["ms_median"]
    for name in list(finders):
        t = interleaved({name: run(pipeline(finders[name], 640))}, 1)[name]["ms_median"]
        if t > 3 * t_fp32:
            slow[name] = {"ms_per_640x480_frame_one_round": t, "fp32_same_pass": t_fp32}
            del finders[name]
    out["too_slow_skipped"] = slow
    detectors = {f"{n}@{s}": pipeline(f, s) for s in args.int8_sizes for n, f in finders.items()}
    for d in detectors.values():
        run(d)()
    base = f"fp32@{args.int8_sizes[0]}"
    out["ms_per_640x480_frame"] = interleaved({n: run(d) for n, d in detectors.items()}, args.rounds, base)
    log("find_faces ms/frame: " + ", ".join(f"{n} {t['ms_median']:.1f} (x{t['speedup_vs_' + base]:.2f})"
                                            for n, t in out["ms_per_640x480_frame"].items()))  # fmt: skip
    log(f"too slow: {slow}")
    samples = [(rgb, t) for _, rgb, t in scenes]
    for name, d in detectors.items():
        q = face_scores(d, samples)
        out["quality_scenes"][name] = q
        log(f"{name}: recall {q['recall']}")
    ref = out["quality_scenes"][base]["recall"]
    for q in out["quality_scenes"].values():
        q["recall_delta_vs_" + base] = {b: round(q["recall"][b] - ref[b], 4) for b in BUCKETS}
    return out


def face_crops(scenes, n: int) -> list[np.ndarray]:
    from maskwatch.detection.pipeline import crop_box

    crops = []
    for _, rgb, t in scenes:
        h, w = rgb.shape[:2]
        for box in t["boxes"]:
            x0, y0, x1, y1 = crop_box(box, 0.15, w, h)
            crops.append(rgb[y0:y1, x0:x1])
            if len(crops) >= n:
                return crops
    return crops


def part_int8cls(args, scenes) -> dict[str, Any]:
    from maskwatch.bundled import default_model_path
    from maskwatch.preprocess import to_batch
    from maskwatch.runtime.export import cached_export
    from maskwatch.runtime.onnx_backend import OnnxClassifier

    model = default_model_path()
    paths = {"fp32": cached_export(model, int8=False), "int8": cached_export(model, int8=True)}
    classifiers = {n: OnnxClassifier(p, threads=2, spin=False, batch_size=32) for n, p in paths.items()}
    crops = face_crops(scenes, 48)
    prep = classifiers["fp32"].preprocessing
    out: dict[str, Any] = {"models": {n: str(p) for n, p in paths.items()}, "crops": len(crops),
                           "median_crop_side": float(np.median([max(c.shape[:2]) for c in crops]))}  # fmt: skip
    for bs in args.batches:
        chunks = [crops[i : i + bs] for i in range(0, len(crops), bs)]
        batches = [to_batch(c, prep) for c in chunks]

        def full(c, chunks=chunks):
            def go():
                for ch in chunks:
                    c.predict_proba(ch)
                return len(crops)

            return go

        def session_only(c, batches=batches):
            def go():
                for b in batches:
                    c._logits(b)
                return len(crops)

            return go

        variants = {}
        for n, c in classifiers.items():
            variants[f"{n}_predict_proba"] = full(c)
            variants[f"{n}_session_run"] = session_only(c)
        for v in variants.values():
            v()
        res = interleaved(variants, args.rounds, "fp32_predict_proba")
        out[f"batch_{bs}"] = res
        log(f"classifier batch {bs}, ms/face: " + ", ".join(f"{n} {t['ms_median']:.2f}" for n, t in res.items()))
    return out


def part_costs(args, scenes) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import make_video

    from maskwatch.core.faces import Faces
    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.results import FrameResult
    try:
        from maskwatch.stream.tracking import FaceTracker
    except ImportError:  # before the move to maskwatch.stream
        from maskwatch.stream.tracking import FaceTracker
    from maskwatch.preprocess import Preprocessing, to_batch

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data_images = sorted((args.data / "images").glob("*.jpg"))[:10]
    video = work / "scenes-640x480.mp4"
    info = make_video(data_images, video, hold=12)
    # the frames, decoded once, and their detections (fast preset: one 640 px pass)
    cap = cv2.VideoCapture(str(video))
    frames_bgr = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames_bgr.append(f)
    cap.release()
    frames_rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames_bgr]
    finder = face_finder()
    det = pipeline(finder, 640)
    found = []
    for rgb in frames_rgb:
        faces = det.find_faces(rgb)
        keep = faces.scores >= OPERATING_THRESHOLD
        found.append((faces.boxes[keep], faces.scores[keep], faces.landmarks[keep]))
    classes = ["with_mask", "without_mask"]
    rng = np.random.default_rng(0)

    def frame_result(k):
        boxes, scores, marks = found[k]
        p = rng.uniform(0.5, 1.0, len(scores))
        faces = Faces(boxes, scores, marks, classes=classes, probabilities=np.stack([p, 1 - p], axis=1).reshape(-1, 2),
                      classified=np.ones(len(scores), bool))  # fmt: skip
        return FrameResult(faces, width=FRAME_W, height=FRAME_H, frame=k)

    results = [frame_result(k) for k in range(len(frames_rgb))]
    n_faces = float(np.mean([len(r.faces) for r in results]))
    jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1] for f in frames_bgr]
    prep = Preprocessing(size=224)
    crops_per_frame = [det.crops(rgb, found[k][0]) for k, rgb in enumerate(frames_rgb)]
    tracked_results = []
    tracker_holder = {}

    def decode_mp4():
        c = cv2.VideoCapture(str(video))
        n = 0
        while True:
            ok, _ = c.read()
            if not ok:
                break
            n += 1
        c.release()
        return n

    def decode_jpeg():
        for j in jpegs:
            cv2.imdecode(j, cv2.IMREAD_COLOR)
        return len(jpegs)

    def bgr2rgb():
        for f in frames_bgr:
            cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
        return len(frames_bgr)

    def detector_prepare():  # resize (none at 640) + letterbox blob: the detector's own pre-processing
        for f in frames_rgb:
            finder._prepare(f, 1.0)
        return len(frames_rgb)

    def detector_total():  # find_faces at 640 on 640x480: session + pre/post-processing
        for f in frames_rgb:
            det.find_faces(f)
        return len(frames_rgb)

    def session_only():
        blobs = detector_blobs
        for b in blobs:
            finder._session.run(None, {finder._input: b})
        return len(blobs)

    detector_blobs = [finder._prepare(f, 1.0)[0] for f in frames_rgb[::4]]

    def preprocess_crops():
        for cs in crops_per_frame:
            to_batch(cs, prep)
        return len(crops_per_frame)

    def track():
        tracker = FaceTracker(classes, frame_rate=25)
        tracked_results.clear()
        for r in results:
            tracked_results.append(tracker.update(r))
        tracker_holder["t"] = tracker
        return len(results)

    track()

    def draw():
        for rgb, r in zip(frames_rgb, tracked_results, strict=True):
            draw_result(rgb, r)
        return len(frames_rgb)

    drawn = [
        cv2.cvtColor(draw_result(rgb, r), cv2.COLOR_RGB2BGR) for rgb, r in zip(frames_rgb, tracked_results, strict=True)
    ]

    def encode_jpeg():
        for f in drawn:
            cv2.imencode(".jpg", f)
        return len(drawn)

    def encode_mp4():
        w = cv2.VideoWriter(str(work / "out.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (FRAME_W, FRAME_H))
        for f in drawn:
            w.write(f)
        w.release()
        return len(drawn)

    variants = {"mp4_decode": decode_mp4, "mjpeg_decode_q90": decode_jpeg, "bgr_to_rgb": bgr2rgb,
                "detector_prepare_blob": detector_prepare, "detector_session_run": session_only,
                "detector_find_faces_total": detector_total, "to_batch_frame_crops": preprocess_crops,
                "bytetrack_update": track, "draw_result": draw, "jpeg_encode_annotated": encode_jpeg,
                "mp4_encode_annotated": encode_mp4}  # fmt: skip
    for v in variants.values():
        v()
    res = interleaved(variants, args.rounds)
    log("ms/frame: " + ", ".join(f"{n} {t['ms_median']:.2f}" for n, t in res.items()))
    return {"video": {k: v for k, v in info.items() if k != "path"}, "frames": len(frames_rgb),
            "faces_per_frame": round(n_faces, 2),
            "jpeg_kb_mean": round(float(np.mean([len(j) for j in jpegs])) / 1024, 1),
            "tracker_backend": tracker_holder["t"].backend, "ms_per_frame": res,
            "note": "to_batch is all of a frame's crops at 224 px; bytetrack includes FaceTracker voting"}  # fmt: skip


def part_threads(args, scenes) -> dict[str, Any]:
    frames = test_frames(scenes, args.frames)
    two = face_finder(threads=2)
    one_a, one_b = face_finder(threads=1), face_finder(threads=1)
    two_spin = face_finder(threads=2, spin=True)

    def serial(f):
        def go():
            for fr in frames:
                f.detect(fr)
            return len(frames)

        return go

    def concurrent(fa, fb):
        def go():
            ts = [threading.Thread(target=serial(f)) for f in (fa, fb)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return 2 * len(frames)

        return go

    variants = {"1_session_2_threads": serial(two), "1_session_1_thread": serial(one_a),
                "1_session_2_threads_spinning": serial(two_spin),
                "2_sessions_1_thread_each_in_2_py_threads": concurrent(one_a, one_b),
                "1_session_2_threads_called_from_2_py_threads": concurrent(two, two)}  # fmt: skip
    int8 = args.work / "centerface-int8_qdq.onnx"
    if int8.is_file():  # the same for the INT8 detector (part int8det writes it)
        q2, q1a, q1b = (face_finder(str(int8), threads=t) for t in (2, 1, 1))
        variants.update({"int8_1_session_2_threads": serial(q2), "int8_1_session_1_thread": serial(q1a),
                         "int8_2_sessions_1_thread_each_in_2_py_threads": concurrent(q1a, q1b)})  # fmt: skip
    for v in variants.values():
        v()
    res = interleaved(variants, args.rounds, "1_session_2_threads")
    for t in res.values():
        t["frames_per_s_median"] = round(1000 / t["ms_median"], 2)
    log("detector frames/s: " + ", ".join(f"{n} {t['frames_per_s_median']:.1f}" for n, t in res.items()))
    return {"frames": len(frames), "unit": "ms per frame (wall / frames done, all threads together)",
            "results": res}  # fmt: skip


def part_batch(args, scenes) -> dict[str, Any]:
    frames = test_frames(scenes, 8)
    models = {"fp32": None}
    int8 = args.work / "centerface-int8_qdq.onnx"
    if int8.is_file():
        models["int8_qdq"] = str(int8)
    out: dict[str, Any] = {}
    for name, path in models.items():
        finder = face_finder(path)
        sess, inp = finder._session, finder._input
        blobs = _detector_input(finder, frames)
        shape = [i.shape for i in sess.get_inputs()]
        singles = [sess.run(None, {inp: b}) for b in blobs]
        check: dict[str, Any] = {"declared_input_shape": shape}
        try:
            batched = sess.run(None, {inp: np.concatenate(blobs[:4])})
            diffs = [float(max(np.abs(batched[o][k] - singles[k][o][0]).max() for o in range(len(batched))))
                     for k in range(4)]  # fmt: skip
            check.update({"batch_4_ok": True, "output_shapes": [list(o.shape) for o in batched],
                          "max_abs_diff_vs_single": max(diffs)})  # fmt: skip
        except Exception as exc:
            check.update({"batch_4_ok": False, "error": str(exc)[:500]})
            out[name] = check
            continue

        def run(bs, blobs=blobs, sess=sess, inp=inp):
            groups = [np.concatenate(blobs[i : i + bs]) for i in range(0, len(blobs), bs)]

            def go():
                for g in groups:
                    sess.run(None, {inp: g})
                return len(blobs)

            return go

        variants = {f"batch_{bs}": run(bs) for bs in (1, 2, 4)}
        for v in variants.values():
            v()
        check["ms_per_frame_session_run"] = interleaved(variants, args.rounds, "batch_1")
        log(f"{name} batch ms/frame: " + ", ".join(f"{n} {t['ms_median']:.1f}"
                                                   for n, t in check["ms_per_frame_session_run"].items()))  # fmt: skip
        out[name] = check
    return out


def part_e2e(args, scenes) -> dict[str, Any]:
    """Whole frames: detector + classifier (every face) + ByteTrack + drawing, per variant, interleaved."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_pipeline import make_video

    from maskwatch.bundled import default_model_path
    from maskwatch.detection.drawing import draw_result
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.runtime.export import cached_export
    from maskwatch.runtime.onnx_backend import OnnxClassifier

    try:
        from maskwatch.stream.tracking import FaceTracker
    except ImportError:  # before the move to maskwatch.stream
        from maskwatch.detection.tracking import FaceTracker

    args.work.mkdir(parents=True, exist_ok=True)
    video = args.work / "e2e-640x480.mp4"
    info = make_video(sorted((args.data / "images").glob("*.jpg"))[:20], video, hold=args.e2e_hold)
    cap, frames = cv2.VideoCapture(str(video)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    model = default_model_path()
    cls_path = {"fp32": cached_export(model, int8=False), "int8": cached_export(model, int8=True)}
    det_path = {"fp32": None, "int8": str(args.work / "centerface-int8_qdq.onnx")}
    if not Path(det_path["int8"]).is_file():
        raise SystemExit("run the int8det part first (it writes the INT8 detector)")

    def build(det: str, cls: str, side: int, threads: int = 2) -> MaskDetector:
        return MaskDetector(OnnxClassifier(cls_path[cls], threads=threads, spin=False, batch_size=32),
                            face_finder(det_path[det], threads=threads), scales=(side,), flip=False)  # fmt: skip

    def serial(md: MaskDetector, classify: bool = True):
        def go():
            tracker = FaceTracker(md.classes, frame_rate=25)
            for k, rgb in enumerate(frames):
                if classify:
                    result = md.detect(rgb, frame=k)
                else:  # detector only: the bound a per-track classification budget approaches
                    from maskwatch.detection.results import FrameResult

                    faces = md.gate(md.find_faces(rgb))  # every kept face "classified" as the first class
                    first = np.zeros((len(faces), len(md.classes)))
                    first[:, 0] = 1.0
                    faces = faces.replace(probabilities=first, classified=faces.kept)
                    result = FrameResult(faces, width=rgb.shape[1], height=rgb.shape[0])
                draw_result(rgb, tracker.update(result))
            return len(frames)

        return go

    def parallel(mds: list[MaskDetector]):
        def go():
            ts = [threading.Thread(target=serial(md)) for md in mds]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return len(mds) * len(frames)

        return go

    base = "A_fp32det640_fp32cls_today_fast"
    variants = {
        base: serial(build("fp32", "fp32", 640)),
        "B_fp32det640_int8cls": serial(build("fp32", "int8", 640)),
        "C_int8det640_int8cls": serial(build("int8", "int8", 640)),
        "D_int8det512_int8cls": serial(build("int8", "int8", 512)),
        "E_int8det640_no_cls_budget_bound": serial(build("int8", "int8", 640), classify=False),
        "F_int8det640_int8cls_2py_threads_1thread_sessions":
            parallel([build("int8", "int8", 640, 1) for _ in range(2)]),
    }  # fmt: skip
    md0 = build("fp32", "fp32", 640)
    sample = frames[:: max(1, len(frames) // 25)]
    faces_per_frame = sum(int((md0.find_faces(f)[1] >= md0.score_threshold).sum()) for f in sample) / len(sample)
    for v in variants.values():
        v()
    res = interleaved(variants, args.e2e_rounds, base)
    for t in res.values():
        t["frames_per_s_median"] = round(1000 / t["ms_median"], 2)
    log("e2e frames/s: " + ", ".join(f"{n} {t['frames_per_s_median']:.1f} (x{t['speedup_vs_' + base]:.2f})"
                                     for n, t in res.items()))  # fmt: skip
    return {"video": {k: v for k, v in info.items() if k != "path"}, "frames": len(frames),
            "faces_per_frame_fp32_640": round(faces_per_frame, 2),
            "unit": "ms per frame (wall / frames done, all threads together); decode and encode not included",
            "results": res}  # fmt: skip


def part_dettime(args, scenes) -> dict[str, Any]:
    """Detector ms per 640x480 frame: fp32 at every size and each INT8 model at --int8-sizes, one interleaved set."""
    frames = test_frames(scenes, args.frames)
    finders = {"fp32": face_finder()}
    for name in ("int8_qdq", "int8_qoperator", "int8_qdq_fp32_heads"):
        path = args.work / f"centerface-{name}.onnx"
        if path.is_file():
            finders[name] = face_finder(str(path))
    detectors = {f"fp32@{s}": pipeline(finders["fp32"], s) for s in args.sizes}
    detectors.update({f"{n}@{s}": pipeline(f, s) for n, f in finders.items() if n != "fp32" for s in args.int8_sizes})

    def run(det):
        def go():
            for fr in frames:
                det.find_faces(fr)
            return len(frames)

        return go

    for d in detectors.values():
        run(d)()
    base = f"fp32@{args.sizes[0]}"
    res = interleaved({n: run(d) for n, d in detectors.items()}, args.rounds, base)
    log("find_faces ms/frame: " + ", ".join(f"{n} {t['ms_median']:.1f} (x{t['speedup_vs_' + base]:.2f})"
                                            for n, t in res.items()))  # fmt: skip
    return {"frames": len(frames), "ms_per_640x480_frame": res}


def part_camera_int8(args, scenes) -> dict[str, Any]:
    """Face recall on the 640x480 camera frames: fp32 and each INT8 detector at --int8-sizes."""
    finders = {"fp32": face_finder()}
    for name in ("int8_qdq", "int8_qoperator", "int8_qdq_fp32_heads"):
        path = args.work / f"centerface-{name}.onnx"
        if path.is_file():
            finders[name] = face_finder(str(path))
    samples = [camera_frame(rgb, t) for _, rgb, t in scenes]
    quality = {}
    for s in args.int8_sizes:
        for name, f in finders.items():
            quality[f"{name}@{s}"] = q = face_scores(pipeline(f, s), samples)
            log(f"camera {name}@{s}: recall {q['recall']}")
    base = f"fp32@{args.int8_sizes[0]}"
    for q in quality.values():
        q["recall_delta_vs_" + base] = {b: round(q["recall"][b] - quality[base]["recall"][b], 4) for b in BUCKETS}
    return {"quality_camera_frames": quality}


PARTS = ("sizes", "camera", "int8det", "int8cls", "costs", "threads", "batch", "dettime", "e2e", "camera_int8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC scenes (images/ + annotations/)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument(
        "--sizes", default="640,576,512,480,448,416,384", help="detector longest sides; the first is the reference"
    )
    p.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    p.add_argument("--frames", type=int, default=10, help="640x480 frames per timing round")
    p.add_argument("--int8-sizes", default="640,512", help="detector longest sides for the INT8 comparison")
    p.add_argument("--e2e-hold", type=int, default=5, help="e2e: frames per scene image in its 20-image video")
    p.add_argument("--e2e-rounds", type=int, default=5, help="e2e: interleaved rounds")
    p.add_argument("--calib", type=int, default=50, help="scenes used to calibrate the INT8 detector")
    p.add_argument("--batches", default="1,4,8", help="classifier batch sizes")
    p.add_argument("--limit", type=int, default=0, help="only the first N scenes (0: all)")
    p.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "mw-stream-study", help="quantized models, videos"
    )
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results, merged part by part")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.int8_sizes = [int(s) for s in args.int8_sizes.split(",")]
    args.batches = [int(s) for s in args.batches.split(",")]
    parts = [s for s in args.parts.split(",") if s]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}")

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the calibration sessions warn about every unused initializer
    log(f"loading scenes from {args.data}")
    scenes = load_scenes(args.data, args.limit)
    log(f"{len(scenes)} scenes")
    result: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "python": platform.python_version(), "onnxruntime": ort.__version__,
                         "opencv": cv2.__version__, "numpy": np.__version__}  # fmt: skip
    for part in parts:
        log(f"part {part}")
        before = load_info()
        t0 = time.perf_counter()
        if part in ("sizes", "camera"):
            res = part_sizes(args, scenes, camera=part == "camera")
        else:
            res = globals()[f"part_{part}"](args, scenes)
        res["load_before"], res["load_after"] = before, load_info()
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["command"] = " ".join([sys.executable, *sys.argv])
        result[part] = res
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
        log(f"part {part} done in {res['seconds']} s; load {before['loadavg']} -> {res['load_after']['loadavg']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
