"""Where a process runs under torchrun: its device, its rank, and the process group (gloo on CPU, NCCL on GPUs).

Training, ``eval`` and ``predict`` share it. Without torchrun (``WORLD_SIZE`` unset or 1) nothing
is initialised and every helper degrades to the single-process answer.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..device import resolve_device

__all__ = ["Process", "init_process", "shard", "gather", "torchrun_world_size"]

T = TypeVar("T")


@dataclass
class Process:
    """Where this process runs: its device, and its rank among the torchrun workers (0 of 1 alone)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_world_size() -> int:
    """How many processes torchrun started (1 when it did not start this one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_process(device: str = "auto") -> Process:
    """The device, and the process group when torchrun started several processes. Under torchrun
    on GPUs each process takes the GPU of its ``LOCAL_RANK``."""
    resolved = resolve_device(device)
    if torchrun_world_size() <= 1:
        return Process(resolved)
    if not dist.is_initialized():
        if resolved.type == "cuda":
            resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        # A group left alive at exit lets the interpreter tear down under gloo's threads, which
        # now and then aborts a finished rank ("terminate called without an active exception").
        atexit.register(_destroy_process_group)
    return Process(resolved, dist.get_rank(), dist.get_world_size())


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: Sequence[T], proc: Process) -> list[T]:
    """This rank's share of ``items``: every ``world``-th one from its rank on (deterministic, and
    balanced to within one item)."""
    return list(items[proc.rank :: proc.world])


def gather(value: Any, proc: Process) -> list[Any]:
    """Every rank's ``value`` (any picklable object), in rank order, on every rank."""
    if not proc.distributed:
        return [value]
    values: list[Any] = [None] * proc.world
    dist.all_gather_object(values, value)
    return values
