"""Segmentation losses with class weights and an ignore index."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HypersegError, require

__all__ = ["BootstrappedCrossEntropy", "WithLovasz", "build_loss", "LOSSES"]

LOSSES = ("ce", "bootstrapped_ce")  # plain cross-entropy, or the authors' hard-pixel mining


class BootstrappedCrossEntropy(nn.CrossEntropyLoss):
    """Hard-pixel mining as in the authors' training (docs/authors-code.md), per image.

    Per-pixel losses (ignored pixels count as 0 and stay in the list) are sorted; if the
    (k+1)-th largest exceeds ``threshold`` the image's loss is the mean of all losses above it,
    otherwise the mean of the k largest. The batch loss is the mean over images.
    """

    def __init__(self, k: int = 4096, threshold: float = 0.3, class_weights: Optional[Sequence[float]] = None,
                 ignore_index: int = 255) -> None:
        super().__init__(weight=_weights(class_weights), ignore_index=ignore_index, reduction="none")
        self.k, self.threshold = k, threshold

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.to(logits.dtype)  # float64 logits in the tests
        pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="none")
        pixel = pixel.flatten(1)  # (B, H*W); ignored pixels are 0
        k = min(self.k, pixel.shape[1] - 1)
        ranked, _ = pixel.sort(dim=1, descending=True)
        above = ranked > self.threshold
        hard = ranked[:, k] > self.threshold  # (B,)
        mean_above = (ranked * above).sum(1) / above.sum(1).clamp(min=1)
        mean_topk = ranked[:, :k].mean(1)
        return torch.where(hard, mean_above, mean_topk).mean()


class WithLovasz(nn.Module):
    """``task + weight * Lovasz-softmax`` (Berman et al., CVPR 2018), from segmentation_models_pytorch.

    Lovasz-softmax is a convex surrogate of the Jaccard loss, averaged over the classes present in
    the batch (void pixels left out): each class counts once, whatever its pixel share, so thin
    classes (pole, sign) weigh as much as road, as they do in mIoU. Per-pixel cross-entropy alone
    gives a pole almost nothing, which is why it is added to, not swapped for, the task loss.

    The Lovasz term sorts every pixel once per class, which on a CPU costs more than the rest of
    the loss (8 crops of 256x320, 11 classes, idle 2-core Xeon: 0.72 s a step, forward and
    backward); ``stride`` 2 scores it on every second row and column (0.16 s), a regular quarter
    of the pixels. The task loss always sees every pixel.
    """

    def __init__(self, task: nn.Module, weight: float, ignore_index: int = 255, stride: int = 1) -> None:
        super().__init__()
        losses = require("segmentation_models_pytorch.losses", "smp", "loss.lovasz_weight > 0")
        self.task, self.weight, self.stride = task, weight, stride
        self.lovasz = losses.LovaszLoss("multiclass", per_image=False, ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        s = self.stride
        return self.task(logits, target) + self.weight * self.lovasz(logits[:, :, ::s, ::s], target[:, ::s, ::s])


def _weights(class_weights: Optional[Sequence[float]]) -> Optional[Tensor]:
    return None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)


def build_loss(name: str, *, class_weights: Optional[Sequence[float]] = None, ignore_index: int = 255,
               k: int = 4096, threshold: float = 0.3, lovasz_weight: float = 0.0,
               lovasz_stride: int = 2) -> nn.Module:
    """``"ce"``: torch's pixel-wise cross-entropy; ``"bootstrapped_ce"``: :class:`BootstrappedCrossEntropy`;
    either plus ``lovasz_weight`` times Lovasz-softmax when that is > 0 (:class:`WithLovasz`)."""
    if name == "ce":
        task = nn.CrossEntropyLoss(weight=_weights(class_weights), ignore_index=ignore_index)
    elif name == "bootstrapped_ce":
        task = BootstrappedCrossEntropy(k, threshold, class_weights, ignore_index)
    else:
        raise HypersegError(f"unknown loss {name!r}; expected one of {LOSSES}")
    return WithLovasz(task, lovasz_weight, ignore_index, lovasz_stride) if lovasz_weight > 0 else task
