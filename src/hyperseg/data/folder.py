"""A generic folder of images and masks with a YAML class list."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import yaml

from ..classes import default_palette
from .base import IGNORE_INDEX, SegmentationDataset, colour_to_index, list_images
from .io import DataError

__all__ = ["FolderDataset"]

_FORMAT = (
    "expected YAML, either a list of class names:\n"
    "  - background\n  - road\n"
    "or a mapping:\n"
    "  classes: [background, road]\n"
    "  palette: [[0, 0, 0], [128, 64, 128]]   # optional, one [r, g, b] per class\n"
    "  ignore_index: 255                      # optional"
)


def _read_classes(path: Path) -> tuple[list[str], Optional[list[tuple[int, int, int]]], int]:
    """(class names, palette or None, ignore index) from a classes file."""
    if not path.is_file():
        raise DataError(f"{path}: classes file not found; {_FORMAT}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: cannot parse the classes file ({exc}); {_FORMAT}") from None
    palette = None
    ignore_index = IGNORE_INDEX
    if isinstance(spec, dict):
        unknown = set(spec) - {"classes", "palette", "ignore_index"}
        if unknown:
            raise DataError(f"{path}: unknown keys {sorted(unknown)}; {_FORMAT}")
        names, palette, ignore_index = spec.get("classes"), spec.get("palette"), spec.get("ignore_index", IGNORE_INDEX)
    else:
        names = spec
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{path}: no class names found; {_FORMAT}")
    names = [str(n) for n in names]
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 65535:
        raise DataError(f"{path}: ignore_index must be an integer in 0..65535, got {ignore_index!r}")
    if palette is not None:
        if not isinstance(palette, list) or len(palette) != len(names) or not all(
            isinstance(c, (list, tuple)) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
            for c in palette
        ):
            raise DataError(
                f"{path}: palette must list one [r, g, b] (0..255) per class ({len(names)} classes); {_FORMAT}"
            )
        palette = [tuple(c) for c in palette]
    return names, palette, ignore_index


class FolderDataset(SegmentationDataset):
    """``root/images/`` with ``root/masks/`` (or ``root/<split>/images`` and ``root/<split>/masks``).

    A mask shares its image's stem with a ``.png`` extension and is either an index PNG (class
    ids, ``ignore_index`` ignored) or an RGB colour PNG mapped through the palette (unknown
    colours are ignored). Classes come from ``classes_file`` (default ``root/classes.yaml``).
    """

    def __init__(self, root: Union[str, Path], split: Optional[str] = None,
                 classes_file: Optional[Union[str, Path]] = None, transform: Optional[Callable] = None) -> None:
        super().__init__(root, split, transform)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found (expected images/ and masks/ inside)")
        base = self.root
        if split is not None and (self.root / split / "images").is_dir():
            base = self.root / split
        image_dir, mask_dir = base / "images", base / "masks"
        if not image_dir.is_dir():
            where = f"{self.root}/images/" + (f" or {self.root}/{split}/images/" if split else "")
            raise DataError(f"{image_dir}: image folder not found (expected {where})")
        if not mask_dir.is_dir():
            raise DataError(f"{mask_dir}: mask folder not found (expected it next to {image_dir})")

        path = Path(classes_file).expanduser() if classes_file is not None else self.root / "classes.yaml"
        names, palette, ignore_index = _read_classes(path)
        self.classes_file = path
        self.classes: Sequence[str] = tuple(names)
        self.has_palette = palette is not None
        self.palette: Sequence[Sequence[int]] = tuple(palette if palette is not None else default_palette(len(names)))
        self.ignore_index = ignore_index

        self._add_pairs(image_dir, list_images(image_dir), lambda image: mask_dir / (image.stem + ".png"), "mask")

    def decode_label(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            if not self.has_palette:
                raise DataError(
                    f"{path}: RGB colour mask, but {self.classes_file} gives no palette to map colours to "
                    f"classes; add 'palette: [[r, g, b], ...]' (one per class) or store index masks"
                )
            return colour_to_index(raw, self.palette)
        label = raw.astype(np.int64)
        if self.ignore_index != IGNORE_INDEX:
            label[label == self.ignore_index] = IGNORE_INDEX
        return label
