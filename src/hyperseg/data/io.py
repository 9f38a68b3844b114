"""Reading images and label maps with checks that name the file and say what was expected."""
from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path
from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import HypersegError

__all__ = ["read_image", "read_label", "decode_image", "DataError", "ImageTooLargeError", "UnsupportedImageError", "IMAGE_EXTENSIONS"]

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
    return _decode(path, path)


class ImageTooLargeError(DataError):
    """An image over the pixel limit: refused from its header, before decoding."""


class UnsupportedImageError(DataError):
    """A readable image in a pixel format we do not segment (floating point, 32-bit integer)."""


def _decode(source: Union[Path, BinaryIO], name: Union[str, Path], max_pixels: Optional[int] = None) -> Image.Image:
    """Decode an image from a file or a binary stream; ``name`` is what errors call it. An image
    over ``max_pixels`` (or Pillow's decompression-bomb limit) is refused from its header."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above Image.MAX_IMAGE_PIXELS (89.5 MP) and refuses at twice that, both while
            # reading the header; as an error the warning refuses the file before anything is decoded
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageTooLargeError(f"{name}: {img.width}x{img.height} is {img.width * img.height / 1e6:.3g} "
                                         f"megapixels; the limit is {max_pixels / 1e6:g}")
            img.load()
            img = ImageOps.exif_transpose(img)  # a phone photo stored sideways with an orientation tag
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: cannot read the image (its bytes are not PNG, JPEG, BMP, TIFF, WebP or "
                        f"another format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DataError(f"{name}: cannot read the image ({exc.__class__.__name__}: {exc})") from None
    return img


def read_image(path: Union[str, Path]) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3).

    Grayscale, palette and RGBA images are converted to RGB (alpha is dropped); 16-bit images
    are scaled to 8 bits by their full 16-bit range.
    """
    return _to_rgb(_open(path), path)


def decode_image(data: bytes, name: str = "the image", *, max_pixels: Optional[int] = None) -> np.ndarray:
    """:func:`read_image` for the bytes of an image file held in memory (an upload)."""
    return _to_rgb(_decode(io.BytesIO(data), name, max_pixels), name)


def _to_rgb(img: Image.Image, path: Union[str, Path]) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.max() > 65535:
            raise UnsupportedImageError(f"{path}: 32-bit integer images are not supported; expected 8- or 16-bit")
        arr = np.clip(arr / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        raise UnsupportedImageError(f"{path}: floating-point images are not supported; expected an 8- or 16-bit image")
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
