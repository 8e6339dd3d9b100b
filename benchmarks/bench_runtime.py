"""Runtime benchmark: classifier backends side by side, detector, pipeline, memory; INT8 accuracy; ORT options.

    python benchmarks/bench_runtime.py --model runs/a/model.pt --json bench_runtime.json
    python benchmarks/bench_runtime.py --model M --sizes 224,128 --backend torch,onnx,onnx-int8
    python benchmarks/bench_runtime.py --model M --accuracy        # INT8 vs fp32 on faces/test and scene crops
    python benchmarks/bench_runtime.py --model M --accuracy --splits data/splits/scenes   # scene crops of scenes/test
    python benchmarks/bench_runtime.py --model M --options         # ONNX Runtime session options, side by side

Speed: ``maskwatch.bench.run_bench`` (every backend in one process, interleaved round by round; see its
docstring), once per ``--sizes`` entry. The machine's load is recorded with each result (``loadavg_*`` and
``cpu_share``: process CPU time / (wall x threads), 1.0 = the benchmark had the cores to itself).

Accuracy (``--accuracy``): ``maskwatch.evaluate.evaluate_dataset`` with each ONNX backend on faces/test and
on scene face crops (longest side >= 32 px; with ``--splits DIR`` only the scenes of that list's test split),
plus how many predictions differ from fp32. A model with three classes keeps its third class
(mask_weared_incorrect) in the scene crops; the INT8 export is made with the default calibration (a sample of
the checkpoint's training data, every dataset of a multi-dataset run).

Options (``--options``): the fp32 and INT8 exports under several ``session_options`` variants, interleaved;
batch-32 throughput and batch-1 median latency relative to the default options.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.bench import format_table, machine_info, run_bench
from maskwatch.paths import shared_data_dir

OPTION_VARIANTS = {
    "default": {},
    "threads=1": {"threads": 1},
    "opt=extended": {"optimization": "extended"},
    "opt=basic": {"optimization": "basic"},
    "parallel": {"parallel": True},
    "no_mem_arena": {"mem_arena": False},
    "no_mem_pattern": {"mem_pattern": False},
    "spin=off": {"spin": False},
}


def bench_options(model: Path, rounds: int, backends: list[str]) -> dict[str, object]:
    import onnxruntime as ort

    from maskwatch.runtime.base import load_classifier
    from maskwatch.runtime.onnx_backend import PROVIDERS, session_options

    out: dict[str, object] = {}
    for backend in backends:
        path = load_classifier(model, backend=backend).path
        size = load_classifier(path).preprocessing.size
        sessions = {
            k: ort.InferenceSession(str(path), session_options(**v), providers=PROVIDERS)
            for k, v in OPTION_VARIANTS.items()
        }
        x32 = np.random.default_rng(0).standard_normal((32, 3, size, size)).astype(np.float32)
        x1 = x32[:1]
        for s in sessions.values():
            s.run(None, {"input": x32})
            s.run(None, {"input": x1})
        t32: dict[str, list[float]] = {k: [] for k in sessions}
        t1: dict[str, list[float]] = {k: [] for k in sessions}
        names = list(sessions)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                s = sessions[name]
                start = time.perf_counter()
                s.run(None, {"input": x32})
                t32[name].append(time.perf_counter() - start)
                single = []
                for _ in range(10):
                    start = time.perf_counter()
                    s.run(None, {"input": x1})
                    single.append(time.perf_counter() - start)
                t1[name].append(float(np.median(single)))
        threads = sessions["default"].get_session_options().intra_op_num_threads
        share = (time.process_time() - cpu0) / ((time.perf_counter() - wall0) * threads)
        rows = {}
        for name in names:
            rows[name] = {
                "throughput_ips": round(32 / statistics.median(t32[name]), 1),
                "speed_vs_default": round(statistics.median(b / a for a, b in zip(t32[name], t32["default"])), 3),
                "latency_p50_ms": round(1000 * statistics.median(t1[name]), 2),
                "latency_speed_vs_default": round(statistics.median(b / a for a, b in zip(t1[name], t1["default"])), 3),
            }
            print(
                f"{backend:9s} {name:15s} b32 {rows[name]['throughput_ips']:7.1f} img/s "
                f"(x{rows[name]['speed_vs_default']:.2f})  b1 p50 {rows[name]['latency_p50_ms']:7.2f} ms "
                f"(x{rows[name]['latency_speed_vs_default']:.2f})",
                flush=True,
            )
        out[backend] = {"variants": rows, "cpu_share": round(share, 3), "rounds": rounds}
    return out


def accuracy_sets(splits: Path | None = None) -> dict[str, dict[str, Any]]:
    """``evaluate_dataset`` keyword arguments of the accuracy sets: faces/test and scene face crops >= 32 px,
    the split lists' test split when ``splits`` is given (a model trained on scene crops), else every scene."""
    data = shared_data_dir()
    sets: dict[str, dict[str, Any]] = {"faces_test": {"data": data / "faces", "split": "test"}}
    scenes = {"data": data / "scenes", "crops": True, "min_face": 32}
    if splits is not None:
        sets["scene_crops_32_test"] = {**scenes, "split_lists": splits, "split": "test"}
    else:
        sets["scene_crops_32"] = scenes
    return sets


def accuracy(variants: dict[str, tuple[Path, str]], sets: dict[str, dict[str, Any]]) -> dict[str, object]:
    """Each variant (name -> model file, backend) on each set; the first variant is the reference the others'
    deltas (points) and differing predictions are counted against."""
    from maskwatch.evaluate import evaluate_dataset

    out: dict[str, dict[str, object]] = {}
    for set_name, kwargs in sets.items():
        reference = None
        for name, (model, backend) in variants.items():
            kw = dict(kwargs)
            evaluation = evaluate_dataset(model, kw.pop("data"), backend=backend, **kw)
            report = evaluation.report
            predicted = evaluation.probabilities.argmax(1)
            row = {
                "n": report["n_images"],
                "accuracy": round(report["accuracy"], 4),
                "macro_f1": round(report["macro_f1"], 4),
                "recall": {c: round(v["recall"], 4) for c, v in report["per_class"].items()},
            }
            if reference is None:
                reference = (name, predicted, report)
            else:
                row["differs_from_" + reference[0]] = int((predicted != reference[1]).sum())
                row["accuracy_delta_points"] = round(100 * (report["accuracy"] - reference[2]["accuracy"]), 2)
                row["macro_f1_delta_points"] = round(100 * (report["macro_f1"] - reference[2]["macro_f1"]), 2)
            out.setdefault(set_name, {})[name] = row
            print(f"{set_name:20s} {name:10s} {json.dumps(row)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="checkpoint (.pt); default: the bundled model")
    p.add_argument("--backend", default="torch,onnx,onnx-int8", help="comma-separated backends")
    p.add_argument("--sizes", default="", help="comma-separated input sizes (default: the model's own)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--scenes", type=int, default=40, help="scene images for detector/pipeline (0: skip)")
    p.add_argument("--pipeline-preset", default="fast", help="detector views of the pipeline timing")
    p.add_argument("--accuracy", action="store_true", help="INT8 vs fp32 accuracy instead of speed")
    p.add_argument(
        "--splits",
        type=Path,
        default=None,
        help="--accuracy: scene crops of this split-list folder's test split (e.g. data/splits/scenes, "
        "for a model trained on scene crops) instead of every scene",
    )
    p.add_argument("--options", action="store_true", help="ONNX Runtime session options instead of speed")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    if args.model is None:
        from maskwatch.bundled import default_model_path

        args.model = default_model_path()
    backends = [b for b in args.backend.split(",") if b]
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    if args.accuracy:
        chosen = [b for b in backends if b != "torch"] or ["onnx", "onnx-int8"]
        sets = accuracy_sets(args.splits)
        result: dict[str, object] = {
            "accuracy": accuracy({b: (args.model, b) for b in chosen}, sets),
            "sets": {k: {n: str(v) for n, v in kw.items()} for k, kw in sets.items()},
        }
    elif args.options:
        result = {"options": bench_options(args.model, args.rounds, [b for b in backends if b != "torch"])}
    else:
        runs = []
        for size in [int(s) for s in args.sizes.split(",") if s] or [None]:
            r = run_bench(
                args.model,
                progress=lambda m: print(m, file=sys.stderr, flush=True),
                backends=backends,
                size=size,
                rounds=args.rounds,
                threads=args.threads,
                scenes=args.scenes,
                faces_dir=shared_data_dir() / "faces" / "test",
                scenes_dir=shared_data_dir() / "scenes" / "images",
                pipeline_preset=args.pipeline_preset,
            )
            print(format_table(r), flush=True)
            runs.append(r)
        result = runs[0] if len(runs) == 1 else {"runs": runs}
    result = {"started": started, "model": str(args.model), **result}
    result.setdefault("machine", machine_info())
    machine = result["machine"]
    if isinstance(machine, dict) and hasattr(os, "getloadavg"):
        machine.setdefault("loadavg_after", list(os.getloadavg()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
