"""Checking a prepared dataset folder: every pair readable, sizes matching, labels in range."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import HypersegError
from .base import IGNORE_INDEX, SegmentationDataset

__all__ = ["DataReport", "check_dataset"]


@dataclass
class DataReport:
    """What :func:`check_dataset` found in one split."""

    split: str
    images: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    class_pixels: Optional[np.ndarray] = None
    ignored_pixels: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self, class_names) -> str:
        sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in self.sizes.most_common(3))
        more = f" and {len(self.sizes) - 3} more sizes" if len(self.sizes) > 3 else ""
        lines = [f"{self.split}: {self.images} pairs read, {len(self.errors)} bad; sizes {sizes or '-'}{more}"]
        if self.class_pixels is not None and self.class_pixels.sum():
            total = self.class_pixels.sum() + self.ignored_pixels
            shares = "  ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(class_names, self.class_pixels))
            lines.append(f"  pixels: {shares}  ignored {100 * self.ignored_pixels / total:.1f}%")
        return "\n".join(lines)


def check_dataset(dataset: SegmentationDataset, limit: Optional[int] = None) -> DataReport:
    """Read every pair (or the first ``limit``) the way training does, collecting problems instead of stopping."""
    report = DataReport(dataset.split, class_pixels=np.zeros(dataset.num_classes, dtype=np.int64))
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        try:
            image, label = dataset.load(index)
        except HypersegError as exc:
            report.errors.append(str(exc))
            continue
        report.images += 1
        report.sizes[(int(image.shape[2]), int(image.shape[1]))] += 1
        values = label.numpy().reshape(-1)
        report.ignored_pixels += int((values == IGNORE_INDEX).sum())
        report.class_pixels += np.bincount(values[values != IGNORE_INDEX], minlength=dataset.num_classes)
    return report
