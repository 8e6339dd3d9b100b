"""Looking inside the network: feature maps of chosen layers, the first conv layer's filters, and the
weights of the layers that training changed.

Every hook is removed before a function returns, whatever happens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def default_feature_layers(model: nn.Module, arch: str | None = None) -> list[tuple[str, str]]:
    """(label, dotted name) of an early, a middle and a late layer.

    For registry architectures these are backbone blocks (the second, the middle one and the last);
    otherwise three ``Conv2d`` layers spread over the network.
    """
    names = {id(m): n for n, m in model.named_modules()}
    chosen: list[str] = []
    if arch is not None:
        from maskwatch.models import get_arch

        blocks = [b for b in get_arch(arch).blocks(model) if id(b) in names]
        if len(blocks) >= 3:
            picks = [blocks[1], blocks[len(blocks) // 2], blocks[-1]]
            chosen = [names[id(b)] for b in picks]
    if not chosen:
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            return []
        picks = sorted({0, len(convs) // 2, len(convs) - 1})
        chosen = [convs[i] for i in picks]
    labels = ["early", "middle", "late"] if len(chosen) == 3 else [f"layer {i + 1}" for i in range(len(chosen))]
    return list(zip(labels, chosen))


@torch.no_grad()
def capture_feature_maps(
    model: nn.Module, batch: np.ndarray | torch.Tensor, layers: Sequence[str]
) -> dict[str, np.ndarray]:
    """Run ``batch`` through ``model`` and return each named layer's output (N x C x h x w, float32)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in layers:

            def hook(module, inputs, output, name=name):
                captured[name] = output.detach().float().cpu()

            handles.append(model.get_submodule(name).register_forward_hook(hook))
        model(torch.as_tensor(batch, dtype=torch.float32).to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name].numpy() for name in layers if name in captured}


def top_channels(maps: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` channels with the highest mean activation (maps: C x h x w)."""
    return np.argsort(maps.reshape(maps.shape[0], -1).mean(axis=1))[::-1][:k]


def first_conv_weights(model: nn.Module) -> tuple[str, np.ndarray]:
    """Name and weights (out x in x k x k) of the first ``Conv2d`` in the model."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module.weight.detach().float().cpu().numpy()
    raise ValueError("model has no Conv2d layer")


def trainable_weights(
    model: nn.Module, arch: str | None = None, finetune_blocks: int = 0, limit: int = 12
) -> list[tuple[str, np.ndarray]]:
    """Weight tensors (no biases or norm parameters) of the layers training changed.

    For a registry architecture these are the head plus the last ``finetune_blocks`` blocks (what
    ``set_trainable`` unfreezes); otherwise every parameter that requires grad. At most ``limit``
    tensors, spread evenly from first to last.
    """
    if arch is not None:
        from maskwatch.models import get_arch

        spec = get_arch(arch)
        blocks = spec.blocks(model)
        modules = [*blocks[len(blocks) - finetune_blocks :]] if finetune_blocks else []
        modules.append(spec.head(model))
        owners = {id(m): n for n, m in model.named_modules()}
        found = []
        for module in modules:
            prefix = owners.get(id(module), "")
            for name, p in module.named_parameters():
                found.append((f"{prefix}.{name}" if prefix else name, p))
    else:
        found = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    weights = [(n, p.detach().float().cpu().numpy()) for n, p in found if p.ndim >= 2]
    if len(weights) > limit:
        keep = np.unique(np.linspace(0, len(weights) - 1, limit).round().astype(int))
        weights = [weights[i] for i in keep]
    return weights
