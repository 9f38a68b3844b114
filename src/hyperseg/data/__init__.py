"""Datasets (one module each), joint transforms and the resumable sample stream."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from ..errors import HypersegError
from .base import IGNORE_INDEX, SegmentationDataset
from .camvid import CamVid, CamVidColour
from .io import DataError

__all__ = ["build_dataset", "DATASETS", "SegmentationDataset", "DataError", "IGNORE_INDEX"]


def _lazy(module: str, cls: str) -> Callable[..., SegmentationDataset]:
    def make(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(*args, **kwargs)

    return make


DATASETS: dict[str, Callable[..., SegmentationDataset]] = {
    "camvid": CamVid,
    "camvid32": CamVidColour,
    "cityscapes": _lazy("cityscapes", "Cityscapes"),
    "voc": _lazy("voc", "VOCAug"),
    "ade20k": _lazy("ade20k", "ADE20K"),
    "folder": _lazy("folder", "FolderDataset"),
}


def build_dataset(name: str, root: Union[str, Path], split: str, *, classes_file: Optional[str] = None,
                  transform: Optional[Callable] = None) -> SegmentationDataset:
    """A dataset by name; ``classes_file`` is the class list of a ``folder`` dataset.

    ``split`` may join several splits with ``+`` (``"train+val"``, as the authors train CamVid).
    """
    if name not in DATASETS:
        raise HypersegError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    parts = [s for s in split.split("+") if s] if split else [split]
    sets = []
    for part in parts:
        if name == "folder":
            sets.append(DATASETS[name](root, part, classes_file=classes_file, transform=transform))
        else:
            sets.append(DATASETS[name](root, part, transform=transform))
    if len(sets) == 1:
        return sets[0]
    joined = sets[0]
    for other in sets[1:]:
        joined.samples = joined.samples + other.samples
    joined.split = split
    return joined
