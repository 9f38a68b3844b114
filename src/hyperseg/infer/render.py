"""Drawing label maps: palette colours, overlays on the image, a legend of the classes present, palette PNGs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from ..errors import HypersegError

__all__ = ["check_alpha", "colorize", "overlay", "with_legend", "label_image"]


def check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise HypersegError(f"alpha {alpha!r}: expected the overlay opacity as a number in [0, 1]")


def colorize(palette: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours of ``labels`` from ``palette`` (N, 3); indices past its end take its last colour."""
    return palette[np.clip(labels, 0, len(palette) - 1)]


def overlay(palette: np.ndarray, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` blended with the colours of ``labels`` at opacity ``alpha``."""
    check_alpha(alpha)
    blended = image.astype(np.float32) * (1 - alpha) + colorize(palette, labels).astype(np.float32) * alpha
    return blended.round().astype(np.uint8)


def with_legend(overlay: np.ndarray, labels: np.ndarray, class_names: Sequence[str], palette: np.ndarray) -> np.ndarray:
    """``overlay`` with a panel on its right: a swatch, the name and the pixel share of each class
    present in ``labels``, largest first."""
    from PIL import ImageDraw, ImageFont

    counts = np.bincount(labels.reshape(-1), minlength=len(class_names))[: len(class_names)]
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    row, font = 18, ImageFont.load_default()
    width = 12 + 16 + 8 + max((len(class_names[c]) for c in present), default=0) * 7 + 60
    height = max(overlay.shape[0], 8 + row * len(present))
    panel = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, c in enumerate(present):
        top = 6 + i * row
        draw.rectangle([12, top, 12 + 14, top + 14], fill=tuple(int(v) for v in palette[c]), outline=(0, 0, 0))
        share = 100 * counts[c] / labels.size
        draw.text((12 + 16 + 8, top + 1), f"{class_names[c]}  {share:.1f}%", fill=(0, 0, 0), font=font)
    canvas = np.full((height, overlay.shape[1] + width, 3), 255, np.uint8)
    canvas[: overlay.shape[0], : overlay.shape[1]] = overlay
    canvas[:, overlay.shape[1]:] = np.asarray(panel)
    return canvas


def label_image(palette: np.ndarray, labels: np.ndarray) -> Image.Image:
    """A palette-mode PNG: pixel values are class indices, colours come from the palette."""
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = palette.reshape(-1).tolist()
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img
