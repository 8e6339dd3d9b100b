"""benchmarks/bundled_model.py writes the model card: only the generated sections change, the hand-written text
stays byte for byte; the sections themselves on fake measurements of a 2-class and a 3-class model."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundled():
    """benchmarks/bundled_model.py as a module (benchmarks/ on the path, as when it runs as a script)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bundled_model", ROOT / "benchmarks" / "bundled_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bundled_model"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bundled_model", None)
    sys.path.remove(str(ROOT / "benchmarks"))


SMALL_CARD = """# Model card: `m.pt`

Hand-written intro  with  odd   spacing,\ttabs and a trailing space:\x20
and a second line.

<!-- generated: summary -->
old summary
<!-- /generated -->

## Why this recipe (hand-written)
| a | b |
|---|---|
| 1 | 2 |

<!-- generated: metrics -->
old metrics
<!-- /generated -->
<!-- generated: cross_dataset -->
an older cross-dataset figure, kept when this run has none
<!-- /generated -->

Closing words, no newline at the end"""


def _outside(text: str) -> list[str]:
    """The text between generated sections (the hand-written parts), in order."""
    return re.split(r"<!-- generated: [\w-]+ -->\n.*?<!-- /generated -->", text, flags=re.S)


def test_only_generated_sections_change(bundled):
    new, appended = bundled.replace_generated(SMALL_CARD, {"summary": "new summary\n", "metrics": "| x |\n|---|\n"})
    assert _outside(new) == _outside(SMALL_CARD)  # every hand-written byte kept, trailing spaces included
    assert "<!-- generated: summary -->\nnew summary\n<!-- /generated -->" in new
    assert "<!-- generated: metrics -->\n| x |\n|---|\n<!-- /generated -->" in new
    assert "an older cross-dataset figure" in new and appended == []
    assert "old summary" not in new and "old metrics" not in new
    again, _ = bundled.replace_generated(new, {"summary": "new summary\n", "metrics": "| x |\n|---|\n"})
    assert again == new  # idempotent


def test_sections_without_markers_are_appended_and_bad_markers_refused(bundled):
    new, appended = bundled.replace_generated(SMALL_CARD, {"summary": "s", "fp16": "## fp16\n\n| t |", "int8": None})
    assert appended == ["fp16"]
    assert new.startswith(SMALL_CARD.split("<!-- generated: summary -->")[0])
    assert new.endswith(
        "Closing words, no newline at the end\n\n<!-- generated: fp16 -->\n## fp16\n\n| t |\n<!-- /generated -->\n"
    )
    with pytest.raises(ValueError, match="no '<!-- /generated -->'"):
        bundled.replace_generated("<!-- generated: a -->\nno end\n", {"a": "x"})
    with pytest.raises(ValueError, match="more than once"):
        bundled.replace_generated("<!-- generated: a -->\n<!-- /generated -->\n" * 2, {"a": "x"})
    empty, _ = bundled.replace_generated(SMALL_CARD, {"metrics": ""})
    assert "<!-- generated: metrics -->\n<!-- /generated -->" in empty


def _result(classes: list[str], accuracy: float, temperature: float = 1.0) -> dict:
    per_class = {
        c: {"precision": 0.9 + i / 100, "recall": 0.8 + i / 100, "f1": 0.85, "support": 100 + i}
        for i, c in enumerate(classes)
    }
    return {
        "n_images": 300,
        "accuracy": accuracy,
        "macro_f1": accuracy - 0.01,
        "roc_auc": 0.999 if len(classes) == 2 else None,
        "ece": 0.011,
        "ece_uncalibrated": 0.031,
        "temperature": temperature,
        "backend": "onnx",
        "per_class": per_class,
        "compliance": {"accuracy": 0.97, "macro_f1": 0.95, "noncompliant_recall": 0.93} if len(classes) > 2 else None,
    }


def fake_summary(bundled, classes: list[str], *, temperature: float = 1.0, cross: bool = False) -> dict:
    """What main() writes to bundled.json, for a run that never happened."""
    shared = Path("/data/shared")
    sets = bundled.test_sets(shared, ROOT / "data" / "splits" / "scenes")
    summary = {
        "file": "maskwatch-mobilenet_v2.pt",
        "command": "maskwatch train --config configs/bundled.yaml --data ../shared/data/faces "
        "--data ../shared/data/scenes,crops,min_face=12,splits=data/splits/scenes --out runs/bundled",
        "run": "runs/bundled",
        "train_seconds": 754.2,
        "machine": "Fake CPU, 2 cores",
        "arch": "mobilenet_v2",
        "classes": classes,
        "compliant_classes": ["with_mask"],
        "crop_margin": 0.15,
        "image_size": 224,
        "temperature": temperature,
        "calibration": {
            "data": "faces/valid + scene crops [valid]",
            "n": 700,
            "ece_before": 0.03,
            "ece_after": 0.01,
            "note": "",
        }
        if temperature != 1.0
        else None,
        "sets": [
            {
                **bundled.asdict(t),
                "data": str(t.data),
                "split_lists": str(t.split_lists) if t.split_lists else None,
                "command": t.command(),
            }
            for t in sets
        ],
        "fp32": {t.name: _result(classes, 0.99) for t in sets},
        "fp16": {t.name: _result(classes, 0.99) for t in sets},
        "bundled": "fp16",
        "size_bytes": 4_600_000,
        "fp32_size_bytes": 9_100_000,
        "sha256": "ab" * 32,
        "cross_dataset": None,
        "int8": None,
        "config": {
            "epochs": 15,
            "views": 6,
            "finetune": 4,
            "finetune_epochs": 6,
            "finetune_lr": 1e-4,
            "lr": 1e-3,
            "batch_size": 32,
            "rotation": 15.0,
            "jitter": 0.2,
            "crop_scale": 0.8,
            "blur_prob": 0.4,
            "lowres_min": 14,
            "lowres_max": 56,
            "lowres_prob": 0.5,
            "weights": "imagenet",
            "data": ["../shared/data/faces", {"path": "../shared/data/scenes", "crops": True}],
        },
        "data": {
            "datasets": [
                {
                    "name": "faces",
                    "root": "../shared/data/faces",
                    "layout": "folders",
                    "weight": 1.0,
                    "counts": {"train": dict.fromkeys(classes, 1000), "valid": dict.fromkeys(classes, 200)},
                },
                {
                    "name": "scenes",
                    "root": "../shared/data/scenes",
                    "layout": "voc",
                    "weight": 2.0,
                    "counts": {"train": dict.fromkeys(classes, 50), "valid": dict.fromkeys(classes, 20)},
                },
            ]
        },
        "validation": {"stage": 2, "epoch": 5, "val_loss": 0.01},
        "versions": {"maskwatch": "0.1.0"},
    }
    if cross:
        test = bundled.cross_dataset_set(shared)
        summary["cross_dataset"] = {
            "model": "runs/faces-only/model.pt",
            "sha256": "cd" * 32,
            "command": "maskwatch train --data faces",
            "compliant_classes": ["with_mask"],
            "set": {"title": test.title, "note": test.note, "command": test.command("runs/faces-only/model.pt")},
            "result": _result(["with_mask", "without_mask"], 0.981),
        }
        summary["int8"] = {
            "file": "m-int8.onnx",
            "size_bytes": 2_600_000,
            "sha256": "ef" * 32,
            "calibration": "200 images, stratified sample",
            "deltas": {
                t.name: {
                    "fp32": {"n": 300, "accuracy": 0.99, "macro_f1": 0.98},
                    "int8": {
                        "n": 300,
                        "accuracy": 0.985,
                        "macro_f1": 0.97,
                        "accuracy_delta_points": -0.5,
                        "macro_f1_delta_points": -1.0,
                        "differs_from_fp32": 3,
                    },
                }
                for t in sets
            },
        }
    return json.loads(json.dumps(summary))  # JSON-ready, as main() reads it back


def test_card_of_a_two_class_model(bundled, tmp_path):
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(SMALL_CARD)
    appended = bundled.write_card(fake_summary(bundled, ["with_mask", "without_mask"]), card)
    text = card.read_text()
    flat = " ".join(text.split())  # prose is wrapped; compare words
    before, after = _outside(SMALL_CARD), _outside(text)
    assert after[: len(before) - 1] == before[:-1] and after[len(before) - 1].startswith(before[-1])
    assert appended == ["per_class", "compliance", "calibration", "fp16"]  # this small card lacked their markers
    assert "an older cross-dataset figure" in text  # nothing new for it in this run: kept
    assert "sha256 `" + "ab" * 32 + "`" in flat and "--out runs/bundled`" in flat and "12 min 34 s" in flat
    assert "sampling weight 2" in flat and "valid 200 with_mask, 200 without_mask" in flat
    assert "| without_mask recall | ROC AUC | ECE |" in flat
    assert "scenes --crops --min-face 32 --splits data/splits/scenes --split test`" in flat
    assert "| scene crops ≥ 32 px, scenes/test | without_mask |" in flat
    lines = text.splitlines()
    long = [line for line in lines if len(line) > 110 and not line.startswith("|")]
    assert all(re.fullmatch(r" *`[^`]*`\S*", line) for line in long), long  # only an unbreakable code span
    assert any("`maskwatch evaluate --model MODEL" in line and line.endswith("--split test`") for line in lines)
    assert "| scene crops ≥ 32 px, scenes/test | without_mask | 0.9100 | 0.8100 | 0.8500 | 101 |" in lines
    recipe = next(i for i, line in enumerate(lines) if line.startswith("- **Recipe**"))
    assert lines[recipe + 1].startswith("  ") and not lines[recipe + 1].startswith("  -")  # bullet continues
    assert "not calibrated (T = 1)" in flat and "<!-- generated: compliance -->\n<!-- /generated -->" in text


def test_card_of_a_three_class_calibrated_model(bundled, tmp_path):
    classes = ["mask_weared_incorrect", "with_mask", "without_mask"]
    summary = fake_summary(bundled, classes, temperature=1.73, cross=True)
    sections = {k: " ".join(v.split()) for k, v in bundled.card_sections(summary).items() if v is not None}
    assert "| mask_weared_incorrect recall / without_mask recall | ECE |" in sections["metrics"]
    assert "ROC AUC" not in sections["metrics"]
    for name in classes:
        assert f"| faces/test | {name} |" in sections["per_class"]
    assert "merged to two" in sections["compliance"] and "| 0.9700 | 0.9500 | 0.9300 |" in sections["compliance"]
    assert "T = 1.73" in sections["calibration"] and "| 0.0310 | 0.0110 |" in sections["calibration"]
    assert "faces/valid + scene crops [valid]" in sections["summary"]
    assert "not compliant `mask_weared_incorrect`, `without_mask`" in sections["summary"]
    assert "0.9810" in sections["cross_dataset"] and "all 418 scenes" in sections["cross_dataset"]
    assert "-0.50 / -1.00 points (3 predictions differ)" in sections["int8"]


def test_the_real_card_has_every_marker_and_keeps_its_text(bundled, tmp_path):
    real = (ROOT / "models" / "MODEL_CARD.md").read_text()
    names = re.findall(r"<!-- generated: ([\w-]+) -->", real)
    assert names == [name for name, _ in bundled.SECTIONS]
    copy = tmp_path / "MODEL_CARD.md"
    copy.write_text(real)
    appended = bundled.write_card(fake_summary(bundled, ["with_mask", "without_mask"], cross=True), copy)
    assert appended == [] and _outside(copy.read_text()) == _outside(real)
    for kept in ("## How this model was chosen", "## The face detector of the `fast` preset", "Per face, INT8 cost"):
        assert kept in copy.read_text()


def test_evaluate_commands_and_merged_figures(bundled):
    shared = Path("/x/shared/data")
    faces, _, scenes = bundled.test_sets(shared, ROOT / "data" / "splits" / "scenes")
    assert faces.command() == "maskwatch evaluate --model MODEL --data /x/shared/data/faces --split test"
    assert scenes.command() == (
        "maskwatch evaluate --model MODEL --data /x/shared/data/scenes --crops --min-face 32 "
        "--splits data/splits/scenes --split test"
    )
    assert scenes.kwargs()["split_lists"] == ROOT / "data" / "splits" / "scenes"
    everything = bundled.test_sets(shared, None)[2]
    assert everything.split is None and everything.split_lists is None and "all" in everything.title
    assert bundled.cross_dataset_set(shared).command("m.pt").endswith("--crops --min-face 32")
    # three classes merged to compliant / not: the predicted class decides
    classes = ["mask_weared_incorrect", "with_mask", "without_mask"]
    probabilities = np.eye(3)[[1, 1, 0, 2, 2, 1]]
    labels = np.array([1, 0, 0, 2, 1, 2])
    merged = bundled.merged_figures(probabilities, labels, classes, ["with_mask"])
    # truth not-compliant: rows 1, 2, 3, 5; predicted not-compliant: rows 2, 3, 4
    assert merged["noncompliant_recall"] == pytest.approx(2 / 4) and merged["accuracy"] == pytest.approx(3 / 6)
    assert bundled.run_folder_of("maskwatch train --data d --out runs/x") == Path("runs/x")
    assert bundled.run_folder_of("maskwatch train --out=runs/y") == Path("runs/y")
    assert bundled.run_folder_of("maskwatch train --data d") is None
    # a model soup's run folder is where `maskwatch average` wrote model.pt
    assert bundled.run_folder_of("maskwatch average a.pt b.pt --out runs/soup/model.pt") == Path("runs/soup")
    assert bundled.run_folder_of("maskwatch average a.pt b.pt --out runs/soup.pt") is None


def test_card_of_a_model_soup_names_its_ingredients_and_their_recipes(bundled, tmp_path):
    summary = fake_summary(bundled, ["with_mask", "without_mask"])
    summary["command"] = "maskwatch average runs/a/model.pt runs/b/model.pt --out runs/soup/model.pt"
    summary["averaging"] = {"method": "model soup (weighted average of weights)", "ingredients": [
        {"name": "runs/a/model.pt (sha256 " + "a1" * 32 + ")", "weight": 0.5, "config": {"epochs": 15, "views": 6}},
        {"name": "runs/b/model.pt (sha256 " + "b2" * 32 + ")", "weight": 0.5,
         "config": {"epochs": 9, "views": 6, "grayscale_prob": 0.15}},
    ]}  # fmt: skip
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(SMALL_CARD)
    bundled.write_card(summary, card)
    flat = " ".join(card.read_text().split())
    assert "the weight average (a model soup, `maskwatch average`) of 2 models" in flat
    assert "`maskwatch average runs/a/model.pt runs/b/model.pt --out runs/soup/model.pt`" in flat
    assert "0.5 x runs/a/model.pt (sha256 " + "a1" * 32 + "): frozen backbone, head trained 15 epochs" in flat
    assert "head trained 9 epochs" in flat and "grayscale (p=0.15)" in flat
    assert "trained by maskwatch's own `train` command." not in flat  # that is a single run's sentence


def test_a_soup_command_is_recorded_not_re_run(bundled):
    with pytest.raises(SystemExit):  # --no-train is required: the card records the command, nothing runs it
        bundled.main(["--train-command", "maskwatch average a.pt b.pt --out runs/soup/model.pt"])
    with pytest.raises(SystemExit):  # the run folder must hold the soup as model.pt
        bundled.main(["--no-train", "--train-command", "maskwatch average a.pt b.pt --out runs/soup.pt"])


def test_card_only_rewrites_from_the_saved_results(bundled, tmp_path):
    results = tmp_path / "bundled.json"
    results.write_text(json.dumps(fake_summary(bundled, ["with_mask", "without_mask"])))
    card = tmp_path / "card.md"
    card.write_text(SMALL_CARD)
    assert bundled.main(["--card-only", "--results", str(results), "--card", str(card)]) == 0
    assert "ab" * 32 in card.read_text() and "Hand-written intro" in card.read_text()
    with pytest.raises(SystemExit):
        bundled.main(["--no-train"])  # the training command is what the card records: required
