"""Segmentation losses with class weights and an ignore index."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HypersegError

__all__ = ["CrossEntropy", "BootstrappedCrossEntropy", "build_loss"]


class CrossEntropy(nn.Module):
    """Pixel-wise cross-entropy; ignored pixels do not count."""

    def __init__(self, class_weights: Optional[Sequence[float]] = None, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(logits.dtype)
        return F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore_index)


class BootstrappedCrossEntropy(CrossEntropy):
    """Hard-pixel mining as in the authors' training (SPEC 5.2), per image.

    Per-pixel losses (ignored pixels count as 0 and stay in the list) are sorted; if the
    (k+1)-th largest exceeds ``threshold`` the image's loss is the mean of all losses above it,
    otherwise the mean of the k largest. The batch loss is the mean over images.
    """

    def __init__(self, k: int = 4096, threshold: float = 0.3, class_weights: Optional[Sequence[float]] = None,
                 ignore_index: int = 255) -> None:
        super().__init__(class_weights, ignore_index)
        self.k, self.threshold = k, threshold

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        w = None if self.weight is None else self.weight.to(logits.dtype)
        pixel = F.cross_entropy(logits, target, weight=w, ignore_index=self.ignore_index, reduction="none")
        pixel = pixel.flatten(1)  # (B, H*W)
        k = min(self.k, pixel.shape[1] - 1)
        ranked, _ = pixel.sort(dim=1, descending=True)
        above = ranked > self.threshold
        hard = ranked[:, k] > self.threshold  # (B,)
        mean_above = (ranked * above).sum(1) / above.sum(1).clamp(min=1)
        mean_topk = ranked[:, :k].mean(1)
        return torch.where(hard, mean_above, mean_topk).mean()


def build_loss(name: str, *, class_weights: Optional[Sequence[float]] = None, ignore_index: int = 255,
               k: int = 4096, threshold: float = 0.3) -> nn.Module:
    if name in ("ce", "cross_entropy"):
        return CrossEntropy(class_weights, ignore_index)
    if name in ("bootstrapped_ce", "bce", "ohem"):
        return BootstrappedCrossEntropy(k, threshold, class_weights, ignore_index)
    raise HypersegError(f"unknown loss {name!r}; expected 'ce' or 'bootstrapped_ce'")
