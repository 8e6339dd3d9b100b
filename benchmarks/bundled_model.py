"""Train (optionally) and measure the bundled model, install it in models/, and regenerate its model card.

    # the whole thing: train with the given command, measure, install models/ + the INT8 export, write the card
    .venv/bin/python benchmarks/bundled_model.py --train-command "maskwatch train --config configs/bundled.yaml \\
        --data ../shared/data/faces --data ../shared/data/scenes,crops,min_face=12,splits=data/splits/scenes \\
        --out runs/bundled" --faces-only runs/faces-only/model.pt
    # an existing run: the same without --train (the command is still recorded in the card)
    .venv/bin/python benchmarks/bundled_model.py --no-train --train-command "maskwatch train ... --out runs/bundled"
    # a model soup: the `maskwatch average ... --out RUN/model.pt` command that made it (not re-run)
    .venv/bin/python benchmarks/bundled_model.py --no-train --train-command "maskwatch average A.pt B.pt \
        --out runs/soup/model.pt"
    # only rewrite the card's generated sections from the last results (benchmarks/results/bundled.json)
    .venv/bin/python benchmarks/bundled_model.py --card-only

Measured, for the fp32 checkpoint and its fp16 copy (the fp16 copy is bundled only if it costs no accuracy
on any set): faces/test, pis/test and scene face crops >= 32 px of scenes/test (``--scene-splits``, default
data/splits/scenes; every scene when the folder is missing). Every figure comes with its
``maskwatch evaluate`` command, per class (a 3-class model too, plus its figures with the classes merged to
compliant / not compliant), and ECE with the model's temperature and without it (T = 1). ``--faces-only M``
adds the cross-dataset figure: a model trained on faces only, on ALL scene crops >= 32 px. The INT8 export
shipped next to the model is re-made from the installed file and measured against fp32 ONNX.

The card (models/MODEL_CARD.md) mixes hand-written text with generated sections between
``<!-- generated: NAME -->`` and ``<!-- /generated -->``; only those are replaced (:func:`replace_generated`),
everything else is kept byte for byte. A section this run has nothing for (no ``--faces-only``) keeps its text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.core.digests import file_sha256

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "models" / "MODEL_CARD.md"
RESULTS = ROOT / "benchmarks" / "results" / "bundled.json"
SCENE_SPLITS = ROOT / "data" / "splits" / "scenes"

#: Generated sections in card order: (marker name, what it holds). A card without one of these markers gets
#: the section appended at its end (and a note on stderr), so nothing measured is ever dropped.
SECTIONS = (
    ("summary", "what the model is, its file, data, command and recipe"),
    ("metrics", "accuracy, macro F1, recall of the non-compliant classes, ROC AUC, ECE per test set"),
    ("per_class", "precision, recall, F1 and support per class and test set"),
    ("compliance", "3+ classes: the classes merged to compliant / not compliant"),
    ("calibration", "the temperature and the ECE with and without it"),
    ("cross_dataset", "a model trained on faces only, on every scene crop"),
    ("fp16", "fp16 vs fp32 accuracy"),
    # written by benchmarks/robustness.py --card (this script keeps their text)
    ("robustness_select", "the robustness protocol on valid data: populations, conditions, folds, selection"),
    ("robustness_report", "the robustness protocol on the test splits, read once after the choice"),
    ("int8", "the INT8 export shipped next to the model, and its accuracy deltas"),
)
_MARKER = re.compile(r"<!-- generated: ([A-Za-z0-9_-]+) -->\n(.*?)<!-- /generated -->", re.S)
_OPEN = re.compile(r"<!-- generated: ([A-Za-z0-9_-]+) -->")


# ---------------------------------------------------------------------------------------------------------
# the card: generated sections between markers


def replace_generated(text: str, sections: Mapping[str, str | None]) -> tuple[str, list[str]]:
    """``text`` with the body of each ``<!-- generated: NAME -->`` ... ``<!-- /generated -->`` section named in
    ``sections`` replaced; everything else (and sections given as None) kept verbatim. Sections without a
    marker in ``text`` are appended at the end, each within its markers. Returns the new text and the names
    appended. Raises ``ValueError`` on an unclosed or repeated marker (before anything is written)."""
    opened = _OPEN.findall(text)
    closed = _MARKER.findall(text)
    if len(opened) != len(closed):
        raise ValueError("model card: a '<!-- generated: NAME -->' marker has no '<!-- /generated -->' after it")
    repeated = sorted({name for name in opened if opened.count(name) > 1})
    if repeated:
        raise ValueError(f"model card: generated section(s) {repeated} appear more than once")

    def body(content: str) -> str:
        content = content.strip("\n")
        return f"{content}\n" if content else ""

    def swap(match: re.Match[str]) -> str:
        name = match.group(1)
        content = sections.get(name)
        if content is None:
            return match.group(0)
        return f"<!-- generated: {name} -->\n{body(content)}<!-- /generated -->"

    result = _MARKER.sub(swap, text)
    appended = [name for name, content in sections.items() if content is not None and name not in opened]
    for name in appended:
        section = f"<!-- generated: {name} -->\n{body(sections[name] or '')}<!-- /generated -->\n"
        result = result.rstrip("\n") + "\n\n" + section
    return result, appended


def write_card(summary: Mapping[str, Any], path: Path = CARD) -> list[str]:
    """Replace the generated sections of the card at ``path`` (created with a title when missing) with
    those made from ``summary`` (see :func:`card_sections`); returns the names of sections appended."""
    from maskwatch.checkpoint import atomic_write

    text = path.read_text(encoding="utf-8") if path.is_file() else f"# Model card: `{summary['file']}`\n"
    new, appended = replace_generated(text, card_sections(summary))
    atomic_write(path, lambda tmp: tmp.write_text(new, encoding="utf-8"))
    return appended


# ---------------------------------------------------------------------------------------------------------
# what is measured


@dataclass(frozen=True)
class TestSet:
    """One evaluation: ``maskwatch.evaluate.evaluate_dataset`` arguments, and how the card names it."""

    name: str
    title: str
    data: Path
    split: str | None = None
    crops: bool = False
    min_face: int = 32
    split_lists: Path | None = None
    note: str = ""

    def kwargs(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "crops": self.crops,
            "min_face": self.min_face,
            "split_lists": self.split_lists,
        }

    def command(self, model: str = "MODEL") -> str:
        """The ``maskwatch evaluate`` command behind the figure (paths relative to the repository root)."""
        parts = ["maskwatch evaluate", f"--model {model}", f"--data {_shown(self.data)}"]
        if self.crops:
            parts += ["--crops", f"--min-face {self.min_face}"]
        if self.split_lists is not None:
            parts.append(f"--splits {_shown(self.split_lists)}")
        if self.split is not None:
            parts.append(f"--split {self.split}")
        return " ".join(parts)


def _shown(path: Path | str) -> str:
    """A path as the card shows it: relative to the repository root when that is shorter."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    relative = os.path.relpath(path, ROOT)
    return relative if len(relative) < len(str(path)) else str(path)


def test_sets(shared: Path, scene_splits: Path | None) -> list[TestSet]:
    """The bundled model's test sets: faces/test, pis/test, scene crops >= 32 px of scenes/test."""
    sets = [
        TestSet("faces_test", "faces/test", shared / "faces", "test"),
        TestSet(
            "pis_test",
            "pis/test",
            shared / "pis",
            "test",
            note="synthetic masks; its images that are copies of faces/ train or valid images are left out",
        ),
    ]
    if scene_splits is not None:
        sets.append(
            TestSet(
                "scene_crops_32_test",
                "scene crops ≥ 32 px, scenes/test",
                shared / "scenes",
                "test",
                crops=True,
                split_lists=scene_splits,
                note=f"face crops of the images listed in {_shown(scene_splits)}/test.txt",
            )
        )
    else:
        sets.append(
            TestSet(
                "scene_crops_32", "scene crops ≥ 32 px, all scenes", shared / "scenes", crops=True, note="every scene"
            )
        )
    return sets


def cross_dataset_set(shared: Path) -> TestSet:
    return TestSet(
        "scene_crops_32_all",
        "scene crops ≥ 32 px, all 418 scenes",
        shared / "scenes",
        crops=True,
        note="never seen by a model trained on faces/ only",
    )


@dataclass
class SetResult:
    """A model's figures on one test set (JSON-ready)."""

    n_images: int
    accuracy: float
    macro_f1: float
    roc_auc: float | None
    ece: float  # with the model's temperature
    ece_uncalibrated: float  # T = 1
    temperature: float
    backend: str
    per_class: dict[str, dict[str, float]]
    compliance: dict[str, float] | None = None  # 3+ classes: merged to compliant / not compliant


def merged_figures(
    probabilities: np.ndarray, labels: np.ndarray, classes: Sequence[str], compliant: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro F1 and recall of "not compliant" with the classes merged to compliant / not compliant
    (the predicted class decides, as in the engine's counts)."""
    from maskwatch.metrics import accuracy_and_macro_f1, confusion, per_class_scores

    good = np.array([c in compliant for c in classes])
    truth = (~good[labels]).astype(np.int64)  # 1 = not compliant
    predicted = (~good[probabilities.argmax(axis=1)]).astype(np.int64)
    accuracy, macro_f1 = accuracy_and_macro_f1(truth, predicted, 2)
    _, recall, _, _ = per_class_scores(confusion(truth, predicted, 2))
    return {"accuracy": accuracy, "macro_f1": macro_f1, "noncompliant_recall": float(recall[1])}


def measure(model: Path, sets: Sequence[TestSet], out: Path) -> dict[str, SetResult]:
    """Evaluate ``model`` on each set, write ``evaluate``'s outputs under ``out``, return the figures."""
    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.evaluate import evaluate_dataset, write_outputs
    from maskwatch.metrics import expected_calibration_error

    compliant = load_checkpoint(model)["compliant_classes"]
    results = {}
    for test in sets:
        started = time.perf_counter()
        evaluation = evaluate_dataset(model, test.data, **test.kwargs())
        report = write_outputs(evaluation, out / f"{test.name}.json")
        uncalibrated = evaluation.uncalibrated_probabilities
        results[test.name] = SetResult(
            n_images=report["n_images"],
            accuracy=report["accuracy"],
            macro_f1=report["macro_f1"],
            roc_auc=report.get("roc_auc"),
            ece=report["ece"],
            ece_uncalibrated=expected_calibration_error(uncalibrated, evaluation.labels)
            if uncalibrated is not None
            else report["ece"],
            temperature=evaluation.temperature,
            backend=str(evaluation.info.get("backend")),
            per_class=report["per_class"],
            compliance=merged_figures(evaluation.probabilities, evaluation.labels, evaluation.classes, compliant)
            if len(evaluation.classes) > 2
            else None,
        )
        print(
            f"{model.name:32s} {test.name:22s} n {report['n_images']:4d}  acc {report['accuracy']:.4f}  "
            f"macro F1 {report['macro_f1']:.4f}  ECE {report['ece']:.4f}  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return results


# ---------------------------------------------------------------------------------------------------------
# the card's sections (pure functions of the summary, so they are tested on fake inputs)

_ARCH = {
    "mobilenet_v2": "MobileNetV2",
    "resnet18": "ResNet18",
}


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _noncompliant(summary: Mapping[str, Any]) -> list[str]:
    return [c for c in summary["classes"] if c not in summary["compliant_classes"]]


def card_sections(s: Mapping[str, Any]) -> dict[str, str | None]:
    """Markdown of each generated section from a summary (as :func:`main` writes to bundled.json); None for
    a section this summary has nothing for (its text in the card is kept). Prose is wrapped at 110 columns
    like the hand-written parts; tables are not."""
    sections = {
        "summary": _summary_section(s),
        "metrics": _metrics_section(s),
        "per_class": _per_class_section(s),
        "compliance": _compliance_section(s),
        "calibration": _calibration_section(s),
        "cross_dataset": _cross_dataset_section(s),
        "fp16": _fp16_section(s),
        "robustness_select": None,  # benchmarks/robustness.py writes these two
        "robustness_report": None,
        "int8": _int8_section(s),
    }
    return {name: None if text is None else _wrap(text) for name, text in sections.items()}


def _wrap(text: str, width: int = 110) -> str:
    """Wrap prose lines and bullet items (continuations indented under the bullet) at ``width``; headings,
    tables, fenced code and blank lines stay as they are, and a code span is never broken (a command copied
    from the raw file still runs)."""
    out: list[str] = []
    fenced = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or line.lstrip().startswith("```") or line.startswith(("|", "#")) or len(line) <= width:
            out.append(line)
            continue
        lead = re.match(r" *(?:- )?", line)
        indent = " " * len(lead.group(0)) if lead else ""
        current, empty = line[: len(indent)], True
        for word in re.findall(r"(?:`[^`]*`|[^\s`])+", line[len(indent) :]):
            if not empty and len(current) + 1 + len(word) > width:
                out.append(current)
                current = indent + word
            else:
                current = current + word if empty else f"{current} {word}"
            empty = False
        out.append(current)
    return "\n".join(out)


def _data_lines(s: Mapping[str, Any]) -> list[str]:
    """One line per training dataset: path, options, and images per class of its train / valid splits."""
    described = (s.get("data") or {}).get("datasets") or []
    lines = []
    for part in described:
        counts = part.get("counts") or {}
        splits = "; ".join(
            f"{split} " + ", ".join(f"{n} {c}" for c, n in counts[split].items())
            for split in ("train", "valid")
            if split in counts
        )
        weight = f", sampling weight {part['weight']:g}" if len(described) > 1 else ""
        lines.append(f"`{_shown(part['root'])}` ({part.get('layout', '?')}{weight}): {splits}")
    if lines:
        return lines
    data = (s.get("config") or {}).get("data")
    items = data if isinstance(data, list) else [data]
    return [f"`{item if isinstance(item, str) else item.get('path')}`" for item in items if item]


def _recipe(cfg: Mapping[str, Any]) -> str:
    def get(key: str, default: Any = "?") -> Any:
        return cfg.get(key, default)

    parts = [
        f"frozen backbone, head trained {get('epochs')} epochs on {get('views')} cached augmented views",
    ]
    if get("finetune", 0):
        parts.append(
            f"then the last {get('finetune')} blocks fine-tuned {get('finetune_epochs')} epochs "
            f"at lr {get('finetune_lr')}"
        )
    parts.append(f"Adam lr {get('lr')}, batch {get('batch_size')}")
    if get("augment", True):
        parts.append(
            f"augmentation: rotation +/-{float(get('rotation', 0)):.0f} deg, flip, brightness/contrast "
            f"{get('jitter')}, random crop >= {get('crop_scale')} of the area, blur (p={get('blur_prob')}), "
            f"downscale to {get('lowres_min')}-{get('lowres_max')} px then upscale (p={get('lowres_prob')})"
        )
    camera = {
        name: get(f"{name}_prob", 0)
        for name in ("grayscale", "infrared", "motion_blur", "jpeg", "low_light", "noise")
        if get(f"{name}_prob", 0)
    }
    if camera:
        parts.append(
            "camera conditions of `maskwatch.data.corruptions`, severity 1-3: "
            + ", ".join(f"{name.replace('_', ' ')} (p={p})" for name, p in camera.items())
        )
    if get("class_weights", "none") not in ("none", None):
        parts.append(f"class weights {get('class_weights')}")
    if get("balance", "none") not in ("none", None):
        parts.append(f"sampling balanced by {get('balance').replace('_', ' and ')}")
    if float(get("wise_alpha", 1.0)) < 1.0:
        alpha = float(get("wise_alpha"))
        parts.append(f"weight averaging (WiSE-FT): {1 - alpha:g} x the frozen-backbone model + {alpha:g} x fine-tuned")
    return "; ".join(parts)


def _summary_section(s: Mapping[str, Any]) -> str:
    cfg = s.get("config") or {}
    classes = s["classes"]
    arch = _ARCH.get(s["arch"], s["arch"])
    imagenet = cfg.get("weights", "imagenet") == "imagenet"
    pretrained = " (ImageNet, torchvision `IMAGENET1K_V1` weights)" if imagenet else ""
    noncompliant = _noncompliant(s)
    time_note = ""
    if s.get("train_seconds"):
        minutes, seconds = divmod(round(s["train_seconds"]), 60)
        where = "timed by this script" if s.get("trained_here") else "the run's timings.json"
        time_note = f" (training took {minutes} min {seconds} s on {s.get('machine', '?')}; {where})"
    calibration = s.get("calibration") or {}
    if s["temperature"] != 1.0:
        fitted_on = f" on {calibration['data']}" if calibration.get("data") else ""
        temperature = (
            f"{s['temperature']:.4g}, fitted{fitted_on} by minimum NLL: probabilities are "
            "softmax(logits / T), in every backend and export"
        )
    else:
        temperature = "1 (not calibrated)" + (f"; {calibration['note']}" if calibration.get("note") else "")
    data_lines = "\n".join(f"  - {line}" for line in _data_lines(s))
    averaging = s.get("averaging") or {}
    ingredients = averaging.get("ingredients") or []
    made = (
        f"the weight average (a model soup, `maskwatch average`) of {len(ingredients)} models, each trained by "
        "maskwatch's own `train` command from the same ImageNet start"
        if ingredients
        else "trained by maskwatch's own `train` command"
    )
    if ingredients:
        recipe = "the ingredients' (each checkpoint's `averaging`), weighted:\n" + "\n".join(
            f"  - {i['weight']:.3g} x {i['name']}: {_recipe(i.get('config') or {})}" for i in ingredients
        )
    else:
        recipe = _recipe(cfg) + "."
    lines = [
        f"Face-mask classifier bundled with maskwatch: {arch}{pretrained} with a new {len(classes)}-class head "
        f"({', '.join(f'`{c}`' for c in classes)}), {made}.",
        "",
        f"- **File**: `models/{s['file']}`, {s['size_bytes'] / 1e6:.1f} MB ({s['bundled']} weights; the fp32 "
        f"checkpoint is {s['fp32_size_bytes'] / 1e6:.1f} MB), sha256 `{s['sha256']}`",
        f"- **Input**: an RGB face crop (box grown by {s['crop_margin']:g} of its size per side), squashed to "
        f"{s['image_size']}x{s['image_size']}, ImageNet mean/std (stored in the checkpoint's `preprocessing`).",
        f"- **Classes**: compliant {', '.join(f'`{c}`' for c in s['compliant_classes'])}; not compliant "
        f"{', '.join(f'`{c}`' for c in noncompliant) or 'none'} (stored in the checkpoint; the engine, the "
        "counts and the alerts follow it).",
        f"- **Temperature**: {temperature}.",
        "- **Data** (train and valid splits; test splits are only looked at for the figures below):",
        data_lines,
        f"- **Command** (from the repository root, after `make setup`): `{s['command']}`{time_note}",
        f"- **Recipe** ([`configs/`](../configs/) and the run's `config.yaml`): {recipe}",
        _training_data_line(s),
        f"- **Best epoch** (validation loss): {s['validation']}" if s.get("validation") else None,
        f"- **Versions**: {s.get('versions')}",
    ]
    return "\n".join(line for line in lines if line is not None)


def _training_data_line(s: Mapping[str, Any]) -> str | None:
    record = s.get("training_data")
    if not record:
        return None
    images = record.get("images") or {}
    counts = {k: v if isinstance(v, int) else len(v) for k, v in images.items()}
    names = ", ".join(str(d.get("name")) for d in record.get("datasets") or [])
    return (
        f"- **Training data record** (`training_data` in the checkpoint and the ONNX metadata): datasets {names}, "
        f"content digests of {counts.get('train', 0)} train and {counts.get('valid', 0)} valid "
        "images, split-list sha256s; `maskwatch evaluate` leaves those images out (`--include-training-data` "
        "scores them)."
    )


def _sets(s: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [test for test in s["sets"] if test["name"] in s[s["bundled"]]]


def _metrics_section(s: Mapping[str, Any]) -> str:
    chosen = s[s["bundled"]]
    noncompliant = _noncompliant(s)
    recall_title = " / ".join(f"{c} recall" for c in noncompliant) or "recall"
    two = len(s["classes"]) == 2
    head = f"| test set | images | accuracy | macro F1 | {recall_title} |" + (" ROC AUC |" if two else "") + " ECE |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for test in _sets(s):
        m = chosen[test["name"]]
        recalls = " / ".join(_f(m["per_class"][c]["recall"]) for c in noncompliant) or "–"
        rows.append(
            f"| {test['title']} | {m['n_images']} | {_f(m['accuracy'])} | {_f(m['macro_f1'])} | {recalls} |"
            + (f" {_f(m['roc_auc'])} |" if two else "")
            + f" {_f(m['ece'])} |"
        )
    backend = next(iter(chosen.values()))["backend"] if chosen else "?"
    commands = "\n".join(
        f"- {test['title']}: `{test['command']}`" + (f" ({test['note']})" if test.get("note") else "")
        for test in _sets(s)
    )
    left_out = (
        "; faces of other classes (such as `mask_weared_incorrect` for a 2-class model) are left out" if two else ""
    )
    return (
        f"## Metrics ({s['bundled']} file, `maskwatch evaluate`, backend {backend})\n\n"
        + "\n".join(rows)
        + f"\n\nCommands (`MODEL` = `models/{s['file']}`; scene crops use the model's crop margin{left_out}):\n\n"
        + commands
        + "\n\nRegenerate every generated section with `.venv/bin/python benchmarks/bundled_model.py` (see its --help)."
    )


def _per_class_section(s: Mapping[str, Any]) -> str:
    chosen = s[s["bundled"]]
    rows = ["| test set | class | precision | recall | F1 | support |", "|---|---|---|---|---|---|"]
    for test in _sets(s):
        for name in s["classes"]:
            c = chosen[test["name"]]["per_class"][name]
            scores = " | ".join(_f(c[k]) for k in ("precision", "recall", "f1"))
            rows.append(f"| {test['title']} | {name} | {scores} | {c['support']} |")
    return "## Per class\n\n" + "\n".join(rows)


def _compliance_section(s: Mapping[str, Any]) -> str:
    chosen = s[s["bundled"]]
    if len(s["classes"]) <= 2:
        return ""
    merged = ", ".join(f"`{c}`" for c in _noncompliant(s))
    rows = ["| test set | accuracy | macro F1 | not-compliant recall |", "|---|---|---|---|"]
    for test in _sets(s):
        m = chosen[test["name"]].get("compliance") or {}
        rows.append(
            f"| {test['title']} | {_f(m.get('accuracy'))} | {_f(m.get('macro_f1'))} | "
            f"{_f(m.get('noncompliant_recall'))} |"
        )
    return (
        f"## Compliant vs not (the classes merged to two)\n\nThe predicted class decides; {merged} count as not "
        "compliant, as in the engine's counts. Compare with a 2-class model on the same faces before making "
        "this model the default.\n\n" + "\n".join(rows)
    )


def _calibration_section(s: Mapping[str, Any]) -> str:
    chosen = s[s["bundled"]]
    rows = ["| test set | ECE, T = 1 | ECE, T = " + f"{s['temperature']:.4g} |", "|---|---|---|"]
    for test in _sets(s):
        m = chosen[test["name"]]
        rows.append(f"| {test['title']} | {_f(m['ece_uncalibrated'])} | {_f(m['ece'])} |")
    calibration = s.get("calibration") or {}
    if s["temperature"] != 1.0 and calibration:
        fitted = (
            f"Temperature scaling: T = {s['temperature']:.4g}, fitted by minimum NLL on "
            f"{calibration.get('data') or 'validation data'} ({calibration.get('n', '?')} images; validation ECE "
            f"{_f(calibration.get('ece_before'))} → {_f(calibration.get('ece_after'))}). "
        )
    elif s["temperature"] != 1.0:
        fitted = f"T = {s['temperature']:.4g} (set in the checkpoint, which records no calibration run). "
    else:
        fitted = "This model is not calibrated (T = 1), so both columns are equal. "
    return (
        "## Calibration (ECE, 15 bins)\n\n"
        + fitted
        + "The per-track votes and the alert rules average these probabilities. Reliability diagrams, before "
        "and after: `maskwatch evaluate ... --report report.html`.\n\n" + "\n".join(rows)
    )


def _cross_dataset_section(s: Mapping[str, Any]) -> str | None:
    cross = s.get("cross_dataset")
    if not cross:
        return None
    m = cross["result"]
    noncompliant = [c for c in m["per_class"] if c not in cross.get("compliant_classes", ["with_mask"])]
    recalls = " / ".join(f"{c} recall {_f(m['per_class'][c]['recall'])}" for c in noncompliant)
    return (
        "## Cross-dataset: trained on faces only\n\n"
        f"A model trained on `faces/` only (`{_shown(cross['model'])}`, sha256 `{cross['sha256'][:16]}…`"
        + (f", made by `{cross['command']}`" if cross.get("command") else "")
        + f") on {cross['set']['title']} ({cross['set']['note']}): {m['n_images']} faces, accuracy "
        f"{_f(m['accuracy'])}, macro F1 {_f(m['macro_f1'])}, {recalls}, ECE {_f(m['ece'])}.\n"
        f"Command: `{cross['set']['command']}`."
    )


def _fp16_section(s: Mapping[str, Any]) -> str:
    rows = ["| test set | fp32 | fp16 |", "|---|---|---|"]
    for test in _sets(s):
        fp32, fp16 = s["fp32"][test["name"]], s["fp16"][test["name"]]
        rows.append(f"| {test['title']} | {_f(fp32['accuracy'])} | {_f(fp16['accuracy'])} |")
    chosen = (
        "fp16 costs nothing on any set, so the fp16 file is bundled"
        if s["bundled"] == "fp16"
        else "fp16 costs accuracy on at least one set, so the fp32 file is bundled"
    )
    return "## fp16 vs fp32 (accuracy)\n\n" + "\n".join(rows) + f"\n\n{chosen}."


def _int8_section(s: Mapping[str, Any]) -> str | None:
    int8 = s.get("int8")
    if not int8:
        return None
    rows = ["| test set | fp32 ONNX | INT8 | delta |", "|---|---|---|---|"]
    for test in _sets(s):
        deltas = (int8.get("deltas") or {}).get(test["name"])
        if not deltas:
            continue
        fp32, q = deltas["fp32"], deltas["int8"]
        rows.append(
            f"| {test['title']} ({fp32['n']}), accuracy / macro F1 | {_f(fp32['accuracy'])} / {_f(fp32['macro_f1'])} | "
            f"{_f(q['accuracy'])} / {_f(q['macro_f1'])} | {q['accuracy_delta_points']:+.2f} / "
            f"{q['macro_f1_delta_points']:+.2f} points ({q['differs_from_fp32']} predictions differ) |"
        )
    return (
        f"Made by `maskwatch export --format onnx-int8` from the bundled file (static QDQ, per-channel INT8 "
        f"weights, UINT8 activations, MinMax, calibrated on {int8['calibration']}); its ONNX metadata carries the "
        "classes, preprocessing, crop margin, compliant classes, temperature, the training-data record and the "
        f"sha256 of the checkpoint it came from. {int8['size_bytes'] / 1e6:.1f} MB, sha256 `{int8['sha256']}`. "
        "Accuracy deltas, measured by "
        "`benchmarks/bundled_model.py` (as `benchmarks/bench_runtime.py --accuracy` does):\n\n" + "\n".join(rows)
    )


# ---------------------------------------------------------------------------------------------------------
# the run


def is_soup_command(command: str) -> bool:
    return shlex.split(command)[:2] == ["maskwatch", "average"]


def run_folder_of(command: str) -> Path | None:
    """The run folder a command writes: the ``--out`` of ``maskwatch train``, or the folder of a
    ``maskwatch average --out FOLDER/model.pt`` (None when the command has no such ``--out``)."""
    words = shlex.split(command)
    out = None
    for i, word in enumerate(words):
        if word == "--out" and i + 1 < len(words):
            out = Path(words[i + 1])
        elif word.startswith("--out="):
            out = Path(word.split("=", 1)[1])
    if out is not None and is_soup_command(command):
        return out.parent if out.name == "model.pt" else None
    return out


def _train(command: str) -> float:
    words = shlex.split(command)
    if words[:2] != ["maskwatch", "train"]:
        raise SystemExit(f"--train-command must start with 'maskwatch train', got {command!r}")
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "maskwatch"), *words[1:]], check=True, cwd=ROOT)
    return time.perf_counter() - started


def _machine() -> str:
    from maskwatch.bench import machine_info

    info = machine_info()
    return f"{info.get('cpu', '?')}, {info.get('physical_cores', '?')} cores"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--train-command",
        help="the `maskwatch train ... --out RUN` (or `maskwatch average ... --out RUN/model.pt`) command, "
        "recorded in the card",
    )
    p.add_argument("--run", type=Path, help="run folder (default: the command's --out)")
    p.add_argument("--no-train", action="store_true", help="measure an existing run instead of training")
    p.add_argument("--faces-only", type=Path, help="a model trained on faces only: the cross-dataset figure")
    p.add_argument("--faces-only-command", default="", help="the command that made --faces-only (for the card)")
    p.add_argument("--scene-splits", type=Path, default=SCENE_SPLITS, help="split lists of the scenes")
    p.add_argument("--no-install", action="store_true", help="leave models/ alone (the INT8 export goes to the run)")
    p.add_argument("--no-int8", action="store_true", help="do not re-make and measure the INT8 export")
    p.add_argument("--card", type=Path, default=CARD, help="model card to update")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the measurements are saved (JSON)")
    p.add_argument("--card-only", action="store_true", help="rewrite the card from the saved --results")
    args = p.parse_args(argv)

    if args.card_only:
        appended = write_card(json.loads(args.results.read_text()), args.card)
        print(f"wrote {args.card}" + (f" (appended sections {appended})" if appended else ""))
        return 0
    if not args.train_command:
        p.error("--train-command is required (it is what the card says made the model)")
    if is_soup_command(args.train_command) and not args.no_train:
        p.error("a `maskwatch average` command is recorded, not re-run: give --no-train")
    if is_soup_command(args.train_command) and run_folder_of(args.train_command) is None:
        p.error("a `maskwatch average` command must write RUN/model.pt (--out RUN/model.pt)")
    run = args.run or run_folder_of(args.train_command)
    if run is None:
        p.error("give --run, or an --out in --train-command")
    if args.run and run_folder_of(args.train_command) not in (None, args.run):
        p.error(f"--run {args.run} differs from the command's --out {run_folder_of(args.train_command)}")
    run = run if run.is_absolute() else ROOT / run

    import torch

    from maskwatch.bundled import BUNDLED_INT8_NAME, BUNDLED_NAME
    from maskwatch.checkpoint import atomic_torch_save, load_checkpoint
    from maskwatch.paths import shared_data_dir

    torch.set_num_threads(2)
    train_seconds = None if args.no_train else _train(args.train_command)
    if train_seconds is None and (run / "timings.json").is_file():
        train_seconds = json.loads((run / "timings.json").read_text()).get("total_s")
    checkpoint = load_checkpoint(run / "model.pt")
    if not checkpoint.get("training_data"):  # models trained before the record existed: rebuilt from the config
        from maskwatch.provenance import training_data_from_config

        checkpoint["training_data"] = training_data_from_config(checkpoint["config"], checkpoint["classes"])
        atomic_torch_save(checkpoint, run / "model.pt")
    half = {
        **checkpoint,
        "state_dict": {k: (v.half() if v.is_floating_point() else v) for k, v in checkpoint["state_dict"].items()},
    }
    half_path = run / "model-fp16.pt"
    atomic_torch_save(half, half_path)

    shared = shared_data_dir()
    splits = args.scene_splits if args.scene_splits and args.scene_splits.is_dir() else None
    sets = test_sets(shared, splits)
    fp32 = measure(run / "model.pt", sets, run / "eval-fp32")
    fp16 = measure(half_path, sets, run / "eval-fp16")
    costs_nothing = all(fp16[k].accuracy >= fp32[k].accuracy - 1e-9 for k in fp32)
    chosen = half_path if costs_nothing else run / "model.pt"

    cross = None
    if args.faces_only is not None:
        test = cross_dataset_set(shared)
        faces_only = load_checkpoint(args.faces_only)
        cross = {
            "model": str(args.faces_only),
            "sha256": file_sha256(args.faces_only),
            "command": args.faces_only_command,
            "compliant_classes": faces_only["compliant_classes"],
            "set": {**asdict(test), "command": test.command(_shown(args.faces_only))},
            "result": asdict(measure(args.faces_only, [test], run / "eval-faces-only")[test.name]),
        }

    target = ROOT / "models" / BUNDLED_NAME if not args.no_install else chosen
    if not args.no_install:
        target.write_bytes(chosen.read_bytes())
    int8 = None
    if not args.no_int8:
        int8_path = run / BUNDLED_INT8_NAME if args.no_install else ROOT / "models" / BUNDLED_INT8_NAME
        int8 = _remake_int8(target, int8_path, sets)
    data_json = run / "data.json"
    summary = {
        "file": BUNDLED_NAME,
        "command": args.train_command,
        "run": str(run),
        "train_seconds": train_seconds,
        "trained_here": not args.no_train,
        "machine": _machine(),
        "arch": checkpoint["arch"],
        "classes": list(checkpoint["classes"]),
        "compliant_classes": list(checkpoint["compliant_classes"]),
        "crop_margin": checkpoint["crop_margin"],
        "image_size": checkpoint["preprocessing"]["size"],
        "temperature": checkpoint["temperature"],
        "calibration": checkpoint.get("calibration"),
        "sets": [{**asdict(t), "command": t.command()} for t in sets],
        "fp32": {k: asdict(v) for k, v in fp32.items()},
        "fp16": {k: asdict(v) for k, v in fp16.items()},
        "bundled": "fp16" if costs_nothing else "fp32",
        "size_bytes": target.stat().st_size,
        "fp32_size_bytes": (run / "model.pt").stat().st_size,
        "sha256": file_sha256(target),
        "cross_dataset": cross,
        "int8": int8,
        "config": checkpoint["config"],
        "data": json.loads(data_json.read_text()) if data_json.is_file() else None,
        "validation": (checkpoint.get("metrics") or {}).get("validation"),
        "training_data": {
            "datasets": checkpoint["training_data"].get("datasets"),
            "images": {k: len(v) for k, v in (checkpoint["training_data"].get("images") or {}).items()},
        },
        "averaging": checkpoint.get("averaging"),
        "versions": checkpoint["versions"],
    }
    args.results.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    appended = write_card(json.loads(args.results.read_text()), args.card)
    print(f"wrote {args.results} and {args.card}" + (f" (appended sections {appended})" if appended else ""))
    return 0


def _remake_int8(model: Path, out: Path, sets: Sequence[TestSet]) -> dict[str, Any]:
    """Export the installed model to INT8 (default calibration: a sample of its training data) next to it,
    and measure it against the fp32 ONNX export on the same sets."""
    from bench_runtime import accuracy

    from maskwatch.runtime.export import export_onnx
    from maskwatch.runtime.onnx_backend import read_metadata

    export_onnx(model, out, int8=True, on_step=lambda step: print(f"INT8: {step}", flush=True))
    meta = read_metadata(out)
    variants = {"fp32": (model, "onnx"), "int8": (out, "auto")}
    measured = accuracy(variants, {t.name: {"data": t.data, **t.kwargs()} for t in sets})
    return {
        "file": out.name,
        "size_bytes": out.stat().st_size,
        "sha256": file_sha256(out),
        "calibration": meta.get("calibration", "?"),
        "deltas": measured,
    }


if __name__ == "__main__":
    raise SystemExit(main())
