"""A resumable, shardable stream of training samples.

The stream is the concatenation of per-epoch permutations of the dataset, each a function of
(seed, epoch). Optimizer step ``s`` consumes positions [s*G, (s+1)*G) of it, G being the global
batch (batch per process x accumulation steps x processes). So the data seen at any step is
fixed by the seed alone: resuming at step s, or splitting across processes, changes nothing.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from ..errors import HypersegError
from .transforms import sample_generator

__all__ = ["StepSampler", "KeyedDataset"]


class StepSampler(Sampler[list[int]]):
    """Yields micro-batches of sample keys (epoch * n + index) for one process."""

    def __init__(self, num_samples: int, *, batch_size: int, accum_steps: int = 1, seed: int = 0,
                 start_step: int = 0, max_steps: int, rank: int = 0, world_size: int = 1) -> None:
        if num_samples <= 0:
            raise HypersegError("the training set is empty")
        self.n = num_samples
        self.batch_size, self.accum_steps = batch_size, accum_steps
        self.seed, self.start_step, self.max_steps = seed, start_step, max_steps
        self.rank, self.world_size = rank, world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))}
        return self._perms[epoch]

    def key(self, position: int) -> int:
        epoch, j = divmod(position, self.n)
        return epoch * self.n + int(self._perm(epoch)[j])

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accum_steps * self.world_size

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accum_steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            base = step * self.global_batch
            for micro in range(self.accum_steps):
                first = base + (micro * self.world_size + self.rank) * self.batch_size
                yield [self.key(first + i) for i in range(self.batch_size)]


class KeyedDataset(Dataset):
    """Applies a random transform whose generator depends only on (seed, key)."""

    def __init__(self, base, transform, seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int):
        image, label = self.base.load(key % len(self.base))
        return self.transform(image, label, sample_generator(self.seed, key))
