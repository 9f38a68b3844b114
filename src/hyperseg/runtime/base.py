"""The interface every runtime implements, and fitting images to a model's accepted input size.

A runtime maps a normalised float batch (B, 3, H, W) to float32 logits (B, C, H, W) for any
H and W, like the PyTorch model does. Runtimes whose model has a fixed input size fit each
image to it (replicate padding when the image is smaller, resizing otherwise) and map the
logits back. Models exported for a multiple of the network's padding unit are padded exactly as
the PyTorch model pads its input, so their outputs equal the PyTorch model's.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Runtime", "RUNTIMES", "PRECISIONS", "SHAPES", "fit_input", "restore_output", "padded_size"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
SHAPES = ("static", "dynamic")  # how a PyTorch model is converted: per input size, or once for all


def padded_size(size: tuple[int, int], multiple: tuple[int, int]) -> tuple[int, int]:
    """The next size (H, W) that the network's patch grid divides (what HyperSeg pads to)."""
    return size[0] + -size[0] % multiple[0], size[1] + -size[1] % multiple[1]


def fit_input(x: Tensor, target: tuple[int, int]) -> tuple[Tensor, str]:
    """``x`` at exactly ``target`` (H, W): padded on the right/bottom if it fits, else resized."""
    h, w = x.shape[-2:]
    th, tw = target
    if (h, w) == (th, tw):
        return x, "same"
    if h <= th and w <= tw:
        return F.pad(x, (0, tw - w, 0, th - h), mode="replicate"), "pad"
    return F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False), "resize"


def restore_output(logits: Tensor, size: tuple[int, int], how: str) -> Tensor:
    """Undo :func:`fit_input` on the logits: crop the padding, or resize back."""
    if how == "pad":
        return logits[..., : size[0], : size[1]]
    if how == "resize":
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


class Runtime:
    """A model ready for inference in some runtime.

    Attributes:
        name: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` (or ``"eager"``, the unprepared model).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``: what the runtime computes in, stated, never implied.
        meta: class names, palette, mean/std and whatever else the weights carry.
        device: where inputs should live (``cpu`` for every runtime but torch on CUDA).
    """

    name = "runtime"
    device = torch.device("cpu")
    training = False  # runtimes only infer; lets them stand in for an nn.Module in evaluation code

    def __init__(self, meta: dict[str, Any], precision: str) -> None:
        self.meta = dict(meta)
        self.precision = precision
        self.conversion_seconds = 0.0  # one-time cost of exporting/compiling, 0 when cached or not needed

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def mean(self) -> list[float]:
        return list(self.meta["mean"])

    @property
    def std(self) -> list[float]:
        return list(self.meta["std"])

    def eval(self) -> "Runtime":
        return self

    def train(self, mode: bool = True) -> "Runtime":
        return self

    def to(self, device: Any) -> "Runtime":
        return self

    def __call__(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised float -> (B, C, H, W) float32 logits."""
        x = x.float()
        if x.shape[0] == 1:
            return self.infer(x)
        return torch.cat([self.infer(x[i : i + 1]) for i in range(x.shape[0])])  # exported models take batch 1

    def infer(self, x: Tensor) -> Tensor:
        """One image (1, 3, H, W) -> logits (1, C, H, W)."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} {self.precision}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

