"""How often :func:`maskwatch.camera_color.is_grayscale` calls a frame grey, on the 418 shared scene images
(colour photos, a few of them black-and-white) and on their grey, infrared, cast and dark copies, at several
thresholds; and the time per frame. The threshold ``GRAY_SPREAD`` was chosen from this table.

    .venv/bin/python benchmarks/gray_cameras.py --json benchmarks/results/gray_cameras.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from maskwatch.camera_color import GRAY_SPREAD, chroma_spread
from maskwatch.data.corruptions import corrupt
from maskwatch.data.images import load_rgb
from maskwatch.paths import shared_data_dir

THRESHOLDS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    paths = sorted((shared_data_dir() / "scenes" / "images").glob("*.jpg"))
    variants = {
        "colour (as shot)": lambda im: im,
        "grayscale": lambda im: corrupt(im, "grayscale", 1, rng),
        "infrared-1": lambda im: corrupt(im, "infrared", 1, rng),
        "infrared-2": lambda im: corrupt(im, "infrared", 2, rng),
        "infrared-3 (magenta cast)": lambda im: corrupt(im, "infrared", 3, rng),
        "infrared-3 + JPEG q12": lambda im: corrupt(corrupt(im, "infrared", 3, rng), "jpeg", 3, rng),
        "dark-3 colour": lambda im: corrupt(im, "dark", 3, rng),
    }
    spreads: dict[str, list[float]] = {name: [] for name in variants}
    seconds = []
    for path in paths:
        image = np.asarray(load_rgb(path))
        for name, make in variants.items():
            frame = make(image)
            started = time.perf_counter()
            spreads[name].append(chroma_spread(frame))
            seconds.append(time.perf_counter() - started)
    rates = {name: {str(t): float(np.mean(np.array(v) <= t)) for t in THRESHOLDS} for name, v in spreads.items()}
    report = {
        "images": len(paths),
        "threshold": GRAY_SPREAD,
        "called_grey_rate": rates,
        "median_ms_per_frame": round(1000 * float(np.median(seconds)), 3),
    }
    print("| frames (418 scenes) | " + " | ".join(f"<= {t}" for t in THRESHOLDS) + " |")
    print("|---|" + "---|" * len(THRESHOLDS))
    for name, row in rates.items():
        print(f"| {name} | " + " | ".join(f"{row[str(t)]:.3f}" for t in THRESHOLDS) + " |")
    print(f"median {report['median_ms_per_frame']} ms per frame")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
