"""Reading images and label maps with checks that name the file and say what was expected."""
from __future__ import annotations

import stat
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import HypersegError

__all__ = ["read_image", "read_label", "DataError", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(HypersegError):
    """A data file is missing, unreadable, or not what the dataset expects."""


def _open(path: Union[str, Path]) -> Image.Image:
    """Decode one image file, turned upright by its EXIF orientation."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise DataError(f"{path} is {kind}; expected an image file")
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS (89.5 MP) and refuses at twice that, both while
            # reading the header; as an error the warning refuses the file before anything is decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.load()
            img = ImageOps.exif_transpose(img)  # a phone photo stored sideways with an orientation tag
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc.__class__.__name__}: {exc})") from None
    return img


def read_image(path: Union[str, Path]) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3).

    Grayscale, palette and RGBA images are converted to RGB (alpha is dropped); 16-bit images
    are scaled to 8 bits by their full 16-bit range.
    """
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.max() > 65535:
            raise DataError(f"{path}: 32-bit integer images are not supported; expected 8- or 16-bit")
        arr = np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        raise DataError(f"{path}: floating-point images are not supported; expected an 8- or 16-bit image")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_label(path: Union[str, Path]) -> np.ndarray:
    """A label map as it is stored: (H, W) for index PNGs, (H, W, 3) for RGB colour labels."""
    img = _open(path)
    if img.mode in ("RGB", "RGBA"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    if img.mode in ("L", "P"):
        return np.asarray(img, dtype=np.uint8)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img, dtype=np.int64)
    raise DataError(f"{path}: label maps must be index (L/P/16-bit) or RGB PNGs, got mode {img.mode}")
