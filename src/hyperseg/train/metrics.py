"""Confusion-matrix metrics: mIoU, per-class IoU, pixel and mean class accuracy.

mIoU convention: the mean over classes that occur in the ground truth or the predictions of
the evaluated set (a class with TP + FP + FN = 0 is left out, as in cityscapesscripts and
MMSegmentation). The authors' test.py instead averages over *all* classes with
IoU = TP / (TP + FP + FN + 1e-6), so an absent class counts as 0; it is reported as
``miou_all_classes``. The two agree whenever every class occurs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import HypersegError

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix:
    """Accumulates a (C, C) matrix, rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, target: Tensor) -> None:
        """Add a batch of predicted and true label maps of equal shape."""
        if prediction.shape != target.shape:
            raise HypersegError(f"prediction shape {tuple(prediction.shape)} differs from target {tuple(target.shape)}")
        keep = (target != self.ignore_index) & (target >= 0) & (target < self.num_classes)
        t = target[keep].to(torch.int64).cpu()
        p = prediction[keep].to(torch.int64).cpu().clamp_(0, self.num_classes - 1)
        self.matrix += torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (no-op outside torch.distributed)."""
        if dist.is_available() and dist.is_initialized():
            m = self.matrix.to("cuda" if dist.get_backend() == "nccl" else "cpu")
            dist.all_reduce(m)
            self.matrix = m.cpu()

    def compute(self, class_names: Optional[Sequence[str]] = None) -> dict:
        m = self.matrix.double()
        tp = m.diag()
        gt = m.sum(1)
        pred = m.sum(0)
        union = gt + pred - tp
        present = union > 0
        iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.full_like(tp, float("nan")))
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        return {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "miou_all_classes": float((tp / (union + 1e-6)).mean()),
            "per_class_iou": {n: (None if torch.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "pixel_acc": float(tp.sum() / m.sum().clamp(min=1)),
            "mean_class_acc": float(acc[gt > 0].mean()) if (gt > 0).any() else float("nan"),
            "pixels": int(m.sum()),
        }
