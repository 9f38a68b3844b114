"""The training batches: augmented crops in the order of a :class:`~hyperseg.data.sampler.StepSampler`
that starts at the run's step, so a resumed run sees the batches an uninterrupted one would."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader

from ..data.sampler import KeyedDataset, StepSampler
from ..data.transforms import TrainTransform
from ..errors import HypersegError
from ..process.distributed import Process
from .config import RunConfig
from .interrupt import ignore_stop_signals

__all__ = ["build_loader", "focus_class_indices"]


def focus_class_indices(names: Sequence[str], classes: Sequence[str]) -> list[int]:
    """``data.focus_classes`` as indices of the training set's classes; an unknown name is an error."""
    classes = list(classes)
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise HypersegError(f"data.focus_classes: {', '.join(map(repr, unknown))} is not a class of the "
                            f"training set; its classes are {', '.join(classes)}")
    return [classes.index(n) for n in names]


def build_loader(cfg: RunConfig, train_set, meta: dict, start_step: int, proc: Process) -> DataLoader:
    """Batches from ``start_step`` to ``optim.max_iters`` for this process's shard; ``meta`` is the
    model's (its normalisation)."""
    data = cfg.data
    transform = TrainTransform(mean=meta["mean"], std=meta["std"], crop_size=data.crop_size,
                               scale_range=data.scale_range, scale_prob=data.scale_prob, hflip=data.hflip,
                               color_jitter=data.color_jitter, rotation=data.rotation, pad_only=data.pad_only,
                               base_scale=cfg.model.input_scale,
                               focus_classes=focus_class_indices(data.focus_classes or [], train_set.classes),
                               focus_prob=data.focus_prob)
    sampler = StepSampler(len(train_set), batch_size=data.batch_size, accum_steps=cfg.optim.accum_steps,
                          seed=cfg.train.seed, start_step=start_step, max_steps=cfg.optim.max_iters,
                          rank=proc.rank, world_size=proc.world)
    # Its own generator: creating the loader must not consume the global RNG that dropout uses,
    # or a resumed run would draw different dropout masks from an uninterrupted one.
    return DataLoader(KeyedDataset(train_set, transform, cfg.train.seed), batch_sampler=sampler,
                      num_workers=data.workers, persistent_workers=False,
                      pin_memory=proc.device.type == "cuda", worker_init_fn=ignore_stop_signals,
                      generator=torch.Generator().manual_seed(cfg.train.seed))
