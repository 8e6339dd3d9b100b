"""People counts of two trackers side by side, on the stream benchmark's videos (same detections for both).

    .venv/bin/python benchmarks/bench_tracker.py --baseline-src /work/baseline/src \
        --gains 0.25,0.5,0.7,0.8,0.9,1.0 --json benchmarks/results/tracker.json

The videos are the ones ``bench_stream.py`` plays (``bench_pipeline.make_video``: each shared scene image held
``--hold`` frames with a slow zoom and pan, 640x480, 25 FPS), here every scene image in videos of
``--images`` images each. The ``fast`` pipeline (the preset of videos and streams: INT8 CenterFace, INT8
classifier) runs once per frame; its faces (boxes, scores, class probabilities) are cached in ``--cache``.
Then :class:`maskwatch.stream.tracking.FaceTracker` of each source tree (this checkout's, and the one at
``--baseline-src``, e.g. the code before the tracker changed) runs in its own subprocess over the *same*
cached faces, as the engine would (25 FPS, ``min_frames`` 3, every face classified on every frame), and its
people counts (people, and people per verdict) are compared video by video:

* ``agreement`` of a count: ``1 - |candidate - baseline| / baseline`` (1.0 when equal), per video and over all
  videos (the sums);
* ``agreement_per_video_abs``: ``1 - sum |candidate - baseline| / sum baseline`` (differences of videos do not
  cancel out: the stricter figure);
* ``per_verdict_agreement``: the count agreement for each verdict class, summed over the videos.

The tracker is the only thing that differs between the two runs, so the figure measures the tracker alone.
Figures are given for the even videos (``choose``: where the candidate's setting was chosen), the odd ones
(``report``) and all. ``--gains 0.25,0.5,...`` also runs the candidate with each Kalman gain
(``maskwatch.stream.tracking.KALMAN_GAIN``): the grid it was chosen from, on the ``choose`` videos.
``--analysed-fps 2,8`` also gives both trackers only that share of the frames, at their own times, the tracker
told 25 FPS (as the engine tells it the camera's rate while a busy node analyses fewer frames), and compares
each with the baseline's count on every frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import DEFAULT_DATA, cpu_model, make_video

ROOT = Path(__file__).resolve().parents[1]


def cache_faces(data: Path, images_per_video: int, hold: int, cache: Path) -> dict[str, Any]:
    """Run the ``fast`` pipeline on every frame of every video once; faces saved to ``cache`` (npz)."""
    import cv2

    from maskwatch.detection.pipeline import MaskDetector

    images = sorted((data / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no scene images under {data}/images")
    detector = MaskDetector.load(preset="fast")
    arrays: dict[str, np.ndarray] = {}
    videos = []
    work = Path(tempfile.mkdtemp(prefix="maskwatch-bench-tracker-"))
    start = time.perf_counter()
    for v, first in enumerate(range(0, len(images), images_per_video)):
        path = work / f"video{v:02d}.mp4"
        info = make_video(images[first : first + images_per_video], path, hold)
        capture = cv2.VideoCapture(str(path))
        counts, boxes, scores, probs = [], [], [], []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            result = detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            counts.append(len(result.faces))
            for face in result.faces:
                boxes.append(face.box)
                scores.append(face.score)
                probs.append([face.probabilities[c] for c in detector.classes])
        capture.release()
        path.unlink()
        arrays[f"v{v}_counts"] = np.array(counts, dtype=np.int32)
        arrays[f"v{v}_boxes"] = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        arrays[f"v{v}_scores"] = np.array(scores, dtype=np.float32)
        arrays[f"v{v}_probs"] = np.array(probs, dtype=np.float32).reshape(-1, len(detector.classes))
        videos.append({"video": v, "first_image": images[first].name, "images": info["images"],
                       "frames": info["frames"], "faces": int(sum(counts))})  # fmt: skip
        print(f"[cache] video {v}: {info['frames']} frames, {sum(counts)} faces "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    meta = {"classes": list(detector.classes), "compliant_classes": list(detector.compliant_classes),
            "videos": videos, "hold": hold, "images_per_video": images_per_video, "preset": "fast",
            "detector": detector.configured(scales="fast").settings()["detector"]}  # fmt: skip
    arrays["meta"] = np.array(json.dumps(meta))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **arrays)
    return meta


# The part run in a subprocess with one source tree on PYTHONPATH (so the baseline's tracker can be imported).
_COUNT = r"""
import json, sys
import numpy as np
from maskwatch.detection.results import FrameResult
from maskwatch.stream.tracking import FaceTracker
try:  # faces as columns (this tree); the baseline's trees had one FaceResult per face
    from maskwatch.core.faces import Faces
except ImportError:
    from maskwatch.detection.results import FaceResult
    Faces = None

if len(sys.argv) > 2 and sys.argv[2] != "-":  # a Kalman gain to try (the candidate's tracker only)
    import maskwatch.stream.tracking as tracking
    tracking.KALMAN_GAIN = float(sys.argv[2])
analysed = float(sys.argv[3]) if len(sys.argv) > 3 else 25.0  # frames analysed per second of the 25 FPS video
cache = np.load(sys.argv[1])
meta = json.loads(str(cache["meta"]))
classes = meta["classes"]
out = []
for video in meta["videos"]:
    v = video["video"]
    counts, boxes, scores, probs = (cache[f"v{v}_{k}"] for k in ("counts", "boxes", "scores", "probs"))
    tracker = FaceTracker(classes, frame_rate=25.0, min_frames=3, keep_tracks=0)
    k, last = 0, -1
    for frame, n in enumerate(counts):
        n = int(n)
        share = int(frame * analysed / 25.0)  # a busy node analyses a share of the frames, at their own times
        if share == last:
            k += n
            continue
        last = share
        if Faces is not None:
            faces = Faces(boxes[k:k + n], scores[k:k + n], classes=classes, probabilities=probs[k:k + n],
                          classified=np.ones(n, dtype=bool))
            result = FrameResult(faces, width=640, height=480, frame=frame, timestamp=frame / 25.0)
        else:
            listed = []
            for j in range(k, k + n):
                p = {c: float(x) for c, x in zip(classes, probs[j])}
                label = max(p, key=p.__getitem__)
                listed.append(FaceResult(box=tuple(float(x) for x in boxes[j]), score=float(scores[j]), label=label,
                                         probability=p[label], probabilities=p))
            result = FrameResult(faces=listed, classes=classes, width=640, height=480, frame=frame,
                                 timestamp=frame / 25.0)
        k += n
        tracker.update(result)
    tracker.finish()
    summary = tracker.summary()
    out.append({"video": v, "people": summary["n_tracks"], "counts": summary["counts"],
                "short_tracks": summary["n_short_tracks_ignored"], "tracker": summary.get("tracker")})
print(json.dumps(out))
"""


def count_people(
    src: Path, cache: Path, gain: float | None = None, analysed_fps: float = 25.0
) -> tuple[list[dict[str, Any]], float]:
    """The people counts of the tracker in the source tree ``src`` over the cached faces, and its seconds;
    ``analysed_fps`` < 25: only that share of the frames is given (as a busy node analyses a 25 FPS camera)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    extra = ["-" if gain is None else str(gain), str(analysed_fps)]
    done = subprocess.run([sys.executable, "-c", _COUNT, str(cache), *extra], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"tracker run with {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - start


def agreement(candidate: int, baseline: int) -> float:
    """``1 - |candidate - baseline| / baseline`` (1.0 when both are 0)."""
    if baseline == 0:
        return 1.0 if candidate == 0 else 0.0
    return 1.0 - abs(candidate - baseline) / baseline


def compare(base: list[dict[str, Any]], cand: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    per_video = []
    for b, c in zip(base, cand, strict=True):
        per_video.append({"video": b["video"], "baseline_people": b["people"], "candidate_people": c["people"],
                          "agreement": round(agreement(c["people"], b["people"]), 4),
                          "baseline_counts": b["counts"], "candidate_counts": c["counts"]})  # fmt: skip
    total_b = sum(b["people"] for b in base)
    total_c = sum(c["people"] for c in cand)
    verdicts = {}
    for name in classes:
        sb = sum(b["counts"].get(name, 0) for b in base)
        sc = sum(c["counts"].get(name, 0) for c in cand)
        verdicts[name] = {"baseline": sb, "candidate": sc, "agreement": round(agreement(sc, sb), 4)}
    abs_diff = sum(abs(c["people"] - b["people"]) for b, c in zip(base, cand, strict=True))
    return {
        "baseline_tracker": base[0].get("tracker") if base else None,
        "candidate_tracker": cand[0].get("tracker") if cand else None,
        "people_baseline": total_b,
        "people_candidate": total_c,
        "agreement_total": round(agreement(total_c, total_b), 4),
        # the stricter figure: per-video differences do not cancel out
        "agreement_per_video_abs": round(1.0 - abs_diff / total_b, 4) if total_b else None,
        "worst_video_agreement": min((v["agreement"] for v in per_video), default=None),
        "per_verdict_agreement": verdicts,
        "per_video": per_video,
    }


def halves(base: list[dict[str, Any]], cand: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """:func:`compare` on the even videos (``choose``), the odd ones (``report``) and all."""
    parts = {"choose": lambda v: v % 2 == 0, "report": lambda v: v % 2 == 1, "all": lambda v: True}
    out = {}
    for name, keep in parts.items():
        pairs = [(b, c) for b, c in zip(base, cand, strict=True) if keep(b["video"])]
        out[name] = compare([b for b, _ in pairs], [c for _, c in pairs], classes)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC scenes folder (images/)")
    p.add_argument("--images", type=int, default=20, help="scene images per video (20: 300 frames)")
    p.add_argument("--hold", type=int, default=15)
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "tracker-faces.npz",
                   help="cached faces (made on first use; delete it to re-run the pipeline)")  # fmt: skip
    p.add_argument("--baseline-src", type=Path, required=True, help="source tree of the reference tracker")
    p.add_argument("--candidate-src", type=Path, default=ROOT / "src", help="source tree of the tracker compared")
    p.add_argument("--gains", default="", help="comma-separated Kalman gains to try with the candidate")
    p.add_argument("--analysed-fps", default="",
                   help="comma-separated rates (< 25) to also give both trackers only that share of the frames "
                        "(the tracker told 25 FPS, as the engine tells it the camera's rate), each compared with "
                        "the baseline on every frame")  # fmt: skip
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.cache.is_file():
        meta = json.loads(str(np.load(args.cache)["meta"]))
    else:
        meta = cache_faces(args.data, args.images, args.hold, args.cache)
    base, base_s = count_people(args.baseline_src, args.cache)
    cand, cand_s = count_people(args.candidate_src, args.cache)
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load": os.getloadavg()},
        "command": " ".join(["benchmarks/bench_tracker.py", *(argv if argv is not None else sys.argv[1:])]),
        "videos": len(meta["videos"]),
        "frames": sum(v["frames"] for v in meta["videos"]),
        "faces": sum(v["faces"] for v in meta["videos"]),
        "pipeline": {"preset": meta["preset"], "detector": meta["detector"]},
        "seconds": {"baseline": round(base_s, 2), "candidate": round(cand_s, 2)},
        **halves(base, cand, meta["classes"]),
    }
    grid = [float(g) for g in args.gains.split(",") if g.strip()]
    if grid:
        result["gain_grid"] = {}
        for gain in grid:
            tried, _ = count_people(args.candidate_src, args.cache, gain)
            figures = halves(base, tried, meta["classes"])
            result["gain_grid"][str(gain)] = {
                part: {k: figures[part][k] for k in ("agreement_total", "agreement_per_video_abs")}
                for part in ("choose", "report")
            }
            print(f"[gain {gain}] {result['gain_grid'][str(gain)]}", flush=True)
    rates = [float(r) for r in args.analysed_fps.split(",") if r.strip()]
    if rates:
        result["analysed_fps"] = {}
        for rate in rates:
            figures = {}
            for who, src in (("baseline", args.baseline_src), ("candidate", args.candidate_src)):
                tried, _ = count_people(src, args.cache, analysed_fps=rate)
                every = halves(base, tried, meta["classes"])["all"]
                figures[who] = {k: every[k] for k in ("people_baseline", "people_candidate", "agreement_total",
                                                      "agreement_per_video_abs")}  # fmt: skip
            result["analysed_fps"][str(rate)] = figures
            print(f"[analysed {rate} FPS vs the baseline on every frame] {figures}", flush=True)
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k not in ("choose", "report", "all")}
    for part in ("choose", "report", "all"):
        summary[part] = {k: v for k, v in result[part].items() if k != "per_video"}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
