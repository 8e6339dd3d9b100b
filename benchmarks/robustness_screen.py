"""Screen candidate networks against the selection rule in seconds, before the protocol scores them.

Every recipe here fine-tunes only the last K blocks of an ImageNet MobileNetV2 (``finetune: 4``); the blocks
before them keep their ImageNet weights in every model (previous, bundled, each candidate, each fold model,
and any weight average of them). So the prefix's output for each face of each population under each
condition of :func:`robustness.grid` is computed once (``runs/screen/``) and a candidate only runs its tail:
about a minute on this machine, where :mod:`robustness` takes ten. The baselines' predictions are the
protocol's own (its cache, ``runs/robustness/``); the candidate's come from the tail on fp16 features, which
agrees with the full ONNX model on all but a handful of faces (``--check`` measures it), so a screen is only
a guide: the decision is ``benchmarks/robustness.py``'s.

Candidates are model files or weight averages of model files, which share the same ImageNet start:

    .venv/bin/python benchmarks/robustness_screen.py \\
        --candidate 'soup=0.5*runs/baselines/bundled.pt+0.5*runs/exp/robust/model.pt' \\
        --fold 'soup=0.5*runs/baselines/previous.pt+0.5*runs/exp/robust-loso-scenes/model.pt'

``--fold NAME=SPEC`` is the candidate's leave-the-scenes-out model (its recipe trained without the scene
crops, or the same average of its ingredients' folds); the baselines' is the faces-only model, as in the
protocol (``--loso bundled:scenes=previous.pt``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import robustness as protocol

from maskwatch.data.corruptions import CLEAN
from maskwatch.robustness import ConditionResult, compare, passes

ROOT = Path(__file__).resolve().parents[1]
SCREEN = ROOT / "runs" / "screen"
FINETUNE = 4


def parse_spec(spec: str) -> list[tuple[float, Path]]:
    """``PATH`` or ``W1*PATH1+W2*PATH2...`` -> weighted model files (weights normalised to sum 1)."""
    parts = []
    for item in spec.split("+"):
        weight, _, path = item.rpartition("*")
        parts.append((float(weight) if weight else 1.0, Path(path)))
    total = sum(w for w, _ in parts)
    return [(w / total, p) for w, p in parts]


def averaged_state(spec: str) -> dict[str, Any]:
    """The checkpoint of the first file with the weighted average of every file's floating-point weights."""
    from maskwatch.checkpoint import load_checkpoint

    parts = parse_spec(spec)
    checkpoints = [(w, load_checkpoint(p)) for w, p in parts]
    base = dict(checkpoints[0][1])
    state = {}
    for key, tensor in base["state_dict"].items():
        if tensor.is_floating_point():
            state[key] = sum(w * c["state_dict"][key].float() for w, c in checkpoints)
        else:
            state[key] = tensor.clone()
    base["state_dict"] = state
    return base


def _model(checkpoint: dict[str, Any]) -> torch.nn.Module:
    from maskwatch.checkpoint import build_model

    checkpoint = {**checkpoint, "state_dict": {k: v.float() for k, v in checkpoint["state_dict"].items()}}
    return build_model(checkpoint).eval()


def _onnx(module: torch.nn.Module, shape: tuple[int, ...]) -> Any:
    """``module`` exported to ONNX and run by ONNX Runtime (several times faster than torch on this CPU)."""
    import tempfile
    import warnings

    from maskwatch.runtime.onnx_backend import create_session

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "part.onnx"
        torch.onnx.export(
            module, (torch.zeros(1, *shape),), str(path), input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False,
        )  # fmt: skip
        session = create_session(path, threads=2)
    return lambda batch: session.run(None, {"x": np.ascontiguousarray(batch, dtype=np.float32)})[0]


def prefix_features(population: protocol.Population, role: str, extended: bool) -> dict[str, torch.Tensor]:
    """The ImageNet prefix's output (fp16) for every face of ``population`` under every condition of the grid,
    cached by population, role and size."""
    from maskwatch.camera_color import to_gray_faces
    from maskwatch.checkpoint import load_checkpoint
    from maskwatch.models import split_model
    from maskwatch.preprocess import Preprocessing, to_batch
    from maskwatch.robustness import corrupted

    SCREEN.mkdir(parents=True, exist_ok=True)
    path = SCREEN / f"{population.name}-{role}-{len(population.faces)}-{'x' if extended else 's'}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    reference = load_checkpoint(ROOT / "runs" / "baselines" / "previous.pt")
    model = _model(reference)
    prefix, _ = split_model(model, reference["arch"], FINETUNE)
    run = _onnx(prefix.eval(), (3, 224, 224))
    prep = Preprocessing.from_dict(reference["preprocessing"])
    out = {}
    for label, condition, gray in protocol.grid(extended):
        images = population.faces.images if condition == CLEAN else corrupted(population.faces, condition, 0)
        if gray:
            images = to_gray_faces(images)
        chunks = [run(to_batch(images[start : start + 64], prep)) for start in range(0, len(images), 64)]
        out[label] = torch.from_numpy(np.concatenate(chunks)).half()
        print(f"  prefix {population.name} {label}: {tuple(out[label].shape)}", flush=True)
    torch.save(out, path)
    return out


def tail_predictions(checkpoint: dict[str, Any], features: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Two-class predictions (0 compliant, 1 not) of the checkpoint's tail on cached prefix features."""
    from maskwatch.core.contract import model_fields
    from maskwatch.models import split_model

    model = _model(checkpoint)
    _, tail = split_model(model, checkpoint["arch"], FINETUNE)
    run = _onnx(tail.eval(), tuple(next(iter(features.values())).shape[1:]))
    fields = model_fields(checkpoint, checkpoint["classes"])
    compliant = torch.tensor([c in fields["compliant_classes"] for c in checkpoint["classes"]])
    out = {}
    for label, feats in features.items():
        logits = torch.from_numpy(np.concatenate([run(chunk.float().numpy()) for chunk in feats.split(256)]))
        probabilities = torch.softmax(logits, dim=1)
        out[label] = (probabilities[:, compliant].sum(1) < 0.5).long().numpy()
    return out


def protocol_predictions(model: Path, population: protocol.Population, role: str) -> dict[str, np.ndarray] | None:
    """The protocol's cached predictions of ``model`` (None when it never scored it)."""
    key = f"{protocol._sha(model)}-{population.name}-{role}-{len(population.faces)}-0"
    path = protocol.CACHE / f"{key}.json"
    if not path.is_file():
        return None
    return {k: np.array([int(c) for c in v], dtype=np.int64) for k, v in json.loads(path.read_text()).items()}


def results(predictions: dict[str, np.ndarray], population: protocol.Population) -> dict[str, ConditionResult]:
    labels = population.faces.labels
    return {k: ConditionResult(population.name, k, labels, v) for k, v in predictions.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=SPEC")
    p.add_argument("--fold", action="append", default=[], metavar="NAME=SPEC", help="the candidate's scenes fold")
    p.add_argument("--baseline", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--role", choices=("select",), default="select")
    p.add_argument("--check", action="store_true", help="measure the tail's agreement with the protocol's cache")
    p.add_argument("--json", type=Path, help="append each candidate's screen to this JSON-lines file")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    started = time.perf_counter()
    baselines = dict(item.split("=", 1) for item in args.baseline) or {
        "previous": str(ROOT / "runs/baselines/previous.pt"),
        "bundled": str(ROOT / "runs/baselines/bundled.pt"),
    }
    fold_of_baseline = {name: Path(baselines.get("previous", path)) for name, path in baselines.items()}
    pops = protocol.populations(args.role, reviews={})
    features = {name: prefix_features(pop, args.role, extended=name != "pis") for name, pop in pops.items()}
    fold_wanted = [label for label, _, _ in protocol.grid(extended=False)]

    def full_results(preds: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, ConditionResult]]:
        out = {}
        for name, pop in pops.items():
            out[name] = results(preds[name], pop)
            if pop.small is not None:
                out[name + "32"] = protocol.subset(out[name], ~pop.small, name + "32")
        return out

    base_full: dict[str, dict[str, dict[str, ConditionResult]]] = {}
    for name, path in baselines.items():
        preds = {}
        for pop_name, pop in pops.items():
            cached = protocol_predictions(Path(path), pop, args.role)
            if cached is None:
                raise SystemExit(f"{name}: no protocol predictions cached for {pop_name}; run robustness.py first")
            preds[pop_name] = cached
        base_full[name] = full_results(preds)
        fold = protocol_predictions(fold_of_baseline[name], pops["scenes"], args.role)
        assert fold is not None
        base_full[name]["scenes (fold)"] = results({k: fold[k] for k in fold_wanted}, pops["scenes"])
    if args.check:
        for name, path in baselines.items():
            from maskwatch.checkpoint import load_checkpoint

            mine = {n: tail_predictions(load_checkpoint(Path(path)), f) for n, f in features.items()}
            agree = [float((mine[n][k] == base_full[name][n][k].predictions).mean()) for n in pops for k in mine[n]]
            print(f"check {name}: tail vs protocol agreement min {min(agree):.4f} mean {np.mean(agree):.5f}")
    folds = dict(item.split("=", 1) for item in args.fold)
    for item in args.candidate:
        name, spec = item.split("=", 1)
        checkpoint = averaged_state(spec)
        preds = {n: tail_predictions(checkpoint, f) for n, f in features.items()}
        full = full_results(preds)
        if name in folds:
            fold_features = {k: features["scenes"][k] for k in fold_wanted}
            full["scenes (fold)"] = results(
                tail_predictions(averaged_state(folds[name]), fold_features), pops["scenes"]
            )
        line: dict[str, Any] = {"name": name, "spec": spec, "fold": folds.get(name), "baselines": {}}
        summary = {
            pop: {
                "clean": round(full[pop]["clean"].metric("accuracy"), 4),
                "mean": round(float(np.mean([r.metric("accuracy") for k, r in full[pop].items() if k != "clean"
                                             and protocol.GRAY_MODE not in k])), 4),
            }
            for pop in full
        }  # fmt: skip
        line["summary"] = summary
        total_worse = 0
        for base, theirs in base_full.items():
            verdicts = compare(full, theirs, baseline_name=base, rounds=2000)
            worse = [protocol._verdict_text(v) for v in verdicts if v.worse]
            total_worse += len(worse)
            line["baselines"][base] = {"passes": passes(verdicts), "worse": worse, "comparisons": len(verdicts)}
        line["worse_total"] = total_worse
        print(f"\n{name}: {total_worse} cells worse beyond noise ({spec}; fold {folds.get(name)})")
        print("  " + "  ".join(f"{p} {s['clean']:.3f}/{s['mean']:.3f}" for p, s in summary.items()))
        for base, entry in line["baselines"].items():
            print(f"  vs {base}: {'passes' if entry['passes'] else 'fails'}; " + "; ".join(entry["worse"]))
        if args.json:
            with args.json.open("a") as handle:
                handle.write(json.dumps(line) + "\n")
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
