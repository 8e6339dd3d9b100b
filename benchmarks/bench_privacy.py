"""Recall-first blur: its operating point (chosen on scenes/train and valid), what it hides, how much it blurs, what it
costs in speed.

    .venv/bin/python benchmarks/bench_privacy.py --parts choose --cache runs/bench/privacy  # the sweep (~15 min)
    .venv/bin/python benchmarks/bench_privacy.py --parts speed --rounds 3  # side by side, ratios (~3 min)
    .venv/bin/python benchmarks/bench_privacy.py                           # both

Parts (merged into ``--json`` under their names):

* ``choose`` (on ``--split train+valid``, or either; never test: it is read by ``maskwatch
  evaluate-detection --split test``): the live (``fast``) preset's detector run once per image and per
  frame of the videos made from the images (:func:`maskwatch.stream.privacy.video_from_image`, ``--frames``
  at 10 frames/s), its candidates kept down to 0.01 and cached; then every setting of the grid replayed on
  the cache with
  the blur's own parts (:func:`~maskwatch.detection.privacy.head_boxes`,
  :func:`~maskwatch.detection.privacy.blur_mask`, :class:`~maskwatch.stream.privacy.BlurHold`,
  :func:`~maskwatch.detection.evaluation.face_coverage`): the blur score (candidates scoring at least it are
  blurred), the head growth (``GROW_BASE`` times a scale; the choice is
  :data:`~maskwatch.detection.privacy.HEAD_GROW`), the hold. A
  single view's candidates at a floor are exactly those at 0.01 scoring at least the floor (greedy NMS by
  score: lower boxes never remove higher ones), so the replay is what the pipeline would blur.

  **The rule** (fixed before reading the grid): among the settings whose privacy coverage on train and valid
  together meets the targets with a margin, on the images *and* on the videos (faces >= 20 px: 0.99 + 0.005,
  under 20 px: 0.95 + 0.01), take the one that blurs the least of the image (mean of the images' and the
  videos' blurred area share). The hold is not on the grid: the made-up videos hold still scenes where nobody
  leaves, so a longer hold always looks free there; it is fixed at one second by design, and 0 and 0.5 s are
  reported beside it for the chosen setting. Why train too: the detector is not trained on scenes, so train is
  held-out data for it as much as valid, and valid alone (84 images, 227 faces of 20 px and more) resolves the
  >= 20 px target only to one face in 227 (0.0044), less than the margin; the first choice, on valid alone,
  met the targets there and missed the >= 20 px one on test (0.984).

  ``before`` is the blur this replaced: the faces that count (score >= 0.3), each grown by 0.2 of its size
  on every side, no hold.

* ``speed``: what recall-first blur costs per frame on the live path, ``before`` and ``recall-first``
  interleaved frame by frame over ``--rounds`` (the CPU is shared: read the ratios): the detector (its
  candidates down to the blur score instead of 0.1), the blur hold, the blur, and the JPEG a live view
  sends; and the share of the image each blurs.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MASKWATCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "scenes"
DEFAULT_SPLITS = ROOT / "data" / "splits" / "scenes"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "privacy.json"
FLOOR = 0.01  # the cache's candidate floor (every blur score of the grid is above it)
FPS = 10.0
BLUR_SCORES = (0.1, 0.08, 0.06, 0.05, 0.045, 0.04, 0.035, 0.03, 0.025, 0.02)
GROW_BASE = (0.25, 0.5, 0.15)  # the head around a face box (sides, top, bottom); the grid scales it
GROW_SCALES = (1.0, 1.25, 1.5)
TARGETS = {">=20": 0.99, "<20": 0.95}
MARGIN = {">=20": 0.005, "<20": 0.01}
BEFORE = {"blur_score": 0.3, "grow": (0.2, 0.2, 0.2), "hold_s": 0.0}  # the blur this replaced


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def load_split(data: Path, splits: Path, split: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, RGB, annotated boxes) of the split's images, read as ``evaluate_voc`` reads them."""
    from maskwatch.data.images import decode_rgb
    from maskwatch.data.voc import parse_voc, voc_image_for
    from maskwatch.detection.evaluation import ImageSubset

    subset = ImageSubset.from_split_lists(splits, split)
    out = []
    for xml in sorted((data / "annotations").glob("*.xml")):
        if xml.stem in subset.stems:
            annotation = parse_voc(xml)
            image = voc_image_for(annotation, data / "images")
            boxes = np.array([o.box for o in annotation.objects], dtype=np.float64).reshape(-1, 4)
            out.append((xml.stem, decode_rgb(image), boxes))
    return out


def detector(blur_threshold: float, threads: int) -> Any:
    from maskwatch.detection.pipeline import MaskDetector

    return MaskDetector.load(preset="fast", blur_threshold=blur_threshold, threads=threads)


# --------------------------------------------------------------------------------------------------------
# choose


def cache_candidates(scenes: Sequence[tuple[str, np.ndarray, np.ndarray]], frames: int, threads: int) -> dict:
    """Each image's and each video frame's candidates (boxes, scores) down to :data:`FLOOR`."""
    from maskwatch.stream.privacy import video_from_image

    det = detector(FLOOR, threads)
    images, videos = [], []
    for k, (_stem, rgb, boxes) in enumerate(scenes, start=1):
        faces = det.find_faces(rgb)
        images.append({"shape": rgb.shape[:2], "boxes": faces.boxes, "scores": faces.scores, "gt": boxes})
        video = []
        for image, moved in video_from_image(rgb, boxes, frames, seed=k):  # the seeds evaluate-detection uses
            faces = det.find_faces(image)
            video.append({"boxes": faces.boxes, "scores": faces.scores, "gt": moved})
        videos.append({"shape": rgb.shape[:2], "frames": video})
        if k % 10 == 0:
            log(f"cached {k}/{len(scenes)} images and their videos")
    return {"images": images, "videos": videos}


def _buckets() -> dict[str, tuple[float, float]]:
    from maskwatch.detection.evaluation import SIZE_BUCKETS

    return SIZE_BUCKETS


def _tally(hit: dict, total: dict, boxes: np.ndarray, hidden: np.ndarray) -> None:
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    for name, (lo, hi) in _buckets().items():
        in_bucket = (sizes >= lo) & (sizes < hi)
        total[name] += int(in_bucket.sum())
        hit[name] += int((in_bucket & hidden).sum())


def replay(cache: dict, blur_score: float, grow: Sequence[float], hold_s: float) -> dict[str, Any]:
    """Privacy coverage and blurred area of one setting, on the cached images and videos."""
    from maskwatch.core.faces import Faces
    from maskwatch.detection.evaluation import PRIVACY_COVER, face_coverage
    from maskwatch.detection.privacy import blur_mask, head_boxes
    from maskwatch.stream.privacy import BlurHold

    out: dict[str, Any] = {}
    for kind in ("images", "videos"):
        hit = dict.fromkeys(_buckets(), 0)
        total = dict.fromkeys(_buckets(), 0)
        blurred = pixels = 0
        for item in cache[kind]:
            h, w = item["shape"]
            frames = [item] if kind == "images" else item["frames"]
            hold = BlurHold(hold_s) if kind == "videos" and hold_s > 0 else None
            for index, frame in enumerate(frames):
                keep = frame["scores"] >= blur_score
                boxes = frame["boxes"][keep]
                if hold is not None:
                    held = hold.update(Faces(boxes, frame["scores"][keep]), index / FPS)
                    boxes = np.concatenate([boxes, held])
                mask = blur_mask(head_boxes(boxes, grow), w, h)
                blurred += int(mask.sum())
                pixels += mask.size
                _tally(hit, total, frame["gt"], face_coverage(mask, frame["gt"]) >= PRIVACY_COVER)
        out[kind] = {
            "privacy_coverage": {k: round(hit[k] / total[k], 4) if total[k] else None for k in hit},
            "blurred_area_share": round(blurred / pixels, 4),
            "n": total,
        }
    return out


def meets(row: dict[str, Any]) -> bool:
    return all(
        row[kind]["privacy_coverage"][bucket] >= TARGETS[bucket] + MARGIN[bucket]
        for kind in ("images", "videos")
        for bucket in TARGETS
    )


def _cached(args: argparse.Namespace, split: str, scenes: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> dict:
    """One split's candidates, from ``--cache`` (a folder: one file per split) when there."""
    path = None if args.cache is None else args.cache / f"{split}_{args.frames}.pkl"
    if path is not None and path.is_file():
        with path.open("rb") as handle:
            return pickle.load(handle)  # our own file, written below
    cache = cache_candidates(scenes, args.frames, args.threads)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            pickle.dump(cache, handle)
    return cache


def choose(args: argparse.Namespace) -> dict[str, Any]:
    from maskwatch.detection.privacy import BLUR_HOLD_S

    splits = args.split.split("+")
    if not set(splits) <= {"valid", "train"}:
        raise SystemExit("the operating point is chosen on valid and train; test is read once by evaluate-detection")
    started = time.perf_counter()
    cache: dict[str, list] = {"images": [], "videos": []}
    n_images = 0
    for split in splits:
        scenes = load_split(args.data, args.splits, split)
        n_images += len(scenes)
        log(f"{len(scenes)} {split} images, {args.frames} frames each as video")
        part = _cached(args, split, scenes)
        cache["images"] += part["images"]
        cache["videos"] += part["videos"]
    log(f"cached in {time.perf_counter() - started:.0f} s")
    grid = []
    for score in BLUR_SCORES:
        for scale in GROW_SCALES:
            grow = tuple(round(v * scale, 4) for v in GROW_BASE)
            row = {"blur_score": score, "grow_scale": scale, "grow": grow, "hold_s": BLUR_HOLD_S}
            row.update(replay(cache, score, grow, BLUR_HOLD_S))
            row["meets_targets_with_margin"] = meets(row)
            row["area"] = round((row["images"]["blurred_area_share"] + row["videos"]["blurred_area_share"]) / 2, 4)
            grid.append(row)
            log(
                f"score {score} grow x{scale}: images <20 {row['images']['privacy_coverage']['<20']} >=20 "
                f"{row['images']['privacy_coverage']['>=20']}, videos <20 {row['videos']['privacy_coverage']['<20']}"
                f" >=20 {row['videos']['privacy_coverage']['>=20']}, area {row['area']}"
            )
    passing = [row for row in grid if row["meets_targets_with_margin"]]
    chosen = min(passing, key=lambda row: (row["area"], -row["blur_score"])) if passing else None
    before = {**BEFORE, **replay(cache, BEFORE["blur_score"], BEFORE["grow"], BEFORE["hold_s"])}
    holds = {}
    if chosen is not None:
        for hold in (0.0, 0.5, BLUR_HOLD_S):
            holds[str(hold)] = replay(cache, chosen["blur_score"], chosen["grow"], hold)["videos"]
    return {
        "split": args.split,
        "n_images": n_images,
        "frames_per_video": args.frames,
        "fps": FPS,
        "rule": "least blurred area (mean of images and videos) among the settings meeting "
        f"{TARGETS} + {MARGIN} on images and videos",
        "grid": grid,
        "chosen": chosen,
        "before": before,
        "hold_sensitivity_chosen": holds,
    }


# --------------------------------------------------------------------------------------------------------
# speed


def speed(args: argparse.Namespace, chosen_score: float) -> dict[str, Any]:
    """``before`` and ``recall-first`` on the live path, frame by frame interleaved."""
    from maskwatch.core.jpeg import encode_jpeg
    from maskwatch.detection.privacy import blur_faces, pixelate
    from maskwatch.detection.results import FrameResult
    from maskwatch.stream.privacy import BlurHold, video_from_image

    scenes = load_split(args.data, args.splits, "valid")[: args.speed_images]
    frames = [
        image for k, (_, rgb, boxes) in enumerate(scenes, 1) for image, _ in video_from_image(rgb, boxes, 10, seed=k)
    ]
    old, new = detector(0.1, args.threads), detector(chosen_score, args.threads)
    parts = ("detect", "hold", "blur", "jpeg", "total")
    times: dict[str, dict[str, list[float]]] = {v: {p: [] for p in parts} for v in ("before", "recall-first")}
    area: dict[str, list[float]] = {"before": [], "recall-first": []}
    boxes_blurred: dict[str, list[int]] = {"before": [], "recall-first": []}
    for _ in range(args.rounds):
        hold = BlurHold()
        for index, image in enumerate(frames):
            if index % 10 == 0:
                hold = BlurHold()  # a new video
            for variant in ("before", "recall-first") if index % 2 == 0 else ("recall-first", "before"):
                pipeline = old if variant == "before" else new
                t0 = time.perf_counter()
                faces = pipeline.gate(pipeline.find_faces(image))
                t1 = time.perf_counter()
                if variant == "before":
                    regions = faces.boxes[faces.kept]
                    t2 = time.perf_counter()
                    out = pixelate(image, regions, grow=0.2)
                else:
                    held = hold.update(faces, index / FPS)
                    t2 = time.perf_counter()
                    result = FrameResult(faces, width=image.shape[1], height=image.shape[0], held_boxes=held)
                    out = blur_faces(image, result)
                    regions = np.concatenate([faces.boxes, held])
                t3 = time.perf_counter()
                encode_jpeg(out, 80)
                t4 = time.perf_counter()
                for part, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0), strict=True):
                    times[variant][part].append(value * 1000)
                area[variant].append(float((out != image).any(axis=2).mean()))
                boxes_blurred[variant].append(len(regions))
    med = {v: {p: round(statistics.median(times[v][p]), 3) for p in parts} for v in times}
    mean = {v: {p: round(statistics.fmean(times[v][p]), 3) for p in parts} for v in times}
    return {
        "frames": len(frames),
        "rounds": args.rounds,
        "ms_per_frame_median": med,
        "ms_per_frame_mean": mean,
        "ratio_total_median": round(med["recall-first"]["total"] / med["before"]["total"], 3),
        "ratio_total_mean": round(mean["recall-first"]["total"] / mean["before"]["total"], 3),
        "changed_pixels_share": {v: round(statistics.fmean(area[v]), 4) for v in area},
        "boxes_blurred_per_frame": {v: round(statistics.fmean(boxes_blurred[v]), 2) for v in boxes_blurred},
        "what": "before: detector candidates down to 0.1, the faces that count (>= 0.3) blurred, grown 0.2 each "
        "side; recall-first: candidates down to the blur score, all blurred, grown to the head, blur hold",
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--splits", type=Path, default=DEFAULT_SPLITS)
    parser.add_argument("--split", default="train+valid", help="valid, train or both (train+valid)")
    parser.add_argument("--frames", type=int, default=20, help="frames per video made from an image")
    parser.add_argument("--parts", nargs="+", default=["choose", "speed"], choices=["choose", "speed"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--speed-images", type=int, default=20, help="images made into 10-frame videos for speed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument(
        "--cache", type=Path, help="choose: a folder to keep each split's candidates in (a rerun reads them)"
    )
    args = parser.parse_args(argv)
    from maskwatch.detection.privacy import BLUR_SCORE

    out: dict[str, Any] = json.loads(args.json.read_text()) if args.json.is_file() else {}
    out["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg_start": list(os.getloadavg())}
    if "choose" in args.parts:
        out["choose"] = choose(args)
    if "speed" in args.parts:
        out["speed"] = speed(args, BLUR_SCORE)
        out["speed"]["blur_score"] = BLUR_SCORE
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
