"""Joint image/label augmentation on torchvision.transforms.v2, with an explicit random generator.

Every random draw comes from a ``torch.Generator`` handed in per sample, so a sample's
augmentation depends only on (seed, sample key): workers, processes and resumed runs all see
the same data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from .base import IGNORE_INDEX

__all__ = ["TrainTransform", "EvalTransform", "normalize", "sample_generator"]


def sample_generator(seed: int, key: int) -> torch.Generator:
    """The generator for one sample draw: a function of (seed, key) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + key) % (2**63 - 1))


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=gen).item()


def normalize(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 (3, H, W) -> normalised float32."""
    x = image.float().div_(255.0)
    return TF.normalize(x, list(mean), list(std))


@dataclass
class TrainTransform:
    """flip -> colour jitter -> random resize (with probability) -> rotation -> pad + random crop.

    Attributes:
        crop_size: (H, W) of the output; smaller images are padded (image 0, label 255).
            ``None`` keeps the size.
        scale_range: resize factor drawn uniformly from this range...
        scale_prob: ...with this probability (the authors use 0.5).
        hflip: probability of a horizontal flip.
        color_jitter: brightness/contrast/saturation strength, hue gets ``min(value, 0.5)``; 0 = off.
        rotation: maximum rotation in degrees (VOC recipe: 30); 0 = off.
        base_scale: every image is resized by this first (a model that runs on images resized by
            0.75 trains on them resized by 0.75), the random factor on top.
        focus_classes: class indices a crop is steered to (thin or rare classes: pole, sign...)...
        focus_prob: ...with this probability: one of the focus classes present in the label is
            drawn uniformly, then one of its pixels, then a crop position containing that pixel.
            Without a focus class in the label the crop is uniform. 0 = off (and no draw is made,
            so runs without it keep their random streams).
    """

    mean: Sequence[float]
    std: Sequence[float]
    crop_size: Optional[Sequence[int]] = None
    scale_range: Sequence[float] = (0.5, 2.0)
    scale_prob: float = 0.5
    hflip: float = 0.5
    color_jitter: float = 0.0
    rotation: float = 0.0
    pad_only: bool = False  # VOC: pad to crop_size (right/bottom) without cropping
    base_scale: float = 1.0
    focus_classes: Sequence[int] = ()
    focus_prob: float = 0.0

    def __call__(self, image: Tensor, label: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        img = tv_tensors.Image(image)
        lbl = tv_tensors.Mask(label.unsqueeze(0))
        if self.hflip and torch.rand((), generator=gen).item() < self.hflip:
            img, lbl = TF.horizontal_flip(img), TF.horizontal_flip(lbl)
        if self.color_jitter:
            s = self.color_jitter
            img = TF.adjust_brightness(img, _uniform(gen, max(0.0, 1 - s), 1 + s))
            img = TF.adjust_contrast(img, _uniform(gen, max(0.0, 1 - s), 1 + s))
            img = TF.adjust_saturation(img, _uniform(gen, max(0.0, 1 - s), 1 + s))
            img = TF.adjust_hue(img, _uniform(gen, -min(s, 0.5), min(s, 0.5)))
        s = self.base_scale
        if self.scale_prob and torch.rand((), generator=gen).item() < self.scale_prob:
            s *= _uniform(gen, *self.scale_range)
        if s != 1:
            h, w = img.shape[-2:]
            size = [max(1, round(h * s)), max(1, round(w * s))]
            img = TF.resize(img, size, interpolation=InterpolationMode.BICUBIC, antialias=True)
            lbl = TF.resize(lbl, size, interpolation=InterpolationMode.NEAREST)
        if self.rotation:
            angle = _uniform(gen, -self.rotation, self.rotation)
            img = TF.rotate(img, angle, interpolation=InterpolationMode.BILINEAR, fill=0)
            lbl = TF.rotate(lbl, angle, interpolation=InterpolationMode.NEAREST, fill=IGNORE_INDEX)
        if self.crop_size is not None:
            ch, cw = self.crop_size
            h, w = img.shape[-2:]
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            if ph or pw:
                img = TF.pad(img, [0, 0, pw, ph], fill=0)
                lbl = TF.pad(lbl, [0, 0, pw, ph], fill=IGNORE_INDEX)
                h, w = img.shape[-2:]
            if not self.pad_only:
                top, left = self._crop_position(lbl[0], (ch, cw), gen)
                img = TF.crop(img, top, left, ch, cw)
                lbl = TF.crop(lbl, top, left, ch, cw)
        return normalize(img.as_subclass(Tensor), self.mean, self.std), lbl.as_subclass(Tensor)[0].long()


    def _crop_position(self, label: Tensor, crop: Sequence[int], gen: torch.Generator) -> tuple[int, int]:
        """(top, left) of the crop: uniform, or around a pixel of a focus class (see ``focus_prob``)."""
        (h, w), (ch, cw) = label.shape, crop
        if self.focus_prob and self.focus_classes and torch.rand((), generator=gen).item() < self.focus_prob:
            present = [c for c in self.focus_classes if bool((label == c).any())]
            if present:
                cls = present[int(torch.randint(0, len(present), (), generator=gen))]
                ys, xs = (label == cls).nonzero(as_tuple=True)
                i = int(torch.randint(0, len(ys), (), generator=gen))
                y, x = int(ys[i]), int(xs[i])
                # positions whose window holds (y, x): top in [y - ch + 1, y], clipped to the image
                top = int(torch.randint(max(0, y - ch + 1), min(y, h - ch) + 1, (), generator=gen))
                left = int(torch.randint(max(0, x - cw + 1), min(x, w - cw) + 1, (), generator=gen))
                return top, left
        top = int(torch.randint(0, h - ch + 1, (), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (), generator=gen))
        return top, left


@dataclass
class EvalTransform:
    """Normalisation only: evaluation runs at the native size (the model accepts any size)."""

    mean: Sequence[float]
    std: Sequence[float]

    def __call__(self, image: Tensor, label: Tensor, gen: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        return normalize(image, self.mean, self.std), label
