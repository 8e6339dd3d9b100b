"""What the detector interval and the motion gate cost in people agreement, on the benchmark videos.

    .venv/bin/python benchmarks/bench_interval.py --json benchmarks/results/interval.json

Two sets of videos, analysed offline (every frame of a file) by this tree's engine, with the detector on every
frame (the reference) and with each setting of the grid (``detect_every`` x motion gate x ``max_skip``):

* ``moving``: the videos of ``bench_tracker.py`` / ``bench_stream.py`` (every shared scene image, ``--images``
  per video, each held ``--hold`` frames with a slow zoom and pan at 25 FPS: every frame moves, and a new crowd
  comes every 0.6 s, much more often than in front of a real camera);
* ``still``: the videos of ``bench_capacity.py`` (``--still-videos`` x ``--still-images`` scene images
  letterboxed to 640x480 and held ``--still-hold`` s, 25 FPS, black before and after: a still scene, cut).

The models' outputs are remembered (by the input's bytes) from the reference run, so every setting sees the
very same detections and class probabilities on the frames where it runs the models, and only the schedule
differs. Per setting and video set, like ``bench_tracker.py``: people (summed over the videos) and their
agreement ``1 - |n - reference| / reference``, the stricter video-by-video figure
(``1 - sum |n - ref| / sum ref``), the count of each verdict, the share of frames the detector ran on and of
the reference's crops that were classified. ``--classify-carried`` also runs the default setting with the
crops of the carried (predicted) boxes classified as votes (``maskwatch.stream.analysis.CLASSIFY_CARRIED``).
Settings are chosen on the even videos of each set and reported on the odd ones (``choose`` / ``report``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))
from bench_pipeline import DEFAULT_DATA, cpu_model, make_video  # noqa: E402
from bench_tracker import halves  # noqa: E402

from maskwatch.detection.pipeline import MaskDetector  # noqa: E402
from maskwatch.stream import EngineConfig, SourceSpec, StreamEngine  # noqa: E402


class Remembered:
    """A model whose outputs are remembered by input bytes; counts the inputs it was asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.cache, self.asked = inner, {}, 0
        for name in ("classes", "crop_margin", "compliant_classes", "backend"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    @staticmethod
    def _key(image: np.ndarray) -> tuple[Any, ...]:
        return (image.shape, hash(np.ascontiguousarray(image).tobytes()))

    def detect(self, image: np.ndarray) -> Any:
        self.asked += 1
        key = self._key(image)
        if key not in self.cache:
            self.cache[key] = self.inner.detect(image)
        return self.cache[key]

    def predict_proba(self, images: list[np.ndarray]) -> np.ndarray:
        self.asked += len(images)
        keys = [self._key(im) for im in images]
        missing = [(k, im) for k, im in zip(keys, images, strict=True) if k not in self.cache]
        if missing:
            for (k, _), p in zip(missing, self.inner.predict_proba([im for _, im in missing]), strict=True):
                self.cache[k] = p
        return np.array([self.cache[k] for k in keys]).reshape(len(images), -1)


def remembered_detector() -> tuple[MaskDetector, Remembered, Remembered]:
    loaded = MaskDetector.load()
    finder, classifier = Remembered(loaded.int8_face_finder), Remembered(loaded.int8_classifier)
    detector = MaskDetector(loaded.classifier, loaded.face_finder, int8_face_finder=finder, int8_classifier=classifier)
    return detector, finder, classifier


def people(detector: MaskDetector, video: Path, spec: dict[str, Any]) -> dict[str, Any]:
    engine = StreamEngine(detector, EngineConfig(stop_when_done=True, stats_interval=3600))
    events = engine.events()
    engine.add_source(SourceSpec(uri=str(video), name="v", **spec))
    engine.start()
    summary = next(e for e in events if e.type == "source")
    engine.stop(5.0)
    return {"people": summary.people.n_people, "counts": summary.people.counts, "frames": summary.frames}


def run_setting(detector, finder, classifier, videos: list[Path], spec: dict[str, Any]) -> dict[str, Any]:
    asked = finder.asked, classifier.asked
    start = time.perf_counter()
    out = []
    for v, video in enumerate(videos):
        out.append({"video": v, **people(detector, video, spec)})
    return {"videos": out, "detector_frames": finder.asked - asked[0], "crops": classifier.asked - asked[1],
            "frames": sum(r["frames"] for r in out), "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def make_sets(args: argparse.Namespace, work: Path) -> dict[str, list[Path]]:
    from camera_servers import scene_video

    images = sorted((args.data / "images").glob("*.jpg"))
    moving = []
    firsts = list(range(0, len(images), args.images))
    for v, first in enumerate(firsts[: args.moving_videos or None]):
        path = work / f"moving{v:02d}.mp4"
        if not path.exists():
            make_video(images[first : first + args.images], path, args.hold)
        moving.append(path)
    still = []
    for v in range(args.still_videos):
        path = work / f"still{v:02d}.avi"
        if not path.exists():
            chosen = images[v * args.still_images : (v + 1) * args.still_images]
            scene_video(path, chosen, hold=args.still_hold, fps=25.0, lead=4.0, tail=4.0)
        still.append(path)
    return {"moving": moving, "still": still}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="VOC scenes folder (images/)")
    p.add_argument("--images", type=int, default=20, help="moving: scene images per video")
    p.add_argument("--hold", type=int, default=15, help="moving: frames per image")
    p.add_argument("--moving-videos", type=int, default=0, help="moving: the first N videos only (0: all)")
    p.add_argument("--still-videos", type=int, default=8)
    p.add_argument("--still-images", type=int, default=20)
    p.add_argument("--still-hold", type=float, default=3.0)
    p.add_argument("--every", default="1,2,3,4,6", help="detect_every values of the grid")
    p.add_argument("--skips", default="1,2,4", help="max_skip values (s) of the grid, with the motion gate")
    p.add_argument("--sets", default="moving,still")
    p.add_argument("--default", default='{"detect_every": 3, "motion_gate": true, "max_skip": 2.0}',
                   help="the setting also run with the carried crops classified")  # fmt: skip
    p.add_argument("--classify-carried", action="store_true")
    p.add_argument("--settle-first", action="store_true", help="every setting with schedule.SETTLE_FIRST on")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "interval")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.settle_first:
        import maskwatch.stream.schedule as schedule

        schedule.SETTLE_FIRST = True
    sets = {k: v for k, v in make_sets(args, args.work).items() if k in args.sets.split(",")}
    detector, finder, classifier = remembered_detector()
    grid: list[dict[str, Any]] = []
    for every in (int(e) for e in args.every.split(",")):
        grid.append({"detect_every": every, "motion_gate": False})
        for skip in (float(s) for s in args.skips.split(",")):
            grid.append({"detect_every": every, "motion_gate": True, "max_skip": skip})
    result: dict[str, Any] = {
        "command": " ".join(["benchmarks/bench_interval.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": os.getloadavg()},
        "sets": {k: [str(v) for v in vs] for k, vs in sets.items()},
        "settle_first": args.settle_first,
        "settings": {},
    }
    classes = list(detector.classes)
    for name, videos in sets.items():
        reference = run_setting(detector, finder, classifier, videos, {"detect_every": 1, "motion_gate": False})
        print(f"[{name}] reference: {sum(r['people'] for r in reference['videos'])} people, "
              f"{reference['frames']} frames ({reference['seconds']} s)", flush=True)  # fmt: skip
        result["settings"].setdefault(name, {})["reference"] = reference
        runs = [(json.dumps(s, sort_keys=True), s, False) for s in grid]
        if args.classify_carried:
            default = json.loads(args.default)
            runs.append((json.dumps(default, sort_keys=True) + " +carried", default, True))
        import maskwatch.stream.analysis as analysis

        for key, spec, carried in runs:
            analysis.CLASSIFY_CARRIED = carried
            got = run_setting(detector, finder, classifier, videos, spec)
            analysis.CLASSIFY_CARRIED = False
            figures = halves(reference["videos"], got["videos"], classes)
            entry = {
                "setting": spec, "classify_carried": carried,
                "detector_share": round(got["detector_frames"] / reference["detector_frames"], 4),
                "crops_share": round(got["crops"] / reference["crops"], 4), "seconds": got["seconds"],
                **{part: {k: v for k, v in figures[part].items() if k != "per_video"} for part in figures},
                "per_video": [(r["video"], r["people"]) for r in got["videos"]],
            }  # fmt: skip
            result["settings"][name][key] = entry
            print(f"[{name}] {key}: detector on {entry['detector_share']:.3f} of the frames, crops "
                  f"{entry['crops_share']:.3f}; people agreement choose {entry['choose']['agreement_total']} / "
                  f"{entry['choose']['agreement_per_video_abs']}, report {entry['report']['agreement_total']} / "
                  f"{entry['report']['agreement_per_video_abs']} ({got['seconds']} s)", flush=True)  # fmt: skip
    result["machine"]["load_after"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
