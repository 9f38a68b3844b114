"""The dataset contract: an RGB image, an int64 label map (255 = ignore), class names and palette."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import IMAGE_EXTENSIONS, DataError, read_image, read_label

__all__ = ["SegmentationDataset", "IGNORE_INDEX", "colour_to_index", "list_images"]

IGNORE_INDEX = 255


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def colour_to_index(rgb: np.ndarray, palette: Sequence[Sequence[int]], *, unknown: int = IGNORE_INDEX,
                    extra: Optional[dict[tuple[int, int, int], int]] = None) -> np.ndarray:
    """(H, W, 3) colour label -> (H, W) class indices; colours not in ``palette`` map to ``unknown``."""
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(codes.shape, unknown, dtype=np.int64)
    table = {tuple(c): i for i, c in enumerate(palette)}
    table.update(extra or {})
    for colour, index in table.items():
        out[codes == ((colour[0] << 16) | (colour[1] << 8) | colour[2])] = index
    return out


class SegmentationDataset(Dataset):
    """Pairs of image and label files.

    Subclasses fill ``self.samples`` with (image path, label path or None) and may override
    :meth:`decode_label` to map stored values to train ids. ``transform(image, label)`` gets a
    uint8 (3, H, W) tensor and an int64 (H, W) tensor and returns the pair it likes.
    """

    classes: Sequence[str] = ()
    palette: Sequence[Sequence[int]] = ()
    drive_pattern: Optional[str] = None  # regex whose first group, searched in a file name, is its drive (sequence)

    def __init__(self, root: Union[str, Path], split: str,
                 transform: Optional[Callable] = None) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.transform = transform
        self.samples: list[tuple[Path, Optional[Path]]] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _add_pairs(self, image_dir: Path, images: Iterable[Path], label_for: Callable[[Path], Path],
                   what: str = "label") -> None:
        """Pair each image with its label file; a missing label, or no image at all, is an error."""
        for image in images:
            label = label_for(image)
            if not label.is_file():
                raise DataError(f"{label}: {what} for {image.name} not found")
            self.samples.append((image, label))
        self._require_samples(image_dir)

    def _require_samples(self, where: Union[str, Path]) -> None:
        if not self.samples:
            raise DataError(f"{where}: no images found for split {self.split!r}")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            raise DataError(f"{path}: got an RGB label map; this dataset expects index labels")
        return raw.astype(np.int64)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 image (3, H, W), int64 label (H, W)) before any transform, checked."""
        image_path, label_path = self.samples[index]
        image = read_image(image_path)
        if label_path is None:
            label = np.full(image.shape[:2], IGNORE_INDEX, dtype=np.int64)
        else:
            label = self.decode_label(read_label(label_path), label_path)
            if label.shape != image.shape[:2]:
                raise DataError(
                    f"{label_path}: label size {label.shape[1]}x{label.shape[0]} differs from image "
                    f"{image_path.name} size {image.shape[1]}x{image.shape[0]}"
                )
            bad = ((label >= self.num_classes) | (label < 0)) & (label != IGNORE_INDEX)
            if bad.any():
                values = np.unique(label[bad])[:5].tolist()
                raise DataError(
                    f"{label_path}: label values {values} are outside 0..{self.num_classes - 1} (the "
                    f"{self.num_classes} classes) and not {IGNORE_INDEX} (ignore)"
                )
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous(), torch.from_numpy(np.array(label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        image, label = self.load(index)
        if self.transform is not None:
            return self.transform(image, label)
        return image, label
