"""Class activation maps (Grad-CAM and friends) over the ``grad-cam`` library, with hooks that never leak.

>>> with CamExplainer(model, arch="mobilenet_v2", method="gradcam") as explainer:
...     result = explainer(batch)                 # NCHW normalised float32 batch
...     result.cams.shape, result.probabilities.shape   # (N, H, W) in [0, 1], (N, classes)

Design (after pytorch-grad-cam's ``BaseCAM``): a small registry of methods by name; the target layer is
picked from the architecture registry (``Architecture.cam_layer``) or given by dotted name; every hook is
attached on ``__enter__`` and removed on ``__exit__``, including the library's, so explaining thousands of
images in a row keeps memory flat and leaves the model exactly as it was.

Only the network *after* the target layer needs gradients: a forward hook re-roots the graph at the target
layer's output, so a Grad-CAM costs one inference plus a backward pass through the head, not through the
whole backbone. With ``engine="onnx"`` (or ``"auto"``) the part up to the target layer even runs in ONNX
Runtime (several times faster than torch eager on CPU) and the library works on the remaining tail; this
needs a registry architecture whose CAM layer is a backbone block and a method that only uses that
layer's activations and gradients (not ScoreCAM). Both engines give the same maps (to float precision):
the library's ReLU, resize to the input, min-max scaling per image.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from maskwatch.runtime.types import softmax

# method name -> pytorch_grad_cam class name; resolved lazily so importing this module stays cheap.
_METHODS: dict[str, str] = {}


def register_method(name: str, class_name: str) -> None:
    """Make a ``pytorch_grad_cam`` class available under ``name`` (e.g. ``register_method("layercam", "LayerCAM")``)."""
    _METHODS[name] = class_name


for _name, _cls in (
    ("gradcam", "GradCAM"),
    ("gradcam++", "GradCAMPlusPlus"),
    ("eigencam", "EigenCAM"),
    ("scorecam", "ScoreCAM"),
    ("xgradcam", "XGradCAM"),
    ("layercam", "LayerCAM"),
    ("hirescam", "HiResCAM"),
):
    register_method(_name, _cls)


def available_methods() -> list[str]:
    return list(_METHODS)


def _cam_class(method: str):
    if method not in _METHODS:
        raise ValueError(f"unknown CAM method {method!r}; available: {available_methods()}")
    import matplotlib

    matplotlib.use("Agg")  # pytorch_grad_cam.utils imports pyplot; never let it pick a GUI backend
    import pytorch_grad_cam

    return getattr(pytorch_grad_cam, _METHODS[method])


def find_target_layer(model: nn.Module, arch: str | None = None, layer: str | None = None) -> tuple[str, nn.Module]:
    """The layer to explain: ``layer`` (dotted name) if given, else the registry's ``cam_layer`` for ``arch``,
    else the last ``Conv2d`` of the model."""
    if layer is None and arch is not None:
        from maskwatch.models import get_arch

        layer = get_arch(arch).cam_layer
    if layer is not None:
        try:
            return layer, model.get_submodule(layer)
        except AttributeError as exc:
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-3:]
            raise ValueError(f"model has no layer {layer!r} (last conv layers: {names})") from exc
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no Conv2d layer; pass the target layer's name")
    return convs[-1]


GRADIENT_OR_ACTIVATION_METHODS = {"gradcam", "gradcam++", "eigencam", "xgradcam", "layercam", "hirescam"}


def split_at_layer(model: nn.Module, arch: str, layer: nn.Module) -> tuple[nn.Sequential, nn.Sequential] | None:
    """(prefix, tail) with ``tail(prefix(x)) == model(x)``, cut right after ``layer`` when it is one of the
    architecture's backbone blocks; the tail starts with an ``Identity`` that stands for ``layer``'s output."""
    from maskwatch.models import get_arch

    spec = get_arch(arch)
    blocks = spec.blocks(model)
    index = next((i for i, block in enumerate(blocks) if block is layer), None)
    if index is None:
        return None
    prefix = nn.Sequential(*blocks[: index + 1])
    tail = nn.Sequential(nn.Identity(), *blocks[index + 1 :], nn.AdaptiveAvgPool2d(1), nn.Flatten(1), spec.head(model))
    return prefix.train(model.training), tail.train(model.training)


class _OnnxPrefix:
    """The network up to the target layer in ONNX Runtime; one session per input size, exported in memory."""

    def __init__(self, prefix: nn.Module, threads: int):
        import onnxruntime  # noqa: F401 - fail early when it is missing

        self.prefix = prefix
        self.threads = threads
        self.sessions: dict[tuple[int, int], Any] = {}

    def _session(self, height: int, width: int) -> Any:
        import warnings

        from maskwatch.runtime.onnx_backend import create_session

        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                self.prefix,
                (torch.zeros(1, 3, height, width),),
                buffer,  # type: ignore[arg-type]  # torch.onnx.export takes a binary file object too
                input_names=["input"],
                output_names=["features"],
                dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        return create_session(buffer.getvalue(), threads=self.threads)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        key = (int(batch.shape[-2]), int(batch.shape[-1]))
        if key not in self.sessions:
            self.sessions[key] = self._session(*key)
        array = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.sessions[key].run(None, {"input": array})[0])


@dataclass
class CamResult:
    cams: np.ndarray  # N x H x W float32 in [0, 1], same size as the input batch
    probabilities: np.ndarray  # N x classes: softmax(logits / temperature) of the explained forward pass
    targets: np.ndarray  # N class indices that were explained


def _reroot(module: nn.Module, inputs, output):
    """Forward hook: cut the graph at this layer so backward stops here (only the head needs gradients)."""
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor):
        return output.detach().requires_grad_(True)
    return None


class CamExplainer:
    """A CAM method bound to one model and layer; use it as a context manager (hooks live inside it).

    ``temperature``: the model's (``checkpoint["temperature"]``), so the probabilities shown next to a map
    are the calibrated ones every other prediction uses; the maps and the predicted class do not depend on it.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        arch: str | None = None,
        layer: str | None = None,
        method: str = "gradcam",
        batch_size: int = 16,
        engine: str = "torch",
        temperature: float = 1.0,
    ):
        from maskwatch.core.contract import check_temperature

        if engine not in ("torch", "onnx", "auto"):
            raise ValueError(f"engine must be torch, onnx or auto, got {engine!r}")
        self.model = model
        self.temperature = check_temperature(temperature)
        self.method = method
        self.batch_size = batch_size
        self.layer_name, self.layer = find_target_layer(model, arch, layer)
        self._cam_cls = _cam_class(method)
        self._cam: Any = None  # the pytorch_grad_cam object while open
        self._handles: list = []
        self._saved_requires_grad: list[tuple[nn.Parameter, bool]] = []
        self._was_training = False
        self._prefix: _OnnxPrefix | None = None
        self._split: tuple[nn.Sequential, nn.Sequential] | None = None
        self.engine = "torch"
        if engine != "torch":
            reason = self._onnx_unusable(arch)
            if reason is None:
                self.engine = "onnx"
            elif engine == "onnx":
                raise ValueError(f"engine 'onnx' cannot explain this: {reason}")

    def _onnx_unusable(self, arch: str | None) -> str | None:
        if self.method not in GRADIENT_OR_ACTIVATION_METHODS:
            return f"method {self.method} runs the whole network on masked inputs"
        if arch is None:
            return "the architecture is unknown (pass arch=)"
        if next(self.model.parameters()).device.type != "cpu":
            return "the model is not on the CPU"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
        self._split = split_at_layer(self.model, arch, self.layer)
        if self._split is None:
            return f"layer {self.layer_name} is not a backbone block of {arch}"
        return None

    # -- lifetime -------------------------------------------------------------------------------------
    def __enter__(self) -> CamExplainer:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()  # returns None: never swallow an exception (the library's own __exit__ hides IndexError)

    def open(self) -> None:
        if self._cam is not None:
            return
        self._was_training = self.model.training
        self._saved_requires_grad = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self._saved_requires_grad:
            p.requires_grad_(False)
        cam_model, target = self.model, self.layer
        if self.engine == "onnx":
            assert self._split is not None  # set by _onnx_unusable when the engine is onnx
            prefix, tail = self._split
            cam_model, target = tail, tail[0]
            self._prefix = _OnnxPrefix(prefix.eval(), max(1, torch.get_num_threads()))
        # Registered before the library's hooks, so theirs see the re-rooted tensor.
        self._handles.append(target.register_forward_hook(_reroot))
        self._cam = self._cam_cls(model=cam_model, target_layers=[target])
        if self.method == "scorecam":
            self._cam.batch_size = 64

    def close(self) -> None:
        """Remove every hook, drop cached activations and gradients, restore the model's flags."""
        if self._cam is not None:
            self._cam.activations_and_grads.release()
            self._cam.outputs = None
            self._cam = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._prefix = None  # drops the ONNX Runtime sessions
        for p, flag in self._saved_requires_grad:
            p.requires_grad_(flag)
        self._saved_requires_grad = []
        self.model.train(self._was_training)

    # -- use ------------------------------------------------------------------------------------------
    def __call__(self, batch: np.ndarray | torch.Tensor, targets: Sequence[int] | int | None = None) -> CamResult:
        """Maps for ``batch`` (normalised NCHW); ``targets``: one class per image, one class for all, or
        None for each image's predicted class."""
        if self._cam is None:
            raise RuntimeError("use CamExplainer inside a `with` block (or call open() first)")
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        tensor = torch.as_tensor(batch, dtype=torch.float32)
        n = tensor.shape[0]
        if isinstance(targets, (int, np.integer)):
            targets = [int(targets)] * n
        cams, probs, explained = [], [], []
        device = next(self.model.parameters()).device
        for start in range(0, n, self.batch_size):
            part = tensor[start : start + self.batch_size].to(device)
            wanted = (
                None
                if targets is None
                else [ClassifierOutputTarget(int(t)) for t in targets[start : start + self.batch_size]]
            )
            if self.method == "scorecam":  # the library draws a progress bar per image; keep stderr clean
                with contextlib.redirect_stderr(io.StringIO()):
                    cam = self._cam(input_tensor=part, targets=wanted)
            elif self._prefix is not None:
                from pytorch_grad_cam.utils.image import scale_cam_image

                small = self._cam(input_tensor=self._prefix(part), targets=wanted)  # maps at the layer's size
                size = (int(part.shape[-1]), int(part.shape[-2]))
                cam = scale_cam_image(scale_cam_image(small, size))  # as the library does for the full model
            else:
                cam = self._cam(input_tensor=part, targets=wanted)
            logits = self._cam.outputs.detach().float().cpu()
            self._cam.outputs = None  # drop the graph now, not at the next call
            self._cam.activations_and_grads.clear()
            p = softmax(logits.numpy(), self.temperature)
            cams.append(np.asarray(cam, dtype=np.float32))
            probs.append(p)
            explained.append(p.argmax(1) if wanted is None else np.asarray([w.category for w in wanted]))
        if not cams:
            height, width = int(tensor.shape[-2]), int(tensor.shape[-1])
            return CamResult(np.zeros((0, height, width), np.float32), np.zeros((0, 0)), np.zeros(0, np.int64))
        return CamResult(np.concatenate(cams), np.concatenate(probs), np.concatenate(explained).astype(np.int64))


def explain_batch(
    model: nn.Module,
    batch: np.ndarray,
    *,
    arch: str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
    targets: Sequence[int] | int | None = None,
    engine: str = "torch",
    temperature: float = 1.0,
) -> CamResult:
    """One-shot helper: open an explainer, explain ``batch``, release the hooks."""
    with CamExplainer(
        model, arch=arch, layer=layer, method=method, engine=engine, temperature=temperature
    ) as explainer:
        return explainer(batch, targets)


def overlay(image: np.ndarray, cam: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Heat map ``cam`` (HxW in [0, 1]) over ``image`` (HxWx3, float in [0, 1] or uint8) -> HxWx3 uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    image = np.asarray(image)
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    image = np.clip(image.astype(np.float32), 0.0, 1.0)
    if cam.shape != image.shape[:2]:
        import cv2

        cam = cv2.resize(cam.astype(np.float32), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(image, np.clip(cam, 0.0, 1.0), use_rgb=True, image_weight=image_weight)
