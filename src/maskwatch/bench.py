"""``maskwatch bench``: classifier backends side by side, the face detector and the whole pipeline.

    >>> result = run_bench("model.pt", backends=["torch", "onnx", "onnx-int8"], size=224)   # doctest: +SKIP
    >>> result["classifier"]["onnx"]["throughput_ips"], result["ratios"]["onnx/torch"]      # doctest: +SKIP

Method (every number of one run comes from the same process, interleaved, so a busy machine slows all
backends alike and the ratios stay meaningful):

* every backend is loaded and warmed up first (a few batches);
* then ``rounds`` rounds; each round runs every backend in turn (order rotated per round): one batch of
  ``batch`` preprocessed faces through the engine alone (``throughput_ips``: the engine's speed, the figure
  the design guide quotes), one batch through ``predict_proba`` from RGB crops of various sizes
  (``throughput_e2e_ips``: resize and normalisation included) and ``latency_iters`` single faces through
  ``predict_proba`` (``latency_p50_ms``/``latency_p95_ms``: what one face costs a caller);
* ``ratios`` are medians of the per-round ratios (e.g. ``onnx/torch``), robust to load that changes
  between rounds;
* the detector (CenterFace, ONNX Runtime, one run at 640 px) is timed per image on the given scene images
  (``detector_ms``: mean; decoding excluded), and the scene pipeline (``maskwatch.detection.pipeline``
  with the ``fast`` preset: detect, crop each face, classify all crops of an image in one batch) in
  images per second per backend, interleaved image by image (``pipeline_ips``: the default
  backend's, ``onnx``);
* ``machine`` records CPU model and flags, cores, threads, library versions, the load average before and
  after, and ``cpu_share``: process CPU time / (wall time x threads) during the classifier rounds; well
  below 1 means other processes took CPU time from the benchmark;
* memory: ``isolated_peak_rss_mb``: peak RSS of a fresh process that loads one backend alone and
  classifies one batch (what a deployment of that backend needs, libraries included); also the peak RSS
  of the benchmark process and the RSS growth when each backend was loaded in it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.preprocess import Preprocessing, to_batch
from maskwatch.runtime.base import BACKENDS, Classifier

Progress = Callable[[str], None]

__all__ = [
    "CLASSIFIER_BACKENDS",
    "bench_classifiers",
    "bench_detector",
    "bench_pipelines",
    "machine_info",
    "memory_probe",
    "run_bench",
    "timing_warnings",
]

CLASSIFIER_BACKENDS = tuple(b for b in BACKENDS if b != "auto")
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


# --------------------------------------------------------------------------------------------------------
# machine and memory


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), list[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                present = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FLAGS if f in present]
    except OSError:
        pass
    return model, flags


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions (read from package metadata: nothing heavy is imported) and load."""
    from maskwatch.runtime.onnx_backend import physical_cores

    model, flags = _cpuinfo()
    versions = {
        p: _version(p) for p in ("maskwatch", "onnxruntime", "numpy", "opencv-python-headless", "torch", "torchvision")
    }
    return {
        "cpu": model,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {k: v for k, v in versions.items() if v},
        "loadavg_before": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def rss_mb() -> float:
    """Current resident set size (Linux /proc; falls back to the peak elsewhere)."""
    current = _proc_status_mb("VmRSS")
    return current if current is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process. Linux: ``VmHWM`` (``ru_maxrss`` would also count the
    memory of the parent that forked a subprocess before its exec)."""
    peak = _proc_status_mb("VmHWM")
    if peak is not None:
        return peak
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if platform.system() == "Darwin" else maxrss / 1024


# --------------------------------------------------------------------------------------------------------
# inputs


def face_images(
    n: int = 64, seed: int = 0, folder: str | os.PathLike[str] | None = None
) -> tuple[list[np.ndarray], str]:
    """``n`` face crops from ``folder`` (searched recursively, a random sample; unreadable files are passed
    over) or, without a folder or when it holds no readable image, random images of assorted sizes; plus
    where they came from."""
    rng = np.random.default_rng(seed)
    if folder is not None and Path(folder).is_dir():
        from maskwatch.data.images import BadImageError, has_image_extension, load_rgb

        root = Path(folder)
        paths = sorted(p for p in root.rglob("*") if p.is_file() and has_image_extension(p))
        images = []
        for i in rng.permutation(len(paths))[: n * 2]:
            try:
                images.append(np.asarray(load_rgb(paths[int(i)])))
            except BadImageError:
                continue
            if len(images) == n:
                break
        if images:
            return images, f"{len(images)} faces from {root}"
    sizes = rng.integers(24, 320, size=(n, 2))
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in sizes], f"{n} random images"


def scene_images(folder: str | os.PathLike[str] | None, n: int = 40) -> tuple[list[np.ndarray], str]:
    """The first ``n`` ``*.jpg`` scene images of ``folder`` (RGB), or an empty list without a folder."""
    import cv2

    if folder is None or not Path(folder).is_dir():
        return [], "no scene folder"
    paths = sorted(Path(folder).glob("*.jpg"))[:n]
    images = []
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is not None:
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return images, f"{len(images)} scenes from {folder}"


# --------------------------------------------------------------------------------------------------------
# loading backends


def load_backends(
    model: str | os.PathLike[str],
    backends: Sequence[str],
    *,
    size: int | None = None,
    threads: int | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, Classifier], dict[str, float]]:
    """Open ``model`` with each backend; ``size`` other than the model's own runs the network at that
    input size (exported into ``workdir``). Returns the classifiers and the RSS growth of each load."""
    from maskwatch.runtime.base import load_classifier

    model = Path(model)
    say = progress or (lambda _m: None)
    classifiers: dict[str, Classifier] = {}
    memory: dict[str, float] = {}
    onnx_options: dict[str, Any] = {"threads": threads} if threads else {}
    unknown = [b for b in backends if b not in CLASSIFIER_BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; choose from {', '.join(CLASSIFIER_BACKENDS)}")
    if model.suffix.lower() == ".onnx":  # an exported file runs with its own backend only
        before = rss_mb()
        classifier = load_classifier(model, **onnx_options)
        if size and size != classifier.preprocessing.size:
            raise ValueError(
                f"{model} is an ONNX file made for {classifier.preprocessing.size} px; "
                "give the .pt checkpoint to benchmark another size"
            )
        say(f"{model} is an exported file: benchmarking its own backend ({classifier.backend}) only")
        return {classifier.backend: classifier}, {classifier.backend: round(rss_mb() - before, 1)}
    for backend in backends:
        before = rss_mb()
        say(f"loading {backend}")
        classifier = _load_checkpoint_backend(model, backend, size, onnx_options, workdir)
        if backend == "torch" and threads:
            import torch

            torch.set_num_threads(threads)
        classifiers[backend] = classifier
        memory[backend] = round(rss_mb() - before, 1)
    return classifiers, memory


def _load_checkpoint_backend(
    model: Path, backend: str, size: int | None, onnx_options: dict[str, Any], workdir: str | os.PathLike[str] | None
) -> Classifier:
    from maskwatch.runtime.base import load_classifier

    if backend == "torch":
        from maskwatch.checkpoint import build_model, load_checkpoint
        from maskwatch.runtime.torch_backend import TorchClassifier

        checkpoint = load_checkpoint(model)
        prep = Preprocessing.from_dict(checkpoint["preprocessing"])
        if size:
            prep = Preprocessing(size=size, mean=prep.mean, std=prep.std, resize=prep.resize)
        return TorchClassifier(build_model(checkpoint), checkpoint["classes"], prep, device="cpu")
    probe = load_classifier(model, backend=backend, **onnx_options)
    if not size or size == probe.preprocessing.size:
        return probe
    from maskwatch.runtime.export import export_onnx
    from maskwatch.runtime.onnx_backend import OnnxClassifier

    out = Path(workdir or tempfile.mkdtemp(prefix="maskwatch-bench-")) / f"{model.stem}-{backend}-{size}.onnx"
    export_onnx(model, out, int8=backend == "onnx-int8", image_size=size)
    return OnnxClassifier(out, **onnx_options)


# --------------------------------------------------------------------------------------------------------
# measurements


def _percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values_ms, dtype=np.float64)
    return {
        "mean": round(float(array.mean()), 3),
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
    }


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_classifiers(
    classifiers: dict[str, Classifier],
    images: Sequence[np.ndarray],
    *,
    batch: int = 32,
    rounds: int = 7,
    latency_iters: int = 20,
    latency_budget_s: float = 2.0,
    warmup: int = 2,
    progress: Progress | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Interleaved rounds over all backends (see the module doc). Returns per-backend results, the median
    per-round throughput ratios between backends, and the process CPU share during the rounds."""
    say = progress or (lambda _m: None)
    names = list(classifiers)
    crops = [images[i % len(images)] for i in range(batch)]
    batches = {name: to_batch(crops, clf.preprocessing) for name, clf in classifiers.items()}
    for name, clf in classifiers.items():
        say(f"warm-up {name}")
        for _ in range(warmup):
            clf._logits(batches[name])
            clf.predict_proba(crops[:1])
    engine: dict[str, list[float]] = {n: [] for n in names}
    e2e: dict[str, list[float]] = {n: [] for n in names}
    single: dict[str, list[float]] = {n: [] for n in names}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}")
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            clf = classifiers[name]
            engine[name].append(_time(partial(clf._logits, batches[name])))
            e2e[name].append(_time(partial(clf.predict_proba, crops)))
            started = time.perf_counter()
            for i in range(latency_iters):
                face = images[(r * latency_iters + i) % len(images)]
                single[name].append(1000 * _time(partial(clf.predict_proba, [face])))
                if i >= 2 and time.perf_counter() - started > latency_budget_s:
                    break  # a slow backend on a busy machine: enough samples for this round
    wall = time.perf_counter() - wall0
    threads = max(_threads_of(c) for c in classifiers.values())
    cpu_share = (time.process_time() - cpu0) / (wall * threads)
    results = {}
    for name in names:
        lat = _percentiles(single[name])
        results[name] = {
            "throughput_ips": round(batch / statistics.median(engine[name]), 1),
            "throughput_e2e_ips": round(batch / statistics.median(e2e[name]), 1),
            "latency_p50_ms": lat["p50"],
            "latency_p95_ms": lat["p95"],
            "latency_mean_ms": lat["mean"],
            "threads": _threads_of(classifiers[name]),
        }
    ratios = {}
    for a in names:
        for b in names:
            if a != b:
                per_round = [tb / ta for ta, tb in zip(engine[a], engine[b])]
                ratios[f"{a}/{b}"] = round(statistics.median(per_round), 3)
    return results, ratios, round(cpu_share, 3)


def timing_warnings(results: dict[str, dict[str, float]], cpu_share: float) -> list[str]:
    """Figures that cannot both be right: end to end (preprocessing included) faster than the network alone
    is the machine's noise, not a speed; say so instead of printing it as a result."""
    warnings = []
    for name, row in results.items():
        if row["throughput_e2e_ips"] > row["throughput_ips"]:
            warnings.append(
                f"{name}: end to end ({row['throughput_e2e_ips']:.1f} img/s) measured faster than the engine alone "
                f"({row['throughput_ips']:.1f} img/s), which is impossible: the machine was too busy for these "
                f"timings (cpu_share {cpu_share}); rerun on an idle machine or with more --rounds"
            )
    return warnings


def _threads_of(classifier: Classifier) -> int:
    threads = getattr(classifier, "threads", None)
    if threads:
        return int(threads)
    if getattr(classifier, "backend", "") == "torch":
        import torch

        return torch.get_num_threads()
    return 1


def bench_detector(
    detector: Any, images: Sequence[np.ndarray], *, warmup: int = 3
) -> tuple[dict[str, float], list[Any]]:
    """Per-image detection latency (ms) and the detections, for the pipeline."""
    for image in images[:warmup]:
        detector.detect(image)
    times, detections = [], []
    for image in images:
        start = time.perf_counter()
        detections.append(detector.detect(image))
        times.append(1000 * (time.perf_counter() - start))
    return _percentiles(times), detections


def bench_pipelines(
    classifiers: dict[str, Classifier], images: Sequence[np.ndarray], preset: str = "fast", threads: int | None = None
) -> dict[str, dict[str, Any]]:
    """Images per second through the scene pipeline, per classifier backend, interleaved image by image
    (every backend processes image 1, then image 2, ...; so load changes hit all alike).

    The pipeline is ``maskwatch.detection.pipeline.MaskDetector`` with the detector views of ``preset``
    (``fast``: one CenterFace run at 640 px), with non-spinning ONNX sessions as ``MaskDetector.load``
    builds them."""
    from maskwatch.detection.centerface import CenterFaceDetector
    from maskwatch.detection.pipeline import MaskDetector
    from maskwatch.runtime.onnx_backend import OnnxClassifier

    runners: dict[str, Callable[[np.ndarray], int]] = {}
    # as MaskDetector.load builds them: the two ONNX sessions take turns, so neither spins
    finder = CenterFaceDetector(score_threshold=0.1, max_side=None, box_adjust=None, threads=threads or 2,
                                spin=False)  # fmt: skip
    for name, clf in classifiers.items():
        if isinstance(clf, OnnxClassifier) and clf.path is not None:
            clf = OnnxClassifier(clf.path, threads=clf.threads, spin=False, batch_size=clf.batch_size)
        pipeline = MaskDetector(clf, finder, scales=preset)
        runners[name] = partial(_count_faces, pipeline)
    how = f"maskwatch.detection.pipeline.MaskDetector, preset {preset}"
    for run in runners.values():
        run(images[0])  # warm-up
    seconds = dict.fromkeys(runners, 0.0)
    faces = dict.fromkeys(runners, 0)
    for image in images:
        for name, run in runners.items():
            start = time.perf_counter()
            faces[name] += run(image)
            seconds[name] += time.perf_counter() - start
    return {
        name: {
            "images_per_s": round(len(images) / seconds[name], 2),
            "faces_per_s": round(faces[name] / seconds[name], 1),
            "faces": faces[name],
            "images": len(images),
            "pipeline": how,
        }
        for name in runners
    }


def _count_faces(pipeline: Any, image: np.ndarray) -> int:
    return len(pipeline.detect(image).faces)


def memory_probe(
    classifier: Classifier, model: str | os.PathLike[str], batch: int = 32, timeout: float = 300
) -> float | None:
    """Peak RSS (MB) of a fresh Python process that loads this backend alone and classifies one batch: the
    memory a deployment of it needs (libraries included). None if the probe fails."""
    import json
    import subprocess
    import sys

    size = classifier.preprocessing.size
    if classifier.backend == "torch":
        spec = {"kind": "torch", "model": str(model), "size": size}
    else:
        spec = {
            "kind": "onnx",
            "model": str(getattr(classifier, "path", "")),
            "size": size,
            "threads": getattr(classifier, "threads", None),
        }
    code = f"from maskwatch.bench import _probe; _probe({json.dumps(spec)!r}, {batch})"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
        return round(float(out.stdout.strip().splitlines()[-1]), 1) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def _probe(spec_json: str, batch: int) -> None:
    import json

    spec = json.loads(spec_json)
    if spec["kind"] == "torch":
        from maskwatch.checkpoint import build_model, load_checkpoint
        from maskwatch.runtime.torch_backend import TorchClassifier

        checkpoint = load_checkpoint(spec["model"])
        prep = Preprocessing.from_dict(checkpoint["preprocessing"])
        prep = Preprocessing(size=spec["size"], mean=prep.mean, std=prep.std, resize=prep.resize)
        classifier: Classifier = TorchClassifier(build_model(checkpoint), checkpoint["classes"], prep, device="cpu")
    else:
        from maskwatch.runtime.onnx_backend import OnnxClassifier

        classifier = OnnxClassifier(spec["model"], threads=spec["threads"])
    rng = np.random.default_rng(0)
    classifier.predict_proba([rng.integers(0, 256, (160, 140, 3), dtype=np.uint8) for _ in range(batch)])
    print(round(peak_rss_mb(), 1))


# --------------------------------------------------------------------------------------------------------
# everything


@dataclass
class BenchSettings:
    backends: Sequence[str] = ("torch", "onnx", "onnx-int8")
    size: int | None = None
    batch: int = 32
    rounds: int = 7
    latency_iters: int = 20
    threads: int | None = None
    faces_dir: str | os.PathLike[str] | None = None  # face crops for the classifier; None: random images
    scenes_dir: str | os.PathLike[str] | None = None  # scene images for detector and pipeline; None: skipped
    scenes: int = 40  # how many of them (0: skip the detector and pipeline timings)
    memory: bool = True
    pipeline_preset: str = "fast"


def run_bench(
    model: str | os.PathLike[str] | None = None, progress: Progress | None = None, **settings: Any
) -> dict[str, Any]:
    """Run the whole benchmark (see the module doc) and return the JSON-ready result. Inputs come from
    the caller (``faces_dir``, ``scenes_dir``): nothing is read from a fixed data folder."""
    from maskwatch.runtime.onnx_backend import physical_cores

    cfg = BenchSettings(**settings)
    if model is None:
        from maskwatch.bundled import default_model_path

        model = default_model_path()
    say = progress or (lambda _m: None)
    machine = machine_info()
    threads = cfg.threads or physical_cores()
    with tempfile.TemporaryDirectory(prefix="maskwatch-bench-") as workdir:
        classifiers, load_memory = load_backends(
            model, cfg.backends, size=cfg.size, threads=threads, workdir=workdir, progress=say
        )
        faces, faces_source = face_images(folder=cfg.faces_dir)
        size = next(iter(classifiers.values())).preprocessing.size
        results, ratios, cpu_share = bench_classifiers(
            classifiers, faces, batch=cfg.batch, rounds=cfg.rounds, latency_iters=cfg.latency_iters, progress=say
        )
        result: dict[str, Any] = {
            "model": str(model),
            "size": size,
            "batch": cfg.batch,
            "rounds": cfg.rounds,
            "faces": faces_source,
            "classifier": results,
            "ratios": ratios,
            "warnings": timing_warnings(results, cpu_share),
            "detector_ms": None,
            "pipeline_ips": None,
        }
        scenes, scenes_source = scene_images(cfg.scenes_dir, cfg.scenes) if cfg.scenes > 0 else ([], "")
        detector = _detector(threads) if scenes else None
        if detector is not None:
            say("detector")
            latency, _ = bench_detector(detector, scenes)
            result["detector_ms"] = latency["mean"]
            result["detector"] = {"latency_ms": latency, "images": scenes_source, "model": repr(detector)}
            say("pipeline")
            pipeline = bench_pipelines(classifiers, scenes, preset=cfg.pipeline_preset, threads=threads)
            main = "onnx" if "onnx" in pipeline else next(iter(pipeline))
            result["pipeline"] = pipeline
            result["pipeline_backend"] = main
            result["pipeline_ips"] = pipeline[main]["images_per_s"]
        elif cfg.scenes > 0:
            why = "CenterFace model not available" if scenes else f"no scene images ({scenes_source})"
            result["detector"] = {"skipped": why}
        say("memory")
        isolated = (
            {name: memory_probe(clf, model, cfg.batch) for name, clf in classifiers.items()} if cfg.memory else {}
        )
    machine["threads"] = threads
    machine["cpu_share"] = cpu_share
    machine["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["memory"] = {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_rss_growth_mb": load_memory,
        "isolated_peak_rss_mb": isolated,
    }
    result["machine"] = machine
    return result


def _detector(threads: int) -> Any:
    from maskwatch.detection.centerface import CenterFaceDetector, ModelNotFoundError

    try:
        return CenterFaceDetector(threads=threads)
    except ModelNotFoundError:
        return None


def format_table(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`run_bench`'s result."""
    lines = [
        f"classifier at {result['size']} px, batch {result['batch']}, {result['machine']['threads']} threads "
        f"({result['machine']['cpu']}; cpu_share {result['machine']['cpu_share']})",
        f"{'backend':<10} {'engine img/s':>12} {'e2e img/s':>10} {'b1 p50 ms':>10} {'b1 p95 ms':>10} {'alone MB':>9}",
    ]
    for name, row in result["classifier"].items():
        alone = result["memory"]["isolated_peak_rss_mb"].get(name)
        lines.append(
            f"{name:<10} {row['throughput_ips']:>12.1f} {row['throughput_e2e_ips']:>10.1f}"
            f"{'!' if row['throughput_e2e_ips'] > row['throughput_ips'] else ' '}"
            f"{row['latency_p50_ms']:>10.2f} {row['latency_p95_ms']:>10.2f} "
            f"{alone if alone is not None else float('nan'):>9.0f}"
        )
    if result["ratios"]:
        lines.append(
            "ratios (median per round, engine throughput): "
            + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items() if k.split("/")[0] != "torch")
        )
    if result.get("detector_ms") is not None:
        det = result["detector"]["latency_ms"]
        lines.append(
            f"detector: mean {det['mean']:.1f} ms, p50 {det['p50']:.1f}, p95 {det['p95']:.1f} "
            f"({result['detector']['images']})"
        )
        lines.append(
            "pipeline images/s: " + ", ".join(f"{k} {v['images_per_s']:.1f}" for k, v in result["pipeline"].items())
        )
    lines.append(f"peak RSS {result['memory']['peak_rss_mb']:.0f} MB")
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
