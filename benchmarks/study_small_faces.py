"""Study: what lifts recall on small faces (< 20 px) for the ``accurate`` preset, judged on scenes/valid only.

    .venv/bin/python benchmarks/study_small_faces.py                        # cache views, score every variant
    .venv/bin/python benchmarks/study_small_faces.py --parts variants       # rescore from the cache only
    .venv/bin/python benchmarks/study_small_faces.py --parts timing --rounds 3
    .venv/bin/python benchmarks/study_small_faces.py --model runs/NAME/model.pt --json out.json

The detector is run once per *view* of each image and its raw output cached (``--cache``); a variant is a
set of views plus a way to fuse them, replayed through the real pipeline (:class:`MaskDetector`: fusion,
VOC framing, the six classifier crops per face, the classifier) and scored by the same code as
``maskwatch evaluate-detection`` (:func:`maskwatch.detection.evaluation.score_results`), so a variant's
numbers are the ones the command would print with that preset. The classifier's output is cached by crop
content, so only new crops cost anything.

A view is written ``SIDE[f][t]``: the image's longest side scaled to SIDE px (up or down), ``f`` mirrored,
``t`` cut into ``--tile`` px tiles overlapping by ``--overlap`` px (each tile one detector run; detections
touching a tile edge inside the image are dropped, a neighbour tile holds that face whole).

Views are fused by :func:`maskwatch.detection.pipeline.fuse_views` (a face's score is the sum over views
divided by the number of views). Rows named ``... reachR`` in the JSON come from commit ea34568, which also
had a "reach" fusion (dividing only by the views in which the face is at least R px); it gained nothing
(mAP within 0.002, recall on faces under 20 px +0.01 at a lower precision) and was removed.

Parts (results merged into ``--json`` under their names):

* ``cache``: run the detector for every view any variant needs, on every image of the split (skips cached);
* ``views``: each view alone, face recall by size at the candidate threshold and at the operating point;
  and for each variant the recall of the union of its views at the candidate threshold (what its fusion
  could keep at most);
* ``variants``: every variant: recall per size bucket (IoU 0.5, at the operating point score >= 0.3),
  precision, class-agnostic face AP, per-class AP and mAP@0.5 with the classifier (``--model``), candidate
  faces and crops per image;
* ``viewtime``: each view's detector time per image, all views interleaved image by image on
  ``--viewtime-images`` images, and the classifier's ms per crop; each variant's estimated seconds per image
  is then the sum of its views + its crops per image at that rate (the ratio to ``accurate`` is the
  figure to read: the CPU is shared and absolute times move with the load);
* ``timing``: the real pipeline (no cache) on the split, the baseline and the chosen variants interleaved
  image by image over ``--rounds``: seconds per image and the ratio to the baseline.

Only ``--split valid`` (or train) is accepted: recipes are chosen on validation data; the test split is for
the final figures, measured once with ``maskwatch evaluate-detection --split test``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MASKWATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scenes"
DEFAULT_SPLITS = ROOT / "data" / "splits" / "scenes"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "small_faces_valid.json"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "maskwatch" / "small_faces"
CANDIDATE_THRESHOLD = 0.1  # MaskDetector.load's candidate_threshold
VIEWS_PER_FACE = 6  # classifier crops per face in the accurate preset
BUCKETS = ("<20", "20-32", "32-64", ">=64", ">=20", "all")

BASELINE = "accurate"  # the accurate preset before this study: 640 and 1024 px, each mirrored
ADOPTED = "accurate+1280f"  # the accurate preset since: 640, 1024 and 1280 px, each mirrored
ACCURATE = ("640", "640f", "1024", "1024f")
# name -> the views fused (each one detector run)
VARIANTS: dict[str, tuple[str, ...]] = {
    "accurate": ACCURATE,
    "accurate+1280": (*ACCURATE, "1280"),
    "accurate+1280f": (*ACCURATE, "1280", "1280f"),
    "accurate+1600": (*ACCURATE, "1600"),
    "accurate+1600f": (*ACCURATE, "1600", "1600f"),
    "accurate+2048": (*ACCURATE, "2048"),
    "640f+1280f": ("640", "640f", "1280", "1280f"),
    "640f+1600f": ("640", "640f", "1600", "1600f"),
    "1024f+1600f": ("1024", "1024f", "1600", "1600f"),
    "1024f+1280f": ("1024", "1024f", "1280", "1280f"),
    "640+1024f+1600f": ("640", "1024", "1024f", "1600", "1600f"),
    "accurate+1600 tiled": (*ACCURATE, "1600t"),
}

View = Any  # maskwatch.core.faces.Faces: boxes (N,4), scores (N,), landmarks (N,5,2), original pixels


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_info() -> dict[str, Any]:
    return {"loadavg": [round(v, 2) for v in os.getloadavg()], "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


# --------------------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True)
class Scene:
    stem: str
    rgb: np.ndarray
    target: dict[str, Any]


def load_split(data: Path, splits: Path, split: str) -> tuple[list[Scene], dict[str, Any]]:
    """The split's annotated images, decoded and read as ``evaluate_voc`` reads them."""
    from maskwatch.data.images import decode_rgb
    from maskwatch.data.voc import parse_voc, voc_image_for
    from maskwatch.detection.evaluation import ImageSubset, voc_target

    subset = ImageSubset.from_split_lists(splits, split)
    scenes = []
    for xml in sorted((data / "annotations").glob("*.xml")):
        if xml.stem not in subset.stems:
            continue
        annotation = parse_voc(xml)
        image = voc_image_for(annotation, data / "images")
        if image is None:
            raise SystemExit(f"{xml}: no image")
        target = voc_target([(o.label, o.box) for o in annotation.objects])
        scenes.append(Scene(xml.stem, decode_rgb(image), target))
    if len(scenes) != len(subset.stems):
        raise SystemExit(f"{len(subset.stems) - len(scenes)} listed images have no annotation in {data}")
    return scenes, subset.describe()


# --------------------------------------------------------------------------------------------------------
# views and their cache


@dataclass(frozen=True)
class ViewSpec:
    side: int
    mirrored: bool
    tiled: bool

    @classmethod
    def parse(cls, text: str) -> ViewSpec:
        digits = text.rstrip("ft")
        return cls(int(digits), "f" in text[len(digits) :], "t" in text[len(digits) :])

    def scale(self, height: int, width: int) -> float:
        return self.side / max(height, width)


def tiled_view(detector: Any, rgb: np.ndarray, spec: ViewSpec, tile: int, overlap: int) -> View:
    """One view cut into overlapping tiles of the resized image (each tile one detector run)."""
    from maskwatch.core.faces import Faces
    from maskwatch.core.geometry import nms
    from maskwatch.detection.pipeline import _resize

    h, w = rgb.shape[:2]
    resized, sx, sy = _resize(rgb, spec.scale(h, w))
    if spec.mirrored:
        resized = np.ascontiguousarray(resized[:, ::-1])
    rh, rw = resized.shape[:2]

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        step = tile - overlap
        out = list(range(0, n - tile, step))
        return [*out, n - tile]

    all_boxes, all_scores, all_marks = [], [], []
    edge = 2.0
    for y0 in starts(rh):
        for x0 in starts(rw):
            part = np.ascontiguousarray(resized[y0 : y0 + tile, x0 : x0 + tile])
            found = detector.active_finder.detect(part)
            boxes, scores, marks = found.boxes, found.scores, found.landmarks
            if not len(scores):
                continue
            ph, pw = part.shape[:2]
            inner = np.zeros(len(scores), dtype=bool)  # touching a tile edge that is not the image's edge
            if x0 > 0:
                inner |= boxes[:, 0] <= edge
            if y0 > 0:
                inner |= boxes[:, 1] <= edge
            if x0 + pw < rw:
                inner |= boxes[:, 2] >= pw - edge
            if y0 + ph < rh:
                inner |= boxes[:, 3] >= ph - edge
            keep = ~inner
            all_boxes.append(boxes[keep] + [x0, y0, x0, y0])
            all_scores.append(scores[keep])
            all_marks.append(marks[keep] + [x0, y0])
    if not all_scores or not sum(len(s) for s in all_scores):
        return Faces.empty()
    boxes, scores, marks = np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_marks)
    keep = nms(boxes, scores, detector.fusion_iou)
    boxes, scores, marks = boxes[keep], scores[keep], marks[keep]
    if spec.mirrored:
        boxes = np.stack([rw - boxes[:, 2], boxes[:, 1], rw - boxes[:, 0], boxes[:, 3]], axis=1)
        marks = marks[:, [1, 0, 2, 4, 3]].copy()
        marks[..., 0] = rw - marks[..., 0]
    return Faces(boxes / [sx, sy, sx, sy], scores, marks / [sx, sy])


class ViewCache:
    """Raw detector views on disk: ``DIR/<detector sha>-c<threshold>/<view>/<stem>.npz`` (boxes, scores,
    landmarks in original pixels, and the seconds the run took)."""

    def __init__(self, root: Path, detector: Any, tile: int, overlap: int) -> None:
        from maskwatch.core.digests import file_sha256

        finder = detector.active_finder
        tag = f"{file_sha256(finder.model_path)[:12]}-c{finder.score_threshold}"
        self.root = root / tag
        self.detector = detector
        self.tile, self.overlap = tile, overlap
        self.memory: dict[tuple[str, str], tuple[View, float]] = {}

    def _path(self, stem: str, spec: str) -> Path:
        name = spec + (f"{self.tile}o{self.overlap}" if ViewSpec.parse(spec).tiled else "")
        return self.root / name / f"{stem}.npz"

    def get(self, scene: Scene, spec: str, compute: bool = True) -> tuple[View, float]:
        key = (scene.stem, spec)
        if key in self.memory:
            return self.memory[key]
        path = self._path(scene.stem, spec)
        if path.is_file():
            from maskwatch.core.faces import Faces

            with np.load(path) as z:
                item = (Faces(z["boxes"], z["scores"], z["marks"]), float(z["seconds"]))
        elif not compute:
            raise KeyError(f"view {spec} of {scene.stem} is not cached; run --parts cache")
        else:
            view_spec = ViewSpec.parse(spec)
            start = time.perf_counter()
            if view_spec.tiled:
                view = tiled_view(self.detector, scene.rgb, view_spec, self.tile, self.overlap)
            else:
                view = self.detector.detect_view(scene.rgb, view_spec.side, view_spec.mirrored)
            seconds = time.perf_counter() - start
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, boxes=view.boxes, scores=view.scores, marks=view.landmarks, seconds=seconds)
            item = (view, seconds)
        self.memory[key] = item
        return item


# --------------------------------------------------------------------------------------------------------
# replaying views through the real pipeline


class CachingClassifier:
    """The classifier with its outputs remembered by crop content (the same crop costs nothing twice)."""

    def __init__(self, inner: Any, path: Path | None = None) -> None:
        self.inner = inner
        self.path = path
        self.classes = list(inner.classes)
        self.crop_margin = getattr(inner, "crop_margin", None)
        self.compliant_classes = getattr(inner, "compliant_classes", None)
        self.backend = getattr(inner, "backend", type(inner).__name__)
        self.memory: dict[bytes, np.ndarray] = {}
        if path is not None and path.is_file():
            with np.load(path) as z:
                self.memory = {bytes(k): v for k, v in zip(z["keys"], z["probabilities"], strict=True)}
        self.computed = 0
        self.asked = 0
        self.seconds = 0.0

    @staticmethod
    def _key(crop: np.ndarray) -> bytes:
        digest = hashlib.blake2b(np.ascontiguousarray(crop).tobytes(), digest_size=16)
        digest.update(str(crop.shape).encode())
        return digest.digest()

    def save(self) -> None:
        if self.path is None or not self.memory:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.memory), dtype="S16")
        np.savez(self.path, keys=keys, probabilities=np.stack(list(self.memory.values())))

    def predict_proba(self, images: Sequence[np.ndarray]) -> np.ndarray:
        keys = [self._key(im) for im in images]
        self.asked += len(images)
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in self.memory}
        if todo:
            start = time.perf_counter()
            probabilities = np.asarray(self.inner.predict_proba(list(todo.values())), dtype=np.float64)
            self.seconds += time.perf_counter() - start
            self.computed += len(todo)
            self.memory.update(zip(todo, probabilities, strict=True))
        return np.stack([self.memory[k] for k in keys]) if keys else np.zeros((0, len(self.classes)))


def replay(base: Any, classifier: CachingClassifier, cache: ViewCache, scenes: Sequence[Scene],
           views: Sequence[str]) -> tuple[list[Any], dict[str, float]]:  # fmt: skip
    """Every scene through the pipeline with ``views`` (from the cache)."""
    from maskwatch.detection.pipeline import MaskDetector

    class Replay(MaskDetector):
        scene: Scene

        def find_faces(self, image: Any) -> View:
            h, w = self.scene.rgb.shape[:2]
            got = [cache.get(self.scene, spec, compute=False)[0] for spec in views]
            return self.fuse(got, w, h).with_classes(self.classes)

    pipeline = Replay(classifier, base.face_finder, scales="accurate", score_threshold=base.score_threshold,
                      crop_margin=base.crop_margin)  # fmt: skip
    results = []
    detector_seconds = 0.0
    asked = classifier.asked
    for scene in scenes:
        pipeline.scene = scene
        results.append(pipeline.detect(scene.rgb, source=scene.stem, score_threshold=0.0, min_confidence=0.0))
        detector_seconds += sum(cache.get(scene, spec, compute=False)[1] for spec in views)
    n = len(scenes)
    crops = classifier.asked - asked
    return results, {
        "detector_s_per_image_cached": detector_seconds / n,
        "crops_per_image": crops / n,
        "candidates_per_image": sum(len(r.faces) for r in results) / n,
    }


# --------------------------------------------------------------------------------------------------------
# parts


def part_cache(cache: ViewCache, scenes: Sequence[Scene], specs: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"before": load_info()}
    for spec in specs:
        start = time.perf_counter()
        seconds = [cache.get(scene, spec)[1] for scene in scenes]
        log(f"view {spec}: {statistics.mean(seconds) * 1000:.0f} ms per image ({time.perf_counter() - start:.0f} s)")
        out[spec] = {"ms_per_image_mean": round(1000 * statistics.mean(seconds), 1),
                     "ms_per_image_median": round(1000 * statistics.median(seconds), 1)}  # fmt: skip
    out["after"] = load_info()
    return out


def part_views(base: Any, cache: ViewCache, scenes: Sequence[Scene], specs: Sequence[str],
               variants: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    """Each view alone: face recall (IoU 0.5, VOC framing) by face size at the candidate threshold and at the
    operating point; and for each variant the recall of the union of its views at the candidate threshold:
    the most its fusion could keep."""
    from maskwatch.core.geometry import box_iou, finish_boxes

    buckets = {"<12": (0, 12), "12-16": (12, 16), "16-20": (16, 20), "<20": (0, 20), "20-32": (20, 32),
               ">=20": (20, 1e9)}  # fmt: skip

    def found(scene: Scene, spec: str, threshold: float) -> np.ndarray:
        (boxes, scores, _), _ = cache.get(scene, spec, compute=False)
        h, w = scene.rgb.shape[:2]
        boxes, ok = finish_boxes(boxes[scores >= threshold], w, h, base.box_adjust, 0.0)
        gt = scene.target["boxes"]
        if not ok.any() or not len(gt):
            return np.zeros(len(gt), dtype=bool)
        return box_iou(gt, boxes[ok]).max(axis=1) >= 0.5

    def recall(hits: dict[str, np.ndarray]) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, (lo, hi) in buckets.items():
            n = sum(int(((sz >= lo) & (sz < hi)).sum()) for sz in sizes.values())
            k = sum(int((((sizes[s] >= lo) & (sizes[s] < hi)) & hits[s]).sum()) for s in sizes)
            out[name] = round(k / n, 3) if n else None
        return out

    sizes = {s.stem: np.maximum(s.target["boxes"][:, 2] - s.target["boxes"][:, 0],
                                s.target["boxes"][:, 3] - s.target["boxes"][:, 1]) for s in scenes}  # fmt: skip
    out: dict[str, Any] = {"faces": {name: sum(int(((sz >= lo) & (sz < hi)).sum()) for sz in sizes.values())
                                     for name, (lo, hi) in buckets.items()}, "single": {}, "union": {}}  # fmt: skip
    for spec in specs:
        out["single"][spec] = {
            f"at_{threshold}": recall({s.stem: found(s, spec, threshold) for s in scenes})
            for threshold in (CANDIDATE_THRESHOLD, base.score_threshold)
        }
    for name in variants:
        views = VARIANTS[name]
        union = {s.stem: np.logical_or.reduce([found(s, v, CANDIDATE_THRESHOLD) for v in views]) for s in scenes}
        out["union"][name] = recall(union)
        log(f"union of {name}: {out['union'][name]}")
    return out


def _pick(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("recall", "recall_iou30", "precision", "precision_iou30", "ap50_face", "ap50", "map50", "map50_all",
            "map50_argmax", "count_mae", "n_predictions", "n_faces", "n_faces_by_bucket")  # fmt: skip
    return {k: metrics[k] for k in keep if k in metrics}


def part_variants(base: Any, classifier: CachingClassifier, cache: ViewCache, scenes: Sequence[Scene],
                  variants: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    from maskwatch.detection.evaluation import _clean, score_results

    targets = [s.target for s in scenes]
    small = [int((_sizes(s.target) < 20).sum()) for s in scenes]
    crowd = int(np.argmax(small))  # the image with the most small faces: it decides much of the <20 bucket
    halves = {"odd": list(range(0, len(scenes), 2)), "even": list(range(1, len(scenes), 2))}
    out: dict[str, Any] = {}
    for name in variants:
        views = VARIANTS[name]
        results, costs = replay(base, classifier, cache, scenes, views)
        metrics = score_results(results, targets, classes=classes, model_classes=classifier.classes,
                                score_threshold=base.score_threshold)  # fmt: skip
        kept = [[f for f in r.faces if f.score >= base.score_threshold] for r in results]
        costs["faces_kept_per_image"] = sum(map(len, kept)) / len(scenes)
        extra = {
            "<12": recall_in(kept, targets, 0, 12),
            "12-20": recall_in(kept, targets, 12, 20),
            "<20 without the crowd": recall_in([k for i, k in enumerate(kept) if i != crowd],
                                               [t for i, t in enumerate(targets) if i != crowd], 0, 20),
        }  # fmt: skip
        by_half = {}
        for half, index in halves.items():
            m = score_results([results[i] for i in index], [targets[i] for i in index], classes=classes,
                              model_classes=classifier.classes, score_threshold=base.score_threshold)  # fmt: skip
            by_half[half] = {"map50": m["map50"], "ap50_face": m["ap50_face"], "recall_<20": m["recall"]["<20"],
                             "recall_>=20": m["recall"][">=20"]}  # fmt: skip
        out[name] = _clean({"views": list(views), **costs, **_pick(metrics),
                            "recall_more": extra, "halves": by_half})  # fmt: skip
        classifier.save()  # after each variant: an interrupted run keeps what it classified
        r = metrics["recall"]
        log(f"{name:28s} recall <20 {r['<20']:.3f} >=20 {r['>=20']:.3f} P {metrics['precision']:.3f} "
            f"faceAP {metrics['ap50_face']:.3f} mAP {metrics['map50']:.3f}")  # fmt: skip
    ms_per_crop = 1000 * classifier.seconds / max(classifier.computed, 1)
    return {
        "classifier_ms_per_crop_while_caching": round(ms_per_crop, 3),
        "crowd_image": {
            "stem": scenes[crowd].stem,
            "faces_under_20": small[crowd],
            "all_under_20": sum(small),
            "images_with_faces_under_20": sum(1 for n in small if n),
        },
        "halves": "odd / even: the split's images in sorted order, alternately",
        "rows": out,
    }


def _sizes(target: dict[str, Any]) -> np.ndarray:
    boxes = target["boxes"]
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def recall_in(kept: Sequence[Sequence[Any]], targets: Sequence[dict[str, Any]], lo: float, hi: float) -> float | None:
    """Face recall at IoU 0.5 on annotated faces whose longest side is in [lo, hi) px (greedy matching, as
    :func:`maskwatch.detection.evaluation.face_metrics`)."""
    from maskwatch.detection.evaluation import match_greedy

    hit = total = 0
    for faces, target in zip(kept, targets, strict=True):
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        matched, _ = match_greedy(boxes, np.array([f.score for f in faces]), target["boxes"], 0.5)
        inside = (_sizes(target) >= lo) & (_sizes(target) < hi)
        total += int(inside.sum())
        hit += int((inside & matched).sum())
    return round(hit / total, 4) if total else None


def estimate_times(variants: dict[str, Any], viewtime: dict[str, Any] | None) -> None:
    """Seconds per image of ``maskwatch detect`` with each variant, from ``viewtime``: its views'
    interleaved medians + six crops per face kept (score >= the operating point) at its ms per crop
    (``evaluate-detection`` classifies every candidate for AP: ``crops_per_image``). None without
    ``viewtime`` for all of a variant's views (the seconds recorded while caching move with the load)."""
    view_ms = (viewtime or {}).get("view_ms_per_image", {})
    ms_per_crop = (viewtime or {}).get("classifier_ms_per_crop")
    rows = variants["rows"]
    for row in rows.values():
        known = ms_per_crop is not None and all(v in view_ms for v in row["views"])
        crops = row["faces_kept_per_image"] * VIEWS_PER_FACE  # detect classifies the faces it keeps
        detector = sum(view_ms.get(v, 0.0) for v in row["views"]) / 1000
        row["est_s_per_image"] = round(detector + crops * (ms_per_crop or 0.0) / 1000, 4) if known else None
    base = rows.get(BASELINE, {}).get("est_s_per_image")
    for row in rows.values():
        est = row["est_s_per_image"]
        row["est_time_ratio"] = round(est / base, 2) if base and est is not None else None


def part_viewtime(base: Any, classifier: Any, scenes: Sequence[Scene], specs: Sequence[str], rounds: int,
                  tile: int, overlap: int) -> dict[str, Any]:  # fmt: skip
    """Each view's detector milliseconds per image, the views interleaved image by image (order rotating),
    median over rounds of the mean over images; and the classifier's ms per crop in batches of 32."""
    parsed = {spec: ViewSpec.parse(spec) for spec in specs}
    per_round: dict[str, list[float]] = {spec: [] for spec in specs}
    before = load_info()
    for r in range(rounds):
        sums = dict.fromkeys(specs, 0.0)
        for i, scene in enumerate(scenes):
            k = (i + r) % len(specs)
            for spec in [*specs[k:], *specs[:k]]:
                start = time.perf_counter()
                view = parsed[spec]
                if view.tiled:
                    tiled_view(base, scene.rgb, view, tile, overlap)
                else:
                    base.detect_view(scene.rgb, view.side, view.mirrored)
                sums[spec] += time.perf_counter() - start
        for spec in specs:
            per_round[spec].append(1000 * sums[spec] / len(scenes))
        log(f"viewtime round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in per_round.items()))
    crops = [np.ascontiguousarray(s.rgb[:48, :40]) for s in scenes for _ in range(2)][:64]
    times = []
    for _ in range(max(rounds, 3)):
        start = time.perf_counter()
        classifier.predict_proba(crops)
        times.append((time.perf_counter() - start) / len(crops))
    return {
        "view_ms_per_image": {spec: round(statistics.median(v), 1) for spec, v in per_round.items()},
        "classifier_ms_per_crop": round(1000 * statistics.median(times), 3),
        "n_images": len(scenes),
        "rounds": rounds,
        "before": before,
        "after": load_info(),
    }


def part_timing(base: Any, scenes: Sequence[Scene], variants: Sequence[str], rounds: int, tile: int,
                overlap: int) -> dict[str, Any]:  # fmt: skip
    """The real pipeline, no cache: each variant's seconds per image as ``maskwatch detect`` spends them
    (detector views, fusion, six crops per face kept, the classifier), the variants interleaved image by
    image, order rotating."""
    totals: dict[str, list[float]] = {name: [] for name in variants}
    before = load_info()
    for r in range(rounds):
        per_round = dict.fromkeys(variants, 0.0)
        for i, scene in enumerate(scenes):
            k = (i + r) % len(variants)
            for name in [*variants[k:], *variants[:k]]:
                start = time.perf_counter()
                run_variant(base, scene.rgb, VARIANTS[name], tile, overlap)
                per_round[name] += time.perf_counter() - start
        for name in variants:
            totals[name].append(per_round[name] / len(scenes))
        log(f"timing round {r + 1}: " + ", ".join(f"{k} {v / len(scenes) * 1000:.0f} ms" for k, v in per_round.items()))
    ratios = {
        name: round(statistics.median(t / b for t, b in zip(totals[name], totals[BASELINE], strict=True)), 3)
        for name in variants
    } if BASELINE in variants else {}  # fmt: skip
    return {
        "s_per_image_median": {name: round(statistics.median(v), 4) for name, v in totals.items()},
        "ratio_to_accurate": ratios,
        "rounds": rounds,
        "n_images": len(scenes),
        "before": before,
        "after": load_info(),
    }


def run_variant(pipeline: Any, rgb: np.ndarray, views: Sequence[str], tile: int, overlap: int) -> list[Any]:
    """One image through the pipeline with these views, computed now (as a preset would run them)."""
    h, w = rgb.shape[:2]
    specs = [ViewSpec.parse(v) for v in views]
    got = [tiled_view(pipeline, rgb, s, tile, overlap) if s.tiled else pipeline.detect_view(rgb, s.side, s.mirrored)
           for s in specs]  # fmt: skip
    fused = pipeline.fuse(got, w, h)
    boxes = fused.boxes[fused.scores >= pipeline.score_threshold]  # as detect: the faces kept are classified
    return [boxes, pipeline.classify(pipeline.face_views(rgb, boxes), pipeline.views_per_face)]


def markdown_table(report: dict[str, Any]) -> str:
    """The variants as a Markdown table (for BENCHMARKS.md): time is the measured ratio to the baseline where
    ``timing`` ran it, else the estimate (``~``)."""

    def f(value: Any) -> str:
        return "–" if value is None else f"{value:.3f}"

    measured = report.get("timing", {}).get("ratio_to_accurate", {})
    lines = [
        "| variant (views; f = also mirrored) | recall <20 (<12 / 12–20) | recall ≥20 | precision | face AP "
        "| AP with / without mask | **mAP@0.5** | time per image vs accurate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["variants"]["rows"].items():
        more, ap = row.get("recall_more", {}), row.get("ap50", {})
        estimate = row.get("est_time_ratio")
        time_ratio = f"{measured[name]:.2f}x" if name in measured else "–" if estimate is None else f"~{estimate:.2f}x"
        label = f"**{name}** (adopted)" if name == ADOPTED else name
        lines.append(
            f"| {label} ({' '.join(row['views'])}) | {f(row['recall']['<20'])} ({f(more.get('<12'))} / "
            f"{f(more.get('12-20'))}) | {f(row['recall']['>=20'])} | {f(row['precision'])} | {f(row['ap50_face'])} "
            f"| {f(ap.get('with_mask'))} / {f(ap.get('without_mask'))} | {f(row['map50'])} | {time_ratio} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC folder with images/ and annotations/")
    p.add_argument("--splits", type=Path, default=DEFAULT_SPLITS, help="split-list folder")
    p.add_argument("--split", default="valid", choices=["valid", "train"], help="never test: see the docstring")
    p.add_argument("--model", type=Path, default=None, help="classifier (default: the bundled model)")
    p.add_argument("--backend", default=None, help="classifier backend (default: the runtime's choice)")
    p.add_argument("--classes", default="with_mask,without_mask", help="classes averaged into mAP")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="results (parts are merged into it)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cached detector views")
    p.add_argument("--parts", default="cache,views,variants,viewtime", help="cache, views, variants, viewtime, timing")
    p.add_argument("--variants", default=",".join(VARIANTS), help="variants to score (names from VARIANTS)")
    p.add_argument("--timing-variants", default="accurate,accurate+1600", help="variants timed for real")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (viewtime, timing)")
    p.add_argument("--viewtime-images", type=int, default=28, help="images (spread over the split) for viewtime")
    p.add_argument("--timing-images", type=int, default=42, help="images (spread over the split) for timing")
    p.add_argument("--limit", type=int, default=0, help="only the first N images (quick checks)")
    p.add_argument("--tile", type=int, default=640, help="tile side for tiled views (px of the resized image)")
    p.add_argument("--overlap", type=int, default=160, help="tile overlap (px of the resized image)")
    args = p.parse_args(argv)

    from maskwatch.bundled import default_model_path
    from maskwatch.core.digests import file_sha256
    from maskwatch.detection.pipeline import MaskDetector

    scenes, chosen = load_split(args.data, args.splits, args.split)
    if args.limit:
        scenes = scenes[: args.limit]
    log(f"{len(scenes)} images of {args.split} ({sum(len(s.target['boxes']) for s in scenes)} faces)")
    base = MaskDetector.load(args.model, backend=args.backend, preset="accurate", int8_detector=False,
                             int8_classifier=False, candidate_threshold=CANDIDATE_THRESHOLD)  # fmt: skip
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    specs = list(dict.fromkeys(spec for name in variants for spec in VARIANTS[name]))
    cache = ViewCache(args.cache, base, args.tile, args.overlap)
    model_sha = file_sha256(args.model if args.model else default_model_path())[:12]
    classifier = CachingClassifier(
        base.classifier, cache.root / f"classifier-{model_sha}-{base.classifier.backend}.npz"
    )
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]

    report: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    model_name = str(args.model) if args.model else "bundled"
    same = (report.get("images"), report.get("n_images"), report.get("model"), report.get("data"))
    if same != (chosen, len(scenes), model_name, str(args.data)):
        report = {}  # other images or another model: nothing to merge with
    report.update({
        "command": "python benchmarks/study_small_faces.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": str(args.data), "images": chosen, "n_images": len(scenes),
        "n_faces": int(sum(len(s.target["boxes"]) for s in scenes)),
        "model": model_name, "cpu": cpu_model(), "cores": os.cpu_count(),
        "baseline": f"{BASELINE}: the accurate preset before this study ({', '.join(VARIANTS[BASELINE])})",
        "adopted": f"{ADOPTED}: the accurate preset since ({', '.join(VARIANTS[ADOPTED])})",
        "candidate_threshold": CANDIDATE_THRESHOLD, "score_threshold": base.score_threshold,
        "tile": args.tile, "overlap": args.overlap,
    })  # fmt: skip
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if "cache" in parts:
        report["cache"] = part_cache(cache, scenes, specs)
    if "views" in parts:
        report["views"] = part_views(base, cache, scenes, specs, variants)
    if "variants" in parts:
        scored = part_variants(base, classifier, cache, scenes, variants, classes)
        scored["rows"] = {**report.get("variants", {}).get("rows", {}), **scored["rows"]}  # runs add up
        report["variants"] = scored
    if "viewtime" in parts:
        timed_scenes = scenes[:: max(1, len(scenes) // args.viewtime_images)][: args.viewtime_images]
        report["viewtime"] = part_viewtime(base, base.classifier, timed_scenes, specs, args.rounds, args.tile,
                                           args.overlap)  # fmt: skip
    if "variants" in report:
        estimate_times(report["variants"], report.get("viewtime"))
    if "timing" in parts:
        timed = [v.strip() for v in args.timing_variants.split(",") if v.strip()]
        timed_scenes = scenes[:: max(1, len(scenes) // args.timing_images)][: args.timing_images]
        report["timing"] = part_timing(base, timed_scenes, timed, args.rounds, args.tile, args.overlap)
    if "variants" in report:
        report["table_markdown"] = markdown_table(report)
        print(report["table_markdown"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
