"""Cityscapes (fine annotations): labelIds mapped to the 19 train ids."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from ..classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .base import IGNORE_INDEX, SegmentationDataset
from .io import DataError

__all__ = ["Cityscapes", "LABEL_TO_TRAIN_ID"]

# labelId -> trainId of the official cityscapesScripts table; every other id is ignored.
_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _label_id, _train_id in _TRAIN_IDS.items():
    LABEL_TO_TRAIN_ID[_label_id] = _train_id

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(SegmentationDataset):
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/*_gtFine_labelIds.png``.

    Label ids (0..33; -1 for the licence plate, stored as 255 in 8-bit PNGs) become the 19 train
    ids; everything else becomes 255 (ignored).
    """

    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: Union[str, Path], split: str = "train", transform: Optional[Callable] = None) -> None:
        super().__init__(root, split, transform)
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        if not image_dir.is_dir():
            raise DataError(
                f"{image_dir}: Cityscapes image folder not found (expected "
                f"{self.root}/leftImg8bit/{split}/<city>/*{_IMAGE_SUFFIX})"
            )
        if not label_dir.is_dir():
            raise DataError(
                f"{label_dir}: Cityscapes label folder not found (expected "
                f"{self.root}/gtFine/{split}/<city>/*{_LABEL_SUFFIX})"
            )
        self._add_pairs(
            image_dir,
            sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}")),
            lambda image: label_dir / image.parent.name / (image.name[: -len(_IMAGE_SUFFIX)] + _LABEL_SUFFIX),
        )

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            raise DataError(f"{path}: got an RGB label map; expected a *{_LABEL_SUFFIX} index PNG")
        ids = raw.astype(np.int64)
        if ids.min() < -1 or ids.max() > 255:
            raise DataError(
                f"{path}: label ids {int(ids.min())}..{int(ids.max())} outside -1..255; expected Cityscapes labelIds"
            )
        # -1 (licence plate) and values > 33 have no train id; & 255 folds -1 onto 255 -> ignore.
        return LABEL_TO_TRAIN_ID[ids & 255]
