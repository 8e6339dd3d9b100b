"""The robustness protocol (issue 21): every candidate model against the bundled baselines, on populations it
never saw and under camera conditions, with bootstrap intervals and the selection rule. One command:

    .venv/bin/python benchmarks/robustness.py \\
        --model previous=runs/baselines/previous.pt --model bundled=runs/baselines/bundled.pt \\
        --model robust=runs/exp/robust/model.pt --baseline previous --baseline bundled \\
        --train-loso runs/loso --role select --json benchmarks/results/robustness_valid.json \\
        --markdown benchmarks/results/robustness_valid.md

**Populations** (two classes, compliant or not, as the engine counts people): ``faces`` (web face photos),
``scenes`` (face crops >= 12 px of the shared street scenes; the >= 32 px subset is reported too), ``pis``
(web photos with pasted masks: derived from faces/, so its images that near-duplicate a faces/ train or valid
image are left out, :func:`maskwatch.robustness.near_duplicates`), and any review folder that ``mine`` filled
and a person relabelled (``--review NAME=DIR``). ``--role select`` reads valid data only (faces/valid,
scenes/valid; pis train + valid), for choosing; ``--role report`` reads the test splits, once, for the card.

**Leave-one-source-out.** A model trained on a source's family (faces and pis are one family: pis is made of
faces/ photos) is also scored on that population by its *fold model*: the same recipe (the checkpoint's own
config) trained without the family. Where a recipe never trained on the family, the model itself is the
fold model. ``--train-loso DIR`` trains missing fold models (``maskwatch train --config`` the recipe with
those datasets left out, ``--no-test``); ``--loso NAME:FAMILY=MODEL`` names an existing one. Folds are scored
on the held-out population's valid split (``select``) or its test split (``report``), as the full models.

**Corruptions**: clean and the conditions of :mod:`maskwatch.data.corruptions` at severities 2 and 3
(grayscale, infrared, blur, motion blur, dark, JPEG, low resolution, noise: 15), plus the grayscale camera mode of
:mod:`maskwatch.camera_color` on the infrared-3 and clean faces. Fold models get clean and issue 21's six
conditions, and so does ``pis``. **Selection**: :func:`maskwatch.robustness.compare` (paired bootstrap,
10 000 rounds, 95 %) of each candidate against each baseline on every population, condition and metric both
were scored on; :func:`~maskwatch.robustness.passes` is the rule (two looser readings are reported beside it).

**Seed-aware selection** (round 4): ``--recipe NAME=MODEL,MODEL,...`` names models (``--model`` names, in
the order of their seed numbers) that are one recipe trained with several seeds, and ``--recipe-baseline
NAME`` the baseline recipes. Every recipe is compared with each baseline recipe but itself by
:func:`maskwatch.robustness.compare_recipes` (the multi-bootstrap over seeds and faces, simultaneous 95 %
intervals) on the same populations, conditions and folds.

Predictions are cached per model file (sha256), population, role and condition in ``runs/robustness/``, so
adding a candidate does not re-score the baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from maskwatch.core.digests import file_sha256
from maskwatch.data.corruptions import CLEAN, ISSUE_CONDITIONS, Condition, all_conditions
from maskwatch.data.datasets import Sample, open_dataset
from maskwatch.paths import shared_data_dir
from maskwatch.robustness import (
    LOOSE_METRICS,
    TWO_CLASSES,
    ConditionResult,
    FaceSet,
    RecipeVerdict,
    Verdict,
    average_hash,
    compare,
    compare_recipes,
    corrupted,
    load_faces,
    near_duplicates,
    passes,
    two_class_predictions,
)

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "data" / "splits" / "scenes"
CACHE = ROOT / "runs" / "robustness"
FAMILY = {"faces": "web", "pis": "web", "scenes": "scenes"}  # population -> source family
GRAY_MODE = "+graymode"  # suffix of a condition scored with the camera's grayscale mode on


# --------------------------------------------------------------------------------------------------------
# populations


@dataclass
class Population:
    name: str
    family: str
    faces: FaceSet
    small: np.ndarray | None = None  # scenes: faces under 32 px (the >= 32 px subset is the rest)


def _two_class(data: Path, split: str | list[str], **kwargs: Any) -> list[Sample]:
    dataset = open_dataset(data, classes=list(TWO_CLASSES), **kwargs)
    splits = [split] if isinstance(split, str) else split
    return [s for name in splits for s in dataset.split(name)]


def populations(role: str, reviews: dict[str, Path]) -> dict[str, Population]:
    """The populations for ``role`` (select: valid data; report: test splits)."""
    shared = shared_data_dir()
    faces_split = scenes_split = "valid" if role == "select" else "test"
    pis_split: str | list[str] = ["train", "valid"] if role == "select" else "test"
    out = {}
    faces = _two_class(shared / "faces", faces_split)
    out["faces"] = Population("faces", "web", load_faces("faces", faces, TWO_CLASSES))
    scenes = _two_class(shared / "scenes", scenes_split, crops=True, min_face=12, split_lists=SPLITS)
    scene_faces = load_faces("scenes", scenes, TWO_CLASSES)
    big = {
        (s.path, s.box)
        for s in _two_class(shared / "scenes", scenes_split, crops=True, min_face=32, split_lists=SPLITS)
    }
    small = np.array([(s.path, s.box) not in big for s in scene_faces.samples])
    out["scenes"] = Population("scenes", "scenes", scene_faces, small)
    pis_faces = load_faces("pis", _two_class(shared / "pis", pis_split), TWO_CLASSES)
    seen = load_faces("faces-train-valid", _two_class(shared / "faces", ["train", "valid"]), TWO_CLASSES)
    duplicate = near_duplicates(
        np.stack([average_hash(im) for im in pis_faces.images]), np.stack([average_hash(im) for im in seen.images])
    )
    keep = np.flatnonzero(~duplicate)
    out["pis"] = Population(
        "pis",
        "web",
        FaceSet(
            "pis", [pis_faces.images[i] for i in keep], pis_faces.labels[keep], [pis_faces.samples[i] for i in keep]
        ),
    )
    for name, folder in reviews.items():
        review = _two_class(folder, "valid" if role == "select" else "test")
        out[name] = Population(name, name, load_faces(name, review, TWO_CLASSES))
    return out


# --------------------------------------------------------------------------------------------------------
# scoring, cached by model content


def _sha(path: Path) -> str:
    return file_sha256(path)[:16]


def grid(extended: bool) -> list[tuple[str, Condition, bool]]:
    """(label, condition, grayscale mode) of every scored condition."""
    if not extended:
        return [("clean", CLEAN, False)] + [(c.label, c, False) for c in ISSUE_CONDITIONS]
    # severities 2 and 3 (and grayscale): severity 1 is left out to keep the protocol within a 2-core budget; the
    # library's grid (all_conditions) has it, and maskwatch.data.corruptions documents all three
    rows = [("clean", CLEAN, False)] + [(c.label, c, False) for c in all_conditions() if c.severity != 1 or
                                        c.name == "grayscale"]  # fmt: skip
    return [*rows, ("clean" + GRAY_MODE, CLEAN, True), ("infrared-3" + GRAY_MODE, Condition("infrared", 3), True)]


def score(
    model: Path,
    population: Population,
    role: str,
    extended: bool,
    seed: int = 0,
    rows: list[tuple[str, Condition, bool]] | None = None,
) -> dict[str, ConditionResult]:
    """The model's predictions on ``population`` under each row of :func:`grid` (or ``rows``), cached."""
    from maskwatch.camera_color import to_gray_faces
    from maskwatch.runtime.base import load_classifier

    key = f"{_sha(model)}-{population.name}-{role}-{len(population.faces)}-{seed}"
    cache_file = CACHE / f"{key}.json"
    cached = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    classifier = None
    results = {}
    for label, condition, gray in grid(extended) if rows is None else rows:
        if label not in cached:
            if classifier is None:
                classifier = load_classifier(model, backend="onnx")
            images = population.faces.images if condition == CLEAN else corrupted(population.faces, condition, seed)
            predictions = two_class_predictions(classifier, to_gray_faces(images) if gray else images)
            cached[label] = "".join(map(str, predictions.tolist()))
        predictions = np.array([int(c) for c in cached[label]], dtype=np.int64)
        results[label] = ConditionResult(population.name, label, population.faces.labels, predictions)
    CACHE.mkdir(parents=True, exist_ok=True)
    cache_file.write_text(json.dumps(cached))
    return results


def subset(results: dict[str, ConditionResult], keep: np.ndarray, name: str) -> dict[str, ConditionResult]:
    return {k: ConditionResult(name, k, r.labels[keep], r.predictions[keep]) for k, r in results.items()}


# --------------------------------------------------------------------------------------------------------
# leave-one-source-out fold models


def recipe_families(model: Path) -> dict[str, list[Any]]:
    """The datasets of the model's recipe (checkpoint config), by source family."""
    from maskwatch.checkpoint import load_checkpoint

    config = load_checkpoint(model)["config"]
    data = config.get("data")
    items = data if isinstance(data, list) else [data] if data else []
    out: dict[str, list[Any]] = {}
    for item in items:
        path = item if isinstance(item, str) else item["path"]
        out.setdefault(FAMILY.get(Path(path).name, Path(path).name), []).append(item)
    return out


def train_fold(model: Path, family: str, folder: Path) -> Path | None:
    """The recipe of ``model`` trained without ``family``'s datasets (None when nothing would be left)."""
    from maskwatch.checkpoint import load_checkpoint

    target = folder / "model.pt"
    if target.is_file():
        return target
    config = dict(load_checkpoint(model)["config"])
    families = recipe_families(model)
    kept = [item for name, items in families.items() if name != family for item in items]
    if not kept:
        return None
    config.update(data=kept, evaluate_test=False, out=str(folder), classes=list(TWO_CLASSES))
    config = {k: v for k, v in config.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder.with_suffix(".yaml")
    recipe.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [str(Path(sys.executable).parent / "maskwatch"), "train", "--config", str(recipe)]
    print("training fold:", " ".join(command), flush=True)
    with open(folder.with_suffix(".log"), "w") as log:
        subprocess.run(command, check=True, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return target


# --------------------------------------------------------------------------------------------------------
# tables


def _pct(value: float) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.3f}"


def summarize(results: dict[str, ConditionResult]) -> dict[str, Any]:
    """Clean, mean and worst accuracy over the corruption grid and over issue 21's six, recalls."""
    corrupt = {k: r for k, r in results.items() if k != "clean" and GRAY_MODE not in k}
    issue = {c.label: results[c.label] for c in ISSUE_CONDITIONS if c.label in results}
    accuracy = {k: r.metric("accuracy") for k, r in corrupt.items()}
    worst = min(accuracy, key=lambda k: accuracy[k]) if accuracy else None
    issue_acc = {k: r.metric("accuracy") for k, r in issue.items()}
    issue_worst = min(issue_acc, key=lambda k: issue_acc[k]) if issue_acc else None
    out = {
        "clean": results["clean"].summary(),
        "mean_accuracy": float(np.mean(list(accuracy.values()))) if accuracy else None,
        "worst": {"condition": worst, "accuracy": accuracy.get(worst) if worst else None},
        "issue_six_mean": float(np.mean(list(issue_acc.values()))) if issue_acc else None,
        "issue_six_worst": {"condition": issue_worst, "accuracy": issue_acc.get(issue_worst) if issue_worst else None},
        "worst_with_mask_recall": min(((r.metric("with_mask_recall"), k) for k, r in corrupt.items()), default=None),
        "conditions": {k: {m: r.metric(m) for m in ("accuracy", "with_mask_recall", "without_mask_recall")}
                       for k, r in results.items()},
    }  # fmt: skip
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Robustness protocol ({report['role']}: {report['data_note']})", ""]
    models = list(report["models"])
    lines += ["## Summary (accuracy; [95 % bootstrap interval])", ""]
    header = "| population | model | n | clean | with_mask recall | without_mask recall | mean over 15 conditions | worst | issue's six: mean / worst |"  # noqa: E501
    lines += [header, "|---|---|---|---|---|---|---|---|---|"]
    for population in report["populations"]:
        for model in models:
            s = report["models"][model]["full"].get(population)
            if not s:
                continue
            c = s["clean"]

            def iv(m: dict[str, float]) -> str:
                return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"

            lines.append(
                f"| {population} | {model} | {c['n']} | {iv(c['accuracy'])} | {iv(c['with_mask_recall'])} | "
                f"{iv(c['without_mask_recall'])} | {_pct(s['mean_accuracy'])} | {_pct(s['worst']['accuracy'])} "
                f"({s['worst']['condition']}) | {_pct(s['issue_six_mean'])} / "
                f"{_pct(s['issue_six_worst']['accuracy'])} |"
            )
    lines += ["", "## Conditions (accuracy / with_mask recall / without_mask recall)", ""]
    for population in report["populations"]:
        present = [m for m in models if population in report["models"][m]["full"]]
        if not present:
            continue
        lines += [f"### {population}", "", "| condition | " + " | ".join(present) + " |",
                  "|---|" + "---|" * len(present)]  # fmt: skip
        conditions = report["models"][present[0]]["full"][population]["conditions"]
        for label in conditions:
            cells = []
            for m in present:
                v = report["models"][m]["full"][population]["conditions"].get(label)
                cells.append(
                    "–"
                    if v is None
                    else " / ".join(_pct(v[k]) for k in ("accuracy", "with_mask_recall", "without_mask_recall"))
                )
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Leave-one-source-out (the population's family left out of training)", "",
              "| population | model | fold model | n | clean accuracy | with_mask recall | without_mask recall | issue's six: mean / worst |",  # noqa: E501
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for population in report["populations"]:
        for model in models:
            fold = report["models"][model]["loso"].get(population)
            if not fold:
                continue
            if "missing" in fold:
                lines.append(f"| {population} | {model} | {fold['missing']} | | | | | |")
                continue
            s, c = fold["summary"], fold["summary"]["clean"]
            lines.append(
                f"| {population} | {model} | {fold['fold']} | {c['n']} | {c['accuracy']['value']:.3f} "
                f"[{c['accuracy']['low']:.3f}, {c['accuracy']['high']:.3f}] | {c['with_mask_recall']['value']:.3f} | "
                f"{c['without_mask_recall']['value']:.3f} | {_pct(s['issue_six_mean'])} / "
                f"{_pct(s['issue_six_worst']['accuracy'])} |"
            )
    if report.get("selection"):
        lines += ["", "## Selection rule (accuracy, with_mask recall, without_mask recall; paired bootstrap, 10 000 "
                  "resamples; worse beyond noise = the 95 % interval of the difference below 0)", "",
                  "| candidate | baseline | comparisons | worse beyond noise | better beyond noise | passes | "
                  "looser readings (not used): FDR-corrected / FDR on accuracy + balanced accuracy |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for candidate, per_baseline in report["selection"].items():
            for baseline, entry in per_baseline.items():
                worse = "; ".join(entry["worse"]) or "none"
                loose = " / ".join("passes" if entry[k]["passes"] else "fails"
                                   for k in ("fdr_corrected", "fdr_accuracy_balanced"))  # fmt: skip
                lines.append(
                    f"| {candidate} | {baseline} | {entry['comparisons']} | {worse} | {len(entry['better'])} | "
                    f"{'yes' if entry['passes'] else '**no**'} | {loose} |"
                )
    if report.get("recipes"):
        lines += ["", "## Recipes: mean over seeds [lowest seed, highest seed] (accuracy)", "",
                  "| recipe | seeds | faces clean | faces mean of 15 | faces grayscale | scenes clean | "
                  "scenes mean of 15 | scenes fold clean |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, entry in report["recipes"].items():
            cells = [_spread(entry["rows"].get(f"{population} {condition}")) for population, condition in RECIPE_ROWS]
            lines.append(f"| {name} | {', '.join(entry['models'])} | " + " | ".join(cells) + " |")
    if report.get("recipe_selection"):
        lines += ["", "## Seed-aware selection rule (accuracy, with_mask recall, without_mask recall; multi-bootstrap "
                  "over seeds and faces, 10 000 rounds; worse beyond noise = the simultaneous 95 % interval of the "
                  "difference of seed means below 0)", "",
                  "| candidate recipe | baseline recipe | comparisons | band (x se) | worse beyond noise | better | "
                  "passes | pointwise worse (not used) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for candidate, per_baseline in report["recipe_selection"].items():
            for baseline, entry in per_baseline.items():
                lines.append(
                    f"| {candidate} | {baseline} | {entry['comparisons']} | {entry['band']:.2f} | "
                    f"{'; '.join(entry['worse']) or 'none'} | {len(entry['better'])} | "
                    f"{'yes' if entry['passes'] else '**no**'} | {len(entry['pointwise_worse'])} |"
                )
    return "\n".join(lines) + "\n"


#: (population, condition) of the recipe summary's columns
RECIPE_ROWS = (("faces", "clean"), ("faces", "mean"), ("faces", "grayscale"), ("scenes", "clean"),
               ("scenes", "mean"), ("scenes (fold)", "clean"))  # fmt: skip


def _spread(values: list[float] | None) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def recipe_rows(members: list[dict[str, dict[str, ConditionResult]]]) -> dict[str, list[float]]:
    """Each seed's accuracy in the recipe summary's columns (``mean``: over the 15 corruptions)."""
    out: dict[str, list[float]] = {}
    for population, condition in RECIPE_ROWS:
        values = []
        for results in members:
            conditions = results.get(population)
            if not conditions:
                break
            if condition == "mean":
                corrupt = [r for k, r in conditions.items() if k != "clean" and GRAY_MODE not in k]
                values.append(float(np.mean([r.metric("accuracy") for r in corrupt])))
            elif condition in conditions:
                values.append(conditions[condition].metric("accuracy"))
        if len(values) == len(members):
            out[f"{population} {condition}"] = values
    return out


def _verdict_text(v: Verdict | RecipeVerdict) -> str:
    d = v.difference
    return f"{v.population} {v.condition} {v.metric} {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"


# --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", required=True)
    p.add_argument("--baseline", action="append", default=[], metavar="NAME", help="models the others must match")
    p.add_argument("--loso", action="append", default=[], metavar="NAME:FAMILY=PATH", help="an existing fold model")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=MODEL,...", help="one recipe's seeds")
    p.add_argument("--recipe-baseline", action="append", default=[], metavar="NAME", help="recipes to match")
    p.add_argument("--train-loso", type=Path, help="train missing fold models under this folder")
    p.add_argument("--review", action="append", default=[], metavar="NAME=DIR", help="a relabelled review folder")
    p.add_argument("--role", choices=("select", "report"), default="select")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument(
        "--card",
        type=Path,
        help="also write the tables into this model card's generated section robustness_<role> (see bundled_model.py)",
    )
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    started = time.perf_counter()
    models = dict(item.split("=", 1) for item in args.model)
    models = {k: Path(v) for k, v in models.items()}
    reviews = {k: Path(v) for k, v in (item.split("=", 1) for item in args.review)}
    for review in reviews:
        FAMILY[review] = review
    folds: dict[tuple[str, str], Path] = {}
    for item in args.loso:
        head, path = item.split("=", 1)
        name, family = head.split(":", 1)
        folds[(name, family)] = Path(path)

    recipes = {k: v.split(",") for k, v in (item.split("=", 1) for item in args.recipe)}
    unknown = sorted({m for names in recipes.values() for m in names} - set(models)) + sorted(
        set(args.recipe_baseline) - set(recipes)
    )
    if unknown:  # before minutes of scoring
        p.error(f"--recipe and --recipe-baseline name unknown models or recipes: {', '.join(unknown)}")

    full_pops = populations(args.role, reviews=reviews)
    loso_pops = full_pops  # a fold model never saw the population: its valid (or test) split is unseen too
    report: dict[str, Any] = {
        "role": args.role,
        "data_note": "valid data only" if args.role == "select" else "test splits, read once",
        "populations": [n for k, v in full_pops.items() for n in ([k, k + "32"] if v.small is not None else [k])],
        "sizes": {k: len(v.faces) for k, v in full_pops.items()},
        "loso_sizes": {k: len(v.faces) for k, v in loso_pops.items()},
        "models": {},
        "machine_load": list(os.getloadavg()),
    }
    raw_full: dict[str, dict[str, dict[str, ConditionResult]]] = {}
    raw_loso: dict[str, dict[str, dict[str, ConditionResult]]] = {}
    for name, path in models.items():
        print(f"scoring {name} ({path})", flush=True)
        entry: dict[str, Any] = {"file": str(path), "sha256_16": _sha(path), "full": {}, "loso": {}}
        raw_full[name], raw_loso[name] = {}, {}
        for pop_name, population in full_pops.items():
            # pis (synthetic masks, a derived population) gets clean + issue 21's six conditions, to save time
            results = score(path, population, args.role, extended=pop_name != "pis")
            raw_full[name][pop_name] = results
            entry["full"][pop_name] = summarize(results)
            if population.small is not None:
                big = subset(results, ~population.small, pop_name + "32")
                raw_full[name][pop_name + "32"] = big
                entry["full"][pop_name + "32"] = summarize(big)
        families = recipe_families(path)
        for pop_name, population in loso_pops.items():
            family = FAMILY[pop_name]
            if family not in families:
                fold_model: Path | None = path  # never trained on it: the model itself is held out
            elif (name, family) in folds:
                fold_model = folds[(name, family)]
            elif args.train_loso is not None:
                fold_model = train_fold(path, family, args.train_loso / f"{name}-{family}")
            else:
                fold_model = None
            if fold_model is None:
                entry["loso"][pop_name] = {"missing": "no fold model (nothing left to train on, or not given)"}
                continue
            if fold_model == path:  # the model itself: its full-grid results hold clean and the six already
                wanted = [label for label, _, _ in grid(extended=False)]
                results = {k: raw_full[name][pop_name][k] for k in wanted}
            else:
                results = score(fold_model, population, args.role + "-loso", extended=False)
            raw_loso[name][pop_name] = results
            entry["loso"][pop_name] = {"fold": str(fold_model), "summary": summarize(results)}
        report["models"][name] = entry

    def with_folds(name: str) -> dict[str, dict[str, ConditionResult]]:
        """A model's results with its fold models' as populations of their own ("scenes (fold)")."""
        return {**raw_full[name], **{f"{k} (fold)": v for k, v in raw_loso[name].items()}}

    selection: dict[str, Any] = {}
    for candidate in (m for m in models if m not in args.baseline):
        selection[candidate] = {}
        for baseline in args.baseline:
            both, theirs = with_folds(candidate), with_folds(baseline)
            verdicts = compare(both, theirs, baseline_name=baseline)
            loose = compare(both, theirs, baseline_name=baseline, metrics=LOOSE_METRICS)
            selection[candidate][baseline] = {
                "comparisons": len(verdicts),
                "passes": passes(verdicts),
                "worse": [_verdict_text(v) for v in verdicts if v.worse],
                "better": [_verdict_text(v) for v in verdicts if v.better],
                "verdicts": [v.to_dict() for v in verdicts],
                # looser readings, reported and not used (maskwatch.robustness): corrected for many comparisons,
                # and that correction on accuracy + balanced accuracy only
                "fdr_corrected": {"passes": passes(verdicts, corrected=True),
                                  "worse": [_verdict_text(v) for v in verdicts if v.fdr_worse]},
                "fdr_accuracy_balanced": {"passes": passes(loose, corrected=True),
                                          "worse": [_verdict_text(v) for v in loose if v.fdr_worse]},
            }  # fmt: skip
    report["selection"] = selection

    report["recipes"] = {
        name: {"models": names, "rows": recipe_rows([with_folds(m) for m in names])} for name, names in recipes.items()
    }
    recipe_selection: dict[str, Any] = {}
    for candidate in recipes:  # baseline recipes too, against each other (does the rule see a known regression?)
        recipe_selection[candidate] = {}
        for baseline in (b for b in args.recipe_baseline if b != candidate):
            recipe_verdicts = compare_recipes(
                [with_folds(m) for m in recipes[candidate]],
                [with_folds(m) for m in recipes[baseline]],
                baseline_name=baseline,
            )
            recipe_selection[candidate][baseline] = {
                "comparisons": len(recipe_verdicts),
                "passes": passes(recipe_verdicts),
                "band": recipe_verdicts[0].band if recipe_verdicts else float("nan"),
                "worse": [_verdict_text(v) for v in recipe_verdicts if v.worse],
                "better": [_verdict_text(v) for v in recipe_verdicts if v.better],
                "pointwise_worse": [_verdict_text(v) for v in recipe_verdicts if v.pointwise.high < 0],
                "verdicts": [v.to_dict() for v in recipe_verdicts],
            }
    report["recipe_selection"] = recipe_selection
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(report)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.card:
        from bundled_model import replace_generated

        from maskwatch.checkpoint import atomic_write

        command = "`.venv/bin/python benchmarks/robustness.py " + " ".join(argv or sys.argv[1:]) + "`"
        body = text.replace("# Robustness protocol", "### Robustness protocol", 1).replace("\n## ", "\n#### ")
        section = f"{body}\nCommand: {command}; JSON: `{args.json}`."
        new, _ = replace_generated(args.card.read_text(encoding="utf-8"), {f"robustness_{args.role}": section})
        atomic_write(args.card, lambda tmp: tmp.write_text(new, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
