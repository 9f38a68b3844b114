"""Datasets (one module each), joint transforms and the resumable sample stream."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..errors import HypersegError
from .base import IGNORE_INDEX, SegmentationDataset
from .camvid import CamVid, CamVidColour
from .io import DataError

__all__ = ["build_dataset", "split_names", "check_drive_pattern", "select_drives", "drive_counts", "DATASETS",
           "SegmentationDataset", "DataError", "IGNORE_INDEX"]


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


def split_names(split: Optional[str], option: str = "split") -> list[Optional[str]]:
    """The splits ``split`` joins with ``+`` (``"train+val"``): an empty part (``"+"``, ``"train+"``) is
    refused naming ``option``, the key or command-line option the value came from."""
    if split is None or "+" not in split:
        return [split]
    parts = split.split("+")
    if any(not part.strip() for part in parts):
        raise HypersegError(f"{option}={split!r} has an empty split name; expected split names joined by '+', "
                            f"e.g. 'train' or 'train+val'")
    return parts


def check_drive_pattern(pattern: Optional[str], option: str = "drive pattern") -> Optional[re.Pattern]:
    """``pattern`` compiled, or None when not given (empty: the dataset's own); a pattern that does not
    compile or has no group is refused naming ``option``, whether or not a drive filter uses it."""
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise HypersegError(f"{option}={pattern!r} is not a regular expression ({exc}); expected one whose first "
                            f"group is the drive, e.g. '^([^_]+)_'") from None
    if regex.groups < 1:
        raise HypersegError(f"{option}={pattern!r} has no group; its first group must capture the drive, "
                            f"e.g. '^([^_]+)_'")
    return regex


def _drive_regex(dataset: SegmentationDataset, pattern: Optional[str]) -> re.Pattern:
    pattern = pattern or dataset.drive_pattern
    if not pattern:
        raise HypersegError(f"{type(dataset).__name__} file names carry no drive by default; give a drive pattern "
                            f"(data.drive_pattern / --drive-pattern), a regular expression whose first group is the "
                            f"drive, e.g. '^([^_]+)_'")
    return check_drive_pattern(pattern)


def drive_counts(dataset: SegmentationDataset, pattern: Optional[str] = None) -> Counter:
    """Images per drive: the drive of an image is the first group of ``pattern`` (default: the
    dataset's own, for CamVid the file-name prefix before ``_``) matched against its file name."""
    regex = _drive_regex(dataset, pattern)
    return Counter(_drive_of(regex, image) for image, _ in dataset.samples)


def _drive_of(regex: re.Pattern, image: Path) -> Optional[str]:
    match = regex.search(image.name)
    return match.group(1) if match else None


def select_drives(dataset: SegmentationDataset, drives: Sequence[str], pattern: Optional[str] = None) -> SegmentationDataset:
    """Keep only the images of ``drives`` (in place); refuses a drive the split does not hold, naming
    the drives it does hold, so that a filter can never silently leave a split empty."""
    regex = _drive_regex(dataset, pattern)
    found = Counter(_drive_of(regex, image) for image, _ in dataset.samples)
    missing = [d for d in drives if d not in found]
    if missing or not drives:
        held = ", ".join(f"{d} ({n})" for d, n in sorted(found.items(), key=lambda kv: str(kv[0])) if d is not None)
        unmatched = found.get(None, 0)
        raise DataError(f"drive filter {list(drives)} on split {dataset.split!r} of {dataset.root}: no image of drive(s) "
                        f"{missing or list(drives)}; the split holds drives {held or 'none'}"
                        + (f" and {unmatched} images the pattern {regex.pattern!r} does not match" if unmatched else ""))
    keep = set(drives)
    dataset.samples = [pair for pair in dataset.samples if _drive_of(regex, pair[0]) in keep]
    dataset.split = f"{dataset.split}[{','.join(drives)}]"
    return dataset


def build_dataset(name: str, root: Union[str, Path], split: str, *, classes_file: Optional[str] = None,
                  transform: Optional[Callable] = None, drives: Optional[Sequence[str]] = None,
                  drive_pattern: Optional[str] = None) -> SegmentationDataset:
    """A dataset by name; ``classes_file`` is the class list of a ``folder`` dataset.

    ``split`` may join several splits with ``+`` (``"train+val"``, as the authors train CamVid).
    ``drives`` keeps only those drives' images (see :func:`select_drives`): a leave-one-drive-out
    fold trains on some drives and validates on another that training never saw.
    """
    if name not in DATASETS:
        raise HypersegError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    parts = split_names(split)
    check_drive_pattern(drive_pattern)  # a bad pattern is an error even where no drive filter reads it
    sets = []
    for part in parts:
        if name == "folder":
            sets.append(DATASETS[name](root, part, classes_file=classes_file, transform=transform))
        else:
            sets.append(DATASETS[name](root, part, transform=transform))
    joined = sets[0]
    if len(sets) > 1:
        for other in sets[1:]:
            joined.samples = joined.samples + other.samples
        joined.split = split
    if drives is not None:
        select_drives(joined, drives, drive_pattern)
    return joined
