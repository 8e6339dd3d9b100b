"""The camera's ``color`` setting measured (issue 21, infrared and grayscale cameras): the bundled model's
accuracy and with_mask recall on grey, infrared and colour faces with the faces classified as delivered
(``color``) and turned grey first (``gray``, :func:`maskwatch.camera_color.to_gray_faces`), with 95 %
bootstrap intervals and the paired difference gray - color.

It reuses the robustness protocol (``benchmarks/robustness.py``): the same populations (faces, scene crops >= 12
px and the >= 32 px subset, pis without its near-duplicates of faces/), the same seeded corruptions and its
prediction cache (``runs/robustness/``). ``--role select`` reads valid data (what a choice may use: the
default of the setting), ``--role report`` the test splits.

    .venv/bin/python benchmarks/gray_mode.py --role select --role report \\
        --json benchmarks/results/gray_mode.json --markdown benchmarks/results/gray_mode.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustness as protocol

from maskwatch.data.corruptions import CLEAN, Condition
from maskwatch.robustness import ConditionResult, bootstrap_interval, paired_difference

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "maskwatch-mobilenet_v2.pt"
#: grey (grayscale, infrared-1/2: no chroma), cast (infrared-3: the magenta of a colour camera at night) and
#: colour faces (clean: a colour camera that a ``gray`` setting or a wrong ``auto`` turns grey)
CONDITIONS = (CLEAN, Condition("grayscale", 1), *(Condition("infrared", level) for level in (1, 2, 3)))
METRICS = ("accuracy", "with_mask_recall")


def rows() -> list[tuple[str, Condition, bool]]:
    """(cache label, condition, grey mode) for each condition in both modes (labels as the protocol's)."""
    out = []
    for condition in CONDITIONS:
        label = condition.label if condition != CLEAN else "clean"
        out += [(label, condition, False), (label + protocol.GRAY_MODE, condition, True)]
    return out


def measure(color: ConditionResult, gray: ConditionResult) -> dict[str, Any]:
    """Both modes' metrics with bootstrap intervals, and gray - color with a paired bootstrap interval."""
    out: dict[str, Any] = {"n": color.n, "n_with_mask": int((color.labels == 0).sum())}
    for metric in METRICS:
        difference, _ = paired_difference(color.labels, gray.predictions, color.predictions, metric)
        out[metric] = {
            "color": asdict(bootstrap_interval(color.labels, color.predictions, metric)),
            "gray": asdict(bootstrap_interval(gray.labels, gray.predictions, metric)),
            "gray_minus_color": asdict(difference),
        }
    out["faces_changed"] = int((color.predictions != gray.predictions).sum())
    return out


def run(model: Path, role: str) -> dict[str, dict[str, Any]]:
    """Population (and scenes32) -> condition -> :func:`measure`."""
    report: dict[str, dict[str, Any]] = {}
    for name, population in protocol.populations(role, {}).items():
        results = protocol.score(model, population, role, extended=True, rows=rows())
        views = {name: results}
        if population.small is not None:
            views[name + "32"] = protocol.subset(results, np.flatnonzero(~population.small), name + "32")
        for view, res in views.items():
            report[view] = {}
            for condition in CONDITIONS:
                label = condition.label if condition != CLEAN else "clean"
                report[view][label] = measure(res[label], res[label + protocol.GRAY_MODE])
    return report


def _iv(m: dict[str, float], signed: bool = False) -> str:
    f = "+.3f" if signed else ".3f"
    return f"{m['value']:{f}} [{m['low']:{f}}, {m['high']:{f}}]"


def markdown(reports: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = []
    for role, report in reports.items():
        lines += [
            f"#### {role}: {'valid data' if role == 'select' else 'test splits'} (95 % bootstrap intervals; "
            "difference: paired bootstrap)",
            "",
            "| population | faces | color accuracy | gray accuracy | gray - color | color with_mask recall | "
            "gray with_mask recall | gray - color | faces changed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for population, conditions in report.items():
            for label, m in conditions.items():
                a, r = m["accuracy"], m["with_mask_recall"]
                lines.append(
                    f"| {population} | {label} ({m['n']}) | {_iv(a['color'])} | {_iv(a['gray'])} | "
                    f"{_iv(a['gray_minus_color'], True)} | {_iv(r['color'])} | {_iv(r['gray'])} | "
                    f"{_iv(r['gray_minus_color'], True)} | {m['faces_changed']} |"
                )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=BUNDLED)
    p.add_argument("--role", action="append", choices=("select", "report"), help="default: select")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    started = time.time()
    reports = {role: run(args.model, role) for role in args.role or ["select"]}
    text = markdown(reports)
    print(text)
    out = {
        "model": str(args.model),
        "sha256_16": protocol._sha(args.model),
        "reports": reports,
        "machine_load": list(os.getloadavg()),
        "seconds": round(time.time() - started, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
