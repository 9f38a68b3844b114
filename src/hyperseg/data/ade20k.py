"""ADE20K (the ADEChallengeData2016 scene-parsing release), 150 classes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..classes import default_palette
from .base import IGNORE_INDEX, SegmentationDataset, list_images
from .io import DataError

__all__ = ["ADE20K", "ADE20K_CLASSES", "ADE20K_PALETTE"]

NUM_CLASSES = 150
ADE20K_CLASSES = tuple(f"class_{i}" for i in range(NUM_CLASSES))
ADE20K_PALETTE = tuple(default_palette(NUM_CLASSES))

_SPLIT_ALIASES = {"train": "training", "val": "validation"}


class ADE20K(SegmentationDataset):
    """``images/<split>/*.jpg`` with ``annotations/<split>/*.png``; split ``training`` or ``validation``.

    Stored label 0 ("other") becomes 255 (ignored) and label k becomes k - 1.
    """

    classes = ADE20K_CLASSES
    palette = ADE20K_PALETTE

    def __init__(self, root: Union[str, Path], split: str = "training", transform: Optional[Callable] = None) -> None:
        split = _SPLIT_ALIASES.get(split, split)
        super().__init__(root, split, transform)
        image_dir = self.root / "images" / split
        label_dir = self.root / "annotations" / split
        if not image_dir.is_dir():
            raise DataError(
                f"{image_dir}: ADE20K image folder not found (expected {self.root}/images/{{training,validation}}/)"
            )
        if not label_dir.is_dir():
            raise DataError(
                f"{label_dir}: ADE20K annotation folder not found "
                f"(expected {self.root}/annotations/{{training,validation}}/)"
            )
        self._add_pairs(image_dir, list_images(image_dir), lambda image: label_dir / (image.stem + ".png"),
                        "annotation")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            raise DataError(f"{path}: got an RGB label map; expected an ADE20K index PNG (values 0..150)")
        stored = raw.astype(np.int64)
        label = stored - 1
        label[stored == 0] = IGNORE_INDEX
        return label
