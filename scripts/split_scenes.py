"""Split the annotated scenes by image into train / valid / test lists (VOC ImageSets style: one stem a line).

    .venv/bin/python scripts/split_scenes.py                     # ../shared/data/scenes -> data/splits/scenes

The split is by image, so no face of a test image is ever trained on. It is stratified on what an image
holds, so every part gets unmasked and incorrectly masked faces: images with a ``mask_weared_incorrect``
face form one group, the rest with a ``without_mask`` face a second, the others a third; each group is
shuffled with the seed and cut 60/20/20. The lists are committed; the images never are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from maskwatch.data.voc import SPLIT_LIST_NAMES, parse_voc
from maskwatch.paths import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
RATIOS = {"train": 0.6, "valid": 0.2, "test": 0.2}


def group_of(labels: set[str]) -> int:
    if "mask_weared_incorrect" in labels:
        return 0
    return 1 if "without_mask" in labels else 2


def split(scenes: Path, seed: int) -> dict[str, list[str]]:
    groups: dict[int, list[str]] = {}
    for xml_path in sorted((scenes / "annotations").glob("*.xml")):
        labels = {o.label for o in parse_voc(xml_path).objects}
        groups.setdefault(group_of(labels), []).append(xml_path.stem)
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {name: [] for name in RATIOS}
    for key in sorted(groups):
        stems = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        n_valid = round(RATIOS["valid"] * len(stems))
        n_test = round(RATIOS["test"] * len(stems))
        out["valid"] += stems[:n_valid]
        out["test"] += stems[n_valid : n_valid + n_test]
        out["train"] += stems[n_valid + n_test :]
    return {name: sorted(stems) for name, stems in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=Path, default=shared_data_dir() / "scenes")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "splits" / "scenes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    parts = split(args.scenes, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, stems in parts.items():
        (args.out / SPLIT_LIST_NAMES[name]).write_text("".join(f"{s}\n" for s in stems))
        print(f"{name}: {len(stems)} images -> {args.out / SPLIT_LIST_NAMES[name]}")


if __name__ == "__main__":
    main()
