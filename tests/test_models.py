"""Registry: head replacement, freezing, and the prefix/tail cut that the feature cache relies on."""

from __future__ import annotations

import pytest
import torch

from maskwatch.models import available_archs, create_model, set_trainable, split_model
from maskwatch.models.registry import get_arch


def test_registry_lists_both_archs():
    assert {"mobilenet_v2", "resnet18"} <= set(available_archs())
    with pytest.raises(ValueError, match="unknown architecture"):
        get_arch("alexnet")


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_prefix_then_tail_equals_the_model(arch, k):
    model = create_model(arch, 3, weights="none").eval()
    prefix, tail = split_model(model, arch, k)
    assert not prefix.training and not tail.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tail(prefix(x)), model(x), atol=1e-5)


@pytest.mark.parametrize("arch", ["mobilenet_v2", "resnet18"])
def test_freezing_leaves_head_and_last_blocks_trainable(arch):
    model = create_model(arch, 2, weights="none")
    spec = get_arch(arch)
    set_trainable(model, arch, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    head = {f"{'classifier' if arch == 'mobilenet_v2' else 'fc'}.{n}" for n, _ in spec.head(model).named_parameters()}
    assert trainable == head
    set_trainable(model, arch, 1)
    last_block = {id(p) for p in spec.blocks(model)[-1].parameters()}
    now = {id(p) for p in model.parameters() if p.requires_grad}
    assert last_block < now
    assert len(now) == len(last_block) + len(head)


def test_cannot_finetune_more_blocks_than_exist():
    model = create_model("resnet18", 2, weights="none")
    with pytest.raises(ValueError, match="cannot fine-tune"):
        split_model(model, "resnet18", 6)
