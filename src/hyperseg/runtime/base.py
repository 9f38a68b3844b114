"""The interface every runtime implements, and fitting images to a model's accepted input size.

A runtime maps a normalised float batch (B, 3, H, W) to float32 logits (B, C, H, W) for any
H and W, like the PyTorch model does. Runtimes whose model has a fixed input size fit each
image to it (replicate padding when the image is smaller, resizing otherwise) and map the
logits back. Models exported for a multiple of the network's padding unit are padded exactly as
the PyTorch model pads its input, so their outputs equal the PyTorch model's.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import HypersegError, ResourceError
from .labels import resized_labels

__all__ = ["Runtime", "fit_input", "restore_output", "padded_size", "scaled_size",
           "input_scale", "model_input_size", "to_seen_size", "is_out_of_memory", "out_of_memory_error",
           "run_guarded"]


# How allocation failures read: torch's CPU allocator ("DefaultCPUAllocator: can't allocate memory",
# "not enough memory"), CUDA ("CUDA out of memory"), onnxruntime ("Failed to allocate memory"),
# OpenVINO (std::bad_alloc) and the C library (ENOMEM, "Cannot allocate memory").
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|not enough memory|"
                            r"failed to allocate memory|bad_alloc", re.IGNORECASE)

_T = TypeVar("_T")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure of torch, an ONNX runtime or Python itself."""
    if isinstance(exc, HypersegError):
        return False  # already one of ours, said in our words
    return isinstance(exc, MemoryError) or (isinstance(exc, Exception) and bool(_OUT_OF_MEMORY.search(str(exc))))


def out_of_memory_error(shape: Sequence[int]) -> ResourceError:
    """The one sentence for a network that ran out of memory on an input of ``shape`` (B, C, H, W)."""
    batch, (h, w) = int(shape[0]) if len(shape) == 4 else 1, (int(shape[-2]), int(shape[-1]))
    what = f"a batch of {batch} {h}x{w} inputs" if batch > 1 else f"a {h}x{w} input"
    smaller = max(32, max(h, w) // 2)  # a limit that halves what failed, whatever limit was in force
    return ResourceError(f"not enough memory to run the network on {what}; segment large images at a smaller size "
                         f"with --max-size (max_size in Python), e.g. --max-size {smaller}")


def run_guarded(fn: Callable[[Tensor], _T], x: Tensor) -> _T:
    """``fn(x)``, with an allocation failure turned into :func:`out_of_memory_error` for ``x``'s shape."""
    try:
        return fn(x)
    except Exception as exc:  # MemoryError included
        if not is_out_of_memory(exc):
            raise
    # raised outside the handler, so that neither the cause nor its traceback keeps the failed call's
    # tensors alive: the memory is free again for whatever the caller does next
    raise out_of_memory_error(tuple(x.shape))


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """The (H, W) an image of ``size`` is resized to for a model that sees images at ``scale``,
    never below 32 px a side (the smallest a model takes) unless the image itself is smaller."""
    h, w = int(size[0]), int(size[1])
    if scale == 1:
        return h, w
    return max(min(h, 32), round(h * scale)), max(min(w, 32), round(w * scale))


def input_scale(model: Any) -> float:
    """The scale a model sees images at: its ``meta["input_scale"]`` (a model trained on images
    resized by 0.75 runs on them resized by 0.75), 1 by default."""
    return float(getattr(model, "meta", {}).get("input_scale", 1.0))


def model_input_size(model: Any, size: Sequence[int]) -> tuple[int, int]:
    """The (H, W) a model sees an image of ``size`` at: resized by its :func:`input_scale`, never
    below 32 px a side (the smallest a model takes) unless the image itself is smaller."""
    return scaled_size(size, input_scale(model))


def to_seen_size(model: Any, x: Tensor) -> Tensor:
    """A normalised batch resized to the size ``model`` sees it at (antialiased when shrinking, like
    the training transform's downscaling); unchanged for a model without an input scale."""
    size = (int(x.shape[-2]), int(x.shape[-1]))
    seen = model_input_size(model, size)
    if seen == size:
        return x
    return F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=input_scale(model) < 1)


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

    def __call__(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised float -> (B, C, H, W) float32 logits."""
        x = x.float()
        if x.shape[0] == 1:
            return run_guarded(self.infer, x)
        # exported models take batch 1
        return torch.cat([run_guarded(self.infer, x[i : i + 1]) for i in range(x.shape[0])])

    def infer(self, x: Tensor) -> Tensor:
        """One image (1, 3, H, W) -> logits (1, C, H, W)."""
        raise NotImplementedError

    def labels(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, 3, h, w) normalised float -> (B, H, W) labels of the logits resized bilinearly to
        ``size``: what a single pass of prediction returns (uint8 when the classes fit in it)."""
        return resized_labels(self(x), size)

    def describe(self) -> str:
        return f"{self.name} {self.precision}"

    # set by load_runtime when --precision auto chose the precision: what it took, and why
    precision_choice: Any = None

    # set by load_runtime when a faster runtime than the one it took is a pip install away
    advice: Any = None

    def statement(self) -> str:
        """One line for the user: the runtime, why its precision when ``auto`` chose it, and how to
        get a faster path when one is missing."""
        choice = self.precision_choice
        return (self.describe() + (f"; precision auto: {choice.reason}" if choice is not None else "")
                + (f"; {self.advice}" if self.advice else ""))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

