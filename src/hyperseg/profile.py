"""Parameter and multiply-accumulate counts, with the dynamic convolutions as executed.

The counting rule is the one docs/authors-code.md explains for comparing with the paper (column
B+D): static convolutions count output elements x (input channels / groups) x kernel area,
affine BatchNorm counts 4 operations per element and nearest upsampling 1 (thop's rules, which
the paper's numbers come from), and every patch-wise convolution counts its work on the
patches it actually computes, including pw1 on the ring pixels of the windows.
"""
from __future__ import annotations

import copy
from typing import Union

import torch
from torch import nn

from .errors import HypersegError
from .model.decoder.dpwconv import PatchDepthwiseConv, PatchPointwiseConv
from .model.hyperseg import MIN_INPUT_SIZE

__all__ = ["profile"]


def profile(model: nn.Module, input_size: Union[int, tuple[int, int]], *, batch: int = 1) -> dict[str, Union[int, float]]:
    """``{"params": int, "gmacs": float}`` for one forward pass at ``input_size`` = (H, W).

    The pass runs on a copy of the model on the ``meta`` device: only shapes are computed, so any
    size can be counted without the memory (or time) a real pass would take.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if not all(isinstance(v, int) and v >= MIN_INPUT_SIZE for v in (h, w)) or not (isinstance(batch, int) and batch >= 1):
        raise HypersegError(f"profile: input size {h}x{w} (batch {batch}) is not valid; expected whole numbers, "
                            f"height and width at least {MIN_INPUT_SIZE} and batch at least 1")
    params = sum(p.numel() for p in model.parameters())
    model = copy.deepcopy(model).to("meta")
    total = [0]

    def count(mod: nn.Module, args, out) -> None:
        if isinstance(mod, (PatchPointwiseConv, PatchDepthwiseConv)):
            total[0] += out.numel() * mod.macs_per_output()
        elif isinstance(mod, nn.Conv2d):
            total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.BatchNorm2d):
            total[0] += args[0].numel() * (4 if mod.affine else 2)
        elif isinstance(mod, nn.Upsample):
            total[0] += out.numel()
        elif isinstance(mod, nn.Linear):
            total[0] += out.numel() * mod.in_features

    for m in model.modules():
        m.register_forward_hook(count)
    in_channels = getattr(getattr(model, "config", None), "in_channels", 3)
    model.eval()
    with torch.no_grad():
        model(torch.zeros(batch, in_channels, h, w, dtype=next(model.parameters()).dtype, device="meta"))
    return {"params": params, "gmacs": total[0] / 1e9}
