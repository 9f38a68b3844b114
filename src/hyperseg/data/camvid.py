"""CamVid in its two common layouts."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..classes import CAMVID_CLASSES, CAMVID_PALETTE
from .base import IGNORE_INDEX, SegmentationDataset, colour_to_index, list_images
from .io import DataError

__all__ = ["CamVid", "CamVidColour", "CAMVID_32_TO_11"]


class CamVid(SegmentationDataset):
    """The SegNet layout: ``train/ trainannot/ val/ valannot/ test/ testannot/``, 11 classes.

    Label 11 (void) becomes 255 (ignored). The drive (video sequence) of a frame is its file-name
    prefix before ``_``: ``0016E5_07959.png`` is drive ``0016E5``.
    """

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    drive_pattern = r"^([^_]+)_"

    def __init__(self, root: Union[str, Path], split: str = "train", transform: Optional[Callable] = None) -> None:
        super().__init__(root, split, transform)
        image_dir, label_dir = self.root / split, self.root / f"{split}annot"
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: CamVid split folder not found (expected {self.root}/{{train,val,test}}/)")
        self._add_pairs(image_dir, list_images(image_dir), lambda image: label_dir / (image.stem + ".png"))

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        label = super().decode_label(raw, path)
        label[label == 11] = IGNORE_INDEX
        return label


# The 32-class colour labels: the 11 classes keep their colours; everything else is ignored,
# as in the authors' loader. The 11-class SegNet sidewalk colour differs from
# the 32-class one, hence the explicit table.
CAMVID_32_TO_11 = {
    (128, 128, 128): 0, (128, 0, 0): 1, (192, 192, 128): 2, (128, 64, 128): 3, (0, 0, 192): 4,
    (128, 128, 0): 5, (192, 128, 128): 6, (64, 64, 128): 7, (64, 0, 128): 8, (64, 64, 0): 9,
    (0, 128, 192): 10,
}


class CamVidColour(SegmentationDataset):
    """The 32-class colour layout of the authors' loader: ``{split}/x.png`` and ``{split}_labels/x_L.png``."""

    classes = CAMVID_CLASSES
    palette = CAMVID_PALETTE
    drive_pattern = r"^([^_]+)_"

    def __init__(self, root: Union[str, Path], split: str = "train", transform: Optional[Callable] = None) -> None:
        super().__init__(root, split, transform)
        image_dir, label_dir = self.root / split, self.root / f"{split}_labels"
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: CamVid split folder not found (expected {self.root}/{split}/ and {split}_labels/)")
        self._add_pairs(image_dir, list_images(image_dir), lambda image: label_dir / f"{image.stem}_L.png",
                        "colour label")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim != 3:
            raise DataError(f"{path}: expected an RGB colour label map")
        return colour_to_index(raw, [], extra=CAMVID_32_TO_11)
