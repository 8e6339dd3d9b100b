"""Is a live camera's loss of people the detector schedule's or the analysed frame rate's? One capacity video
(``bench_capacity.py``'s, made by it under ``--work``) made again at lower frame rates (frames dropped evenly, the
frame rate of the file lowered to match), each analysed offline by this tree with several schedules, the
models' outputs remembered (``bench_interval.Remembered``) so every run sees the same detections.

    PYTHONPATH=$PWD/src .venv/bin/python benchmarks/bench_rate.py --video runs/capacity-short/video00.avi
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_interval import people, remembered_detector  # noqa: E402

SCHEDULES = {
    "every frame": {"detect_every": 1, "motion_gate": False},
    "interval 3": {"detect_every": 3, "motion_gate": False},
    "gate": {"detect_every": 1, "motion_gate": True, "max_skip": 2.0},
    "interval 2 + gate": {"detect_every": 2, "motion_gate": True, "max_skip": 2.0},
    "interval 3 + gate": {"detect_every": 3, "motion_gate": True, "max_skip": 2.0},
}


def at_rate(video: Path, fps: float, out: Path) -> Path:
    """``video`` (25 FPS) with frames dropped evenly down to ``fps``."""
    if out.exists():
        return out
    capture = cv2.VideoCapture(str(video))
    source_fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    share = 0.0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        share += fps / source_fps
        if share >= 1.0:
            share -= 1.0
            writer.write(frame)
    writer.release()
    capture.release()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--rates", default="25,15,12,10")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "rate")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    detector, finder, _ = remembered_detector()
    for rate in (float(r) for r in args.rates.split(",")):
        video = at_rate(args.video, rate, args.work / f"{args.video.stem}_{rate:g}fps.avi")
        for name, spec in SCHEDULES.items():
            asked = finder.asked
            got = people(detector, video, spec)
            row = {"fps": rate, "schedule": name, "people": got["people"], "counts": got["counts"],
                   "detector_frames": finder.asked - asked, "frames": got["frames"]}  # fmt: skip
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
