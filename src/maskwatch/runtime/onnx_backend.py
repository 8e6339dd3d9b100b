"""ONNX Runtime inference backend (fp32 and INT8), torch-free: onnxruntime + numpy only.

An exported file is self-contained: :func:`maskwatch.runtime.export.export_onnx` writes the class names,
the preprocessing, the face crop margin, the compliant classes and the temperature (see
:mod:`maskwatch.runtime.types`), the
architecture, the maskwatch version, the precision and the sha256 of the source
checkpoint into the ONNX ``metadata_props``, and this module reads them back through ONNX Runtime, so the
``.onnx`` file alone is enough to classify faces:

    >>> from maskwatch.runtime.onnx_backend import OnnxClassifier          # doctest: +SKIP
    >>> clf = OnnxClassifier("maskwatch-mobilenet_v2.onnx")                # doctest: +SKIP
    >>> clf.predict([face_rgb])                                            # doctest: +SKIP
    [('with_mask', 0.998)]

Session options (see :func:`session_options`). Measured with ``benchmarks/bench_runtime.py --options``
(MobileNetV2 224 px, 2-core Xeon with AVX-512 VNNI/AMX, ONNX Runtime 1.32, machine partly busy; batch-32
throughput relative to these defaults, each variant interleaved with the defaults in one run):

* ``providers=["CPUExecutionProvider"]`` named explicitly (no silent GPU/TensorRT probing, no warning).
* ``intra_op_num_threads`` = physical cores available to this process (affinity mask and cgroup CPU
  quota respected, see :func:`physical_cores`): 1 thread instead of 2 gave 0.61x. Hyper-threads share a
  core's vector units, so more threads than cores only add synchronisation.
* ``graph_optimization_level = ORT_ENABLE_ALL``: ``extended`` (no NCHWc layout transformer) gave 0.42x
  fp32 / 0.57x INT8; ``basic`` (INT8's QDQ pairs then run as float, not fused into integer kernels) gave
  0.36x / 0.18x.
* ``execution_mode = ORT_SEQUENTIAL``, ``inter_op_num_threads = 1``: ORT_PARALLEL gave 0.47-0.61x; a CNN
  is a chain of operators, there is nothing to run side by side.
* ``enable_cpu_mem_arena`` and ``enable_mem_pattern`` on (ONNX Runtime's defaults): turning the arena off
  gave 0.62-0.67x at batch 32, the memory pattern off 0.91-0.94x.
* One CPU memory arena shared by every session of the process (``session.use_env_allocators``, an arena
  registered once with ONNX Runtime's environment) instead of one per session: a session's arena keeps the
  peak of its largest run, so the face detector's and the classifier's peaks added up. Sharing cut the peak
  resident memory of ``maskwatch agent`` with one 640x480 camera from 248 to 212 MB
  (``benchmarks/bench_memory.py``, BENCHMARKS.md); ``shared_arena=False`` gives a session its own.
* ``session.intra_op.allow_spinning``: ONNX Runtime's default (on). On an idle machine spinning off cost
  about 7 %; on a machine shared with other CPU-heavy processes it *halved* batch-1 latency, and one
  thread beat two by 1.3x: there, pass ``spin=False`` (and/or ``threads=1``). Two sessions in one
  process (the scene pipeline's face detector and classifier, called in turn) are such a case: each
  session's idle threads spin while the other one works, which made both about 2x slower on 2 cores
  (see :meth:`maskwatch.detection.pipeline.MaskDetector.load`).

Every option can be overridden with keyword arguments of :func:`session_options` or a ready
``onnxruntime.SessionOptions`` passed as ``options=``. Every ONNX Runtime session of maskwatch (this
classifier, the CenterFace detector, training's frozen-feature extractor, Grad-CAM's) is made by
:func:`create_session`, so these choices hold everywhere.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maskwatch.core.contract import (
    META_CLASSES,
    META_COMPLIANT_CLASSES,
    META_CROP_MARGIN,
    META_PRECISION,
    META_PREPROCESSING,
    META_TEMPERATURE,
    model_fields,
)
from maskwatch.preprocess import Preprocessing
from maskwatch.runtime.types import Classifier

__all__ = [
    "OnnxClassifier",
    "create_session",
    "onnxruntime_available",
    "physical_cores",
    "prefer_onnx",
    "read_metadata",
    "session_options",
]

PROVIDERS = ["CPUExecutionProvider"]


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` can be imported (without importing anything heavier)."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def prefer_onnx(options: Mapping[str, Any] | None = None) -> bool:
    """Backend ``auto`` for a checkpoint: ONNX Runtime unless it is missing or a GPU is asked for or present
    (torch on a GPU beats ONNX Runtime on the CPU). torch is imported only when an NVIDIA driver is present,
    so a cached export runs without importing torch at all."""
    import importlib.util
    import sys

    if not onnxruntime_available():
        return False
    device = (options or {}).get("device")
    if device is not None:
        return str(device).startswith("cpu")
    nvidia = Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()
    if "torch" in sys.modules or (nvidia and importlib.util.find_spec("torch") is not None):
        import torch

        return not torch.cuda.is_available()
    return True


def _cgroup_cpu_limit() -> int | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, rounded up; None if unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


def physical_cores() -> int:
    """Physical cores this process may run on: distinct (package, core) pairs of the CPUs in its affinity
    mask (Linux sysfs), capped by a cgroup CPU quota; falls back to the logical CPU count."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            cores = set()
            break
    count = len(cores) or len(cpus) or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def session_options(
    threads: int | None = None,
    *,
    optimization: str = "all",
    parallel: bool = False,
    mem_arena: bool = True,
    mem_pattern: bool = True,
    shared_arena: bool = True,
    spin: bool | None = None,
    optimized_model_path: str | os.PathLike[str] | None = None,
):
    """``onnxruntime.SessionOptions`` tuned for CPU inference (the choices are explained in the module doc).

    Args:
        threads: intra-op threads; default :func:`physical_cores`.
        optimization: ``disable`` | ``basic`` | ``extended`` | ``all`` graph optimisations.
        parallel: run independent operators in parallel (ORT_PARALLEL); no gain for chain-shaped CNNs.
        mem_arena, mem_pattern: ONNX Runtime's CPU memory arena and memory-pattern planning.
        shared_arena: use the process's one shared arena (see the module doc) rather than one of its own.
        spin: allow intra-op worker threads to busy-wait; None keeps ONNX Runtime's default (on).
        optimized_model_path: also write the optimised graph there (for inspection).
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {sorted(levels)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads) if threads else physical_cores()
    options.inter_op_num_threads = 1 if not parallel else options.intra_op_num_threads
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.enable_cpu_mem_arena = bool(mem_arena)
    options.enable_mem_pattern = bool(mem_pattern)
    if mem_arena and shared_arena and _shared_arena():
        options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3  # errors only; ORT's warnings about unused initializers etc. are noise here
    if spin is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    return options


_shared_arena_lock = threading.Lock()
_shared_arena_state: list[bool] = []  # [registered?] once tried


def _shared_arena() -> bool:
    """Register one CPU arena with ONNX Runtime's environment (once per process); whether it is there."""
    with _shared_arena_lock:
        if not _shared_arena_state:
            import onnxruntime as ort

            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max_mem 0: no limit; strategy 0: grow by powers of two (kSameAsRequested measured worse:
                # 250 vs 212 MB); initial chunk and dead bytes per chunk: ONNX Runtime's defaults (-1)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 0, -1, -1))
                _shared_arena_state.append(True)
            except Exception as exc:  # an onnxruntime that cannot (its own exception types): one arena per session
                logging.getLogger("maskwatch").debug("no shared ONNX Runtime arena: %s", exc)
                _shared_arena_state.append(False)
        return _shared_arena_state[0]


def create_session(
    model: str | os.PathLike[str] | bytes,
    *,
    threads: int | None = None,
    spin: bool | None = None,
    options: Any = None,
    **tuning: Any,
):
    """An ``onnxruntime.InferenceSession`` of a model file or its bytes on the CPU provider, named explicitly:
    the one place maskwatch makes sessions. ``threads``, ``spin`` and ``tuning`` (``optimization``, ...) go
    to :func:`session_options`; a ready ``options`` replaces them."""
    import onnxruntime as ort

    source = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else str(model)
    if options is None:
        options = session_options(threads, spin=spin, **tuning)
    return ort.InferenceSession(source, options, providers=PROVIDERS)


def _metadata_of(session) -> dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The maskwatch metadata of an exported ONNX file, JSON values decoded (classes, preprocessing)."""
    session = create_session(path, threads=1, optimization="disable")
    return _decode_metadata(_metadata_of(session))


def _decode_metadata(raw: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict(raw)
    for key in (META_CLASSES, META_PREPROCESSING, META_COMPLIANT_CLASSES, META_CROP_MARGIN, META_TEMPERATURE):
        if key in raw:
            try:
                out[key] = json.loads(raw[key])
            except json.JSONDecodeError as exc:
                raise ValueError(f"ONNX metadata {key!r} is not valid JSON: {raw[key][:80]!r}") from exc
    return out


class OnnxClassifier(Classifier):
    """A face-mask classifier run by ONNX Runtime on the CPU.

    Args:
        model: path of an ``.onnx`` file exported by maskwatch (or its bytes).
        threads: intra-op threads (default: physical cores).
        spin: let idle intra-op threads busy-wait (None: ONNX Runtime's default, on). Pass False when
            other CPU-heavy work shares the cores, e.g. a second ONNX session in the same process.
        batch_size: faces per ``session.run`` in :meth:`predict_proba`.
        options: a ready ``onnxruntime.SessionOptions`` (overrides ``threads``).
        classes, preprocessing: only needed for ONNX files that lack maskwatch metadata.
        device: accepted for symmetry with the torch backend; only ``cpu`` is valid.

    ``backend`` is ``onnx`` or ``onnx-int8``, from the file's ``precision`` metadata. The graph's output is
    the uncalibrated logits; :meth:`predict_proba` divides them by the file's ``temperature``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        *,
        threads: int | None = None,
        spin: bool | None = None,
        batch_size: int = 32,
        options: Any = None,
        classes: Sequence[str] | None = None,
        preprocessing: Preprocessing | None = None,
        device: str | None = None,
    ):
        if device is not None and not str(device).startswith("cpu"):
            raise ValueError(f"the ONNX backends run on the CPU; use backend torch for device {device!r}")
        self.path = None if isinstance(model, bytes) else Path(model)
        if self.path is not None and not self.path.is_file():
            raise FileNotFoundError(f"model file {self.path} does not exist")
        source = model if isinstance(model, bytes) else str(self.path)
        try:
            self.session = create_session(source, threads=threads, spin=spin, options=options)
        except Exception as exc:
            raise ValueError(f"{self.path or 'model bytes'} is not a readable ONNX model ({exc})") from exc
        self.metadata = _decode_metadata(_metadata_of(self.session))
        classes = classes if classes is not None else self.metadata.get(META_CLASSES)
        prep_dict = self.metadata.get(META_PREPROCESSING)
        if preprocessing is None and prep_dict is not None:
            preprocessing = Preprocessing.from_dict(prep_dict)
        if classes is None or preprocessing is None:
            raise ValueError(
                f"{self.path or 'the ONNX model'} has no maskwatch metadata (classes, preprocessing); export it with "
                "`maskwatch export` or pass classes= and preprocessing="
            )
        super().__init__(classes, preprocessing, batch_size, **model_fields(self.metadata, classes))
        self.backend = "onnx-int8" if self.metadata.get(META_PRECISION) == "int8" else "onnx"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"expected a model with one input, got {[i.name for i in inputs]}")
        self._input = inputs[0].name
        self._output = outputs[0].name
        n_out = outputs[0].shape[-1] if outputs[0].shape else None
        if isinstance(n_out, int) and n_out != len(self.classes):
            raise ValueError(f"model outputs {n_out} scores but its metadata lists {len(self.classes)} classes")

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.path}, backend={self.backend!r}, classes={self.classes}, threads={self.threads})"

    def _logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0]
