"""Knowledge distillation: a frozen teacher's softened logits as a second target for the student.

The loss of a step is ``(1 - weight) * task + weight * T^2 * KL(softmax(t / T) || softmax(s / T))``,
the KL summed over classes and averaged over every pixel of the batch (void pixels too: the
teacher has an opinion there, and the task loss ignores them anyway). ``T^2`` keeps the gradient
of the soft term on the scale of the task loss as ``T`` grows (Hinton et al., 2015).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HypersegError
from ..model import list_models
from ..hub.weights import file_sha256, get_weights, is_weights_name
from ..runtime import load_runtime
from ..device import bf16_supported

__all__ = ["DistillationLoss", "Teacher", "soft_kl", "teacher_sha256"]


def soft_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over pixels of ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``; logits (B, C, H, W)."""
    log_q = F.log_softmax(student / temperature, dim=1)
    log_p = F.log_softmax(teacher / temperature, dim=1)
    per_pixel = (log_p.exp() * (log_p - log_q)).sum(1)  # (B, H, W)
    return per_pixel.mean() * temperature ** 2


def teacher_sha256(source: Optional[str]) -> Optional[str]:
    """The SHA-256 of the file ``distill.teacher`` loads (for a registered weights name, its file);
    None without a teacher, for a bare architecture name (no file), or for a missing file (which
    loading the teacher then reports). Sources resolve in the order the loader tries them."""
    if source is None:
        return None
    text = str(source)
    if is_weights_name(text):
        path = get_weights(text).path
    elif text in list_models():
        return None
    else:
        path = Path(text).expanduser()
    return file_sha256(path) if path.is_file() else None


class DistillationLoss(nn.Module):
    """The task loss mixed with :func:`soft_kl` against the teacher's logits."""

    def __init__(self, task: nn.Module, *, temperature: float, weight: float) -> None:
        super().__init__()
        self.task, self.temperature, self.weight = task, temperature, weight

    def forward(self, logits: Tensor, target: Tensor, teacher_logits: Tensor) -> Tensor:
        soft = soft_kl(logits, teacher_logits.to(logits.dtype), self.temperature)
        return (1 - self.weight) * self.task(logits, target) + self.weight * soft


class Teacher:
    """A frozen model on the fast PyTorch path (BatchNorm fused, ``inference_mode``) that takes the
    student's normalised batch and returns its logits, re-normalising when the two were trained
    with different mean/std."""

    def __init__(self, source: str, *, class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                 device: torch.device, amp_dtype: Any = None) -> None:
        precision = "bf16" if amp_dtype == torch.bfloat16 and bf16_supported(device) else "fp32"
        with torch.random.fork_rng(devices=[]):  # building it draws initial weights: not from the run's stream
            self.runtime = load_runtime(source, runtime="torch", precision=precision, device=device)
        theirs, ours = list(self.runtime.meta.get("class_names", [])), list(class_names)
        if theirs != ours:
            raise HypersegError(f"distill.teacher {source} predicts {len(theirs)} classes {theirs}, but the student "
                                f"trains on {len(ours)} classes {ours}; the teacher must have the same classes in the "
                                f"same order")
        t_mean, t_std = self.runtime.meta["mean"], self.runtime.meta["std"]
        same = list(map(float, t_mean)) == list(map(float, mean)) and list(map(float, t_std)) == list(map(float, std))
        # student input x = (u - m_s) / s_s; the teacher wants (u - m_t) / s_t = x * (s_s / s_t) + (m_s - m_t) / s_t
        self.scale = None if same else (torch.tensor(std) / torch.tensor(t_std)).view(1, -1, 1, 1).to(device)
        self.shift = None if same else ((torch.tensor(mean) - torch.tensor(t_mean)) / torch.tensor(t_std)
                                        ).view(1, -1, 1, 1).to(device)

    def __call__(self, images: Tensor) -> Tensor:
        with torch.inference_mode():
            x = images if self.scale is None else images * self.scale + self.shift
            logits = self.runtime(x)
        return logits.clone()  # a normal tensor: autograd may save it for the student's backward
