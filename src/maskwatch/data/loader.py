"""Torch datasets over :class:`~maskwatch.data.datasets.Sample` lists that never crash on a bad file.

A file that fails to decode yields ``None``; the collate function drops it, and the caller learns which
indices went missing from the index tensor that travels with every batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from maskwatch.data.datasets import Sample
from maskwatch.data.images import BadImageError


class SampleDataset(Dataset):
    def __init__(self, samples: Sequence[Sample], transform: Callable):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        sample = self.samples[index]
        try:
            image = sample.load()
        except BadImageError:
            return None
        return self.transform(image), sample.label, index


def collate_skip_bad(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    good = [item for item in batch if item is not None]
    if not good:
        return None
    images, labels, indices = zip(*good)
    return torch.stack(images), torch.tensor(labels), torch.tensor(indices)


def make_loader(
    samples: Sequence[Sample],
    transform: Callable,
    *,
    batch_size: int,
    workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        SampleDataset(samples, transform),
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        collate_fn=collate_skip_bad,
        generator=generator,
        persistent_workers=False,
    )
