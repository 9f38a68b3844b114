"""PASCAL VOC 2012 with the SBD augmented labels (SegmentationClassAug), 21 classes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from ..classes import VOC_CLASSES, VOC_PALETTE
from .base import SegmentationDataset
from .io import DataError

__all__ = ["VOCAug"]


class VOCAug(SegmentationDataset):
    """``root`` is the VOC2012 folder; ``split`` names a list file.

    The list is looked up at ``root/<split>.txt``, ``root/ImageSets/SegmentationAug/<split>.txt``
    and ``root/ImageSets/Segmentation/<split>.txt``. Each line is either a pair
    ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` (relative to ``root``) or a bare image id
    ``2007_000032`` (then ``JPEGImages/<id>.jpg`` with ``SegmentationClassAug/<id>.png``, or
    ``SegmentationClass/<id>.png`` when the former is absent). Labels are index or palette PNGs,
    255 = ignore.
    """

    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(self, root: Union[str, Path], split: str = "train_aug", transform: Optional[Callable] = None) -> None:
        super().__init__(root, split, transform)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: VOC2012 folder not found (expected JPEGImages/ and SegmentationClassAug/)")
        candidates = [
            self.root / f"{split}.txt",
            self.root / "ImageSets" / "SegmentationAug" / f"{split}.txt",
            self.root / "ImageSets" / "Segmentation" / f"{split}.txt",
        ]
        list_file = next((p for p in candidates if p.is_file()), None)
        if list_file is None:
            raise DataError(
                f"{self.root}: no list file for split {split!r}; looked for "
                + ", ".join(str(p) for p in candidates)
            )
        for number, line in enumerate(list_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 2:
                image, label = (self.root / f.lstrip("/") for f in fields)
            elif len(fields) == 1:
                image_id = fields[0]
                image = self.root / "JPEGImages" / f"{image_id}.jpg"
                label = self.root / "SegmentationClassAug" / f"{image_id}.png"
                if not label.is_file():
                    fallback = self.root / "SegmentationClass" / f"{image_id}.png"
                    label = fallback if fallback.is_file() else label
            else:
                raise DataError(
                    f"{list_file}:{number}: expected '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png' "
                    f"or a bare image id, got {line.strip()!r}"
                )
            if not image.is_file():
                raise DataError(f"{image}: image listed in {list_file.name} (line {number}) not found")
            if not label.is_file():
                raise DataError(f"{label}: label for {image.name} (listed in {list_file.name}) not found")
            self.samples.append((image, label))
        self._require_samples(list_file)
