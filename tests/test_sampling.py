"""Per-dataset sampling weights: the draws of an epoch follow the weights, in the cached and the live path."""

from __future__ import annotations

import numpy as np
import pytest

from maskwatch.data.sampling import draw_rates, epoch_order


def _draws_per_sample(order: np.ndarray, groups: np.ndarray) -> list[float]:
    counts = np.bincount(groups[order], minlength=groups.max() + 1)
    return (counts / np.bincount(groups)).tolist()


@pytest.mark.parametrize(("sizes", "weights"), [((100, 50), (1, 2)), ((30, 90, 40), (1, 0.5, 3)), ((60, 60), (4, 1))])
def test_draw_proportions_follow_the_weights(sizes, weights):
    groups = np.repeat(np.arange(len(sizes)), sizes)
    order = epoch_order(groups, weights, np.random.default_rng(0))
    assert len(order) == sum(sizes)  # the epoch length stays the number of training samples
    rates = _draws_per_sample(order, groups)
    assert rates == pytest.approx(draw_rates(groups, weights), abs=1 / min(sizes))
    for (rate_a, w_a), (rate_b, w_b) in zip(zip(rates, weights), list(zip(rates, weights))[1:]):
        assert rate_a / rate_b == pytest.approx(w_a / w_b, rel=0.05)
    per_sample = np.bincount(order, minlength=len(groups))
    for g, rate in enumerate(draw_rates(groups, weights)):  # stratified: floor or ceil of the rate, never more
        assert set(per_sample[groups == g]) <= {int(np.floor(rate)), int(np.ceil(rate))}


def test_equal_weights_are_plain_concatenation_and_draws_are_seeded():
    groups = np.repeat([0, 1], [20, 10])
    plain = np.random.default_rng(5).permutation(30)
    assert np.array_equal(epoch_order(groups, [2, 2], np.random.default_rng(5)), plain)
    a = epoch_order(groups, [1, 3], np.random.default_rng(1))
    b = epoch_order(groups, [1, 3], np.random.default_rng(1))
    c = epoch_order(groups, [1, 3], np.random.default_rng(2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cached_and_live_batches_draw_by_the_weights(tmp_path):
    import torch
    from conftest import write_class_folders

    from maskwatch.config import load_config
    from maskwatch.data.datasets import open_dataset
    from maskwatch.training import _cached_batches, _live_batches

    groups = np.repeat([0, 1], [40, 20])
    features = torch.arange(60, dtype=torch.float32).reshape(1, 60, 1).repeat(2, 1, 1)
    labels = torch.zeros(60, dtype=torch.long)
    batches = _cached_batches(features, labels, groups, 16, np.random.default_rng(0), True, [1.0, 3.0])
    drawn = np.concatenate([g.numpy() for _, _, g in batches()])
    assert np.bincount(drawn).tolist() == [24, 36]  # 40 x 0.6 and 20 x 1.8

    root = write_class_folders(tmp_path / "d", per_class=15, splits=(None,), size=16)
    samples = open_dataset(root, val_ratio=0, test_ratio=0).split("all")
    groups = np.repeat([0, 1], [20, 10])
    cfg = load_config(batch_size=8, workers=0, image_size=32)

    def transform(image):
        return torch.zeros(1)

    live = _live_batches(torch.nn.Identity(), samples, groups, transform, cfg, torch.device("cpu"), True, [0],
                         weights=[1.0, 4.0])
    drawn = np.concatenate([g.numpy() for _, _, g in live()])
    assert np.bincount(drawn).tolist() == [10, 20]  # 20 x 0.5 and 10 x 2


def _cell_shares(order: np.ndarray, groups: np.ndarray, labels: np.ndarray) -> dict[tuple[int, int], float]:
    cells = list(zip(groups[order].tolist(), labels[order].tolist()))
    return {cell: cells.count(cell) / len(cells) for cell in set(cells)}


def test_balancing_gives_every_class_and_dataset_its_share():
    # faces: 300 masked, 250 bare; scenes: 900 masked, 150 bare (the shared data's imbalance, scaled)
    groups = np.repeat([0, 0, 1, 1], [300, 250, 900, 150])
    labels = np.repeat([0, 1, 0, 1], [300, 250, 900, 150])
    rng = np.random.default_rng(0)
    plain = _cell_shares(epoch_order(groups, [1, 1], rng, labels=labels), groups, labels)
    assert plain[(1, 1)] == pytest.approx(150 / 1600, abs=1e-9)
    classes = _cell_shares(epoch_order(groups, [1, 1], rng, labels=labels, balance="classes"), groups, labels)
    assert classes[(1, 0)] == pytest.approx(classes[(1, 1)], abs=2e-3)  # within scenes: half and half
    assert classes[(1, 0)] + classes[(1, 1)] == pytest.approx(1050 / 1600, abs=2e-3)  # dataset share unchanged
    both = epoch_order(groups, [1, 1], rng, labels=labels, balance="datasets_classes")
    assert len(both) == len(groups)  # the epoch keeps its length
    assert all(share == pytest.approx(0.25, abs=2e-3) for share in _cell_shares(both, groups, labels).values())
    datasets = _cell_shares(epoch_order(groups, [2, 1], rng, labels=labels, balance="datasets"), groups, labels)
    assert datasets[(0, 0)] + datasets[(0, 1)] == pytest.approx(2 / 3, abs=2e-3)  # by weight, whatever the size
    counts = np.bincount(both, minlength=len(groups))  # stratified: each rare face drawn floor or ceil of its rate
    assert set(counts[(groups == 1) & (labels == 1)]) <= {2, 3}
    with pytest.raises(ValueError, match="needs the samples' labels"):
        epoch_order(groups, [1, 1], rng, balance="classes")
    with pytest.raises(ValueError, match="balance must be one of"):
        epoch_order(groups, [1, 1], rng, labels=labels, balance="everything")
