"""Meta blocks: decoder blocks whose convolution weights come from the weight mapper.

Each block receives a weight grid (B, num_weights, gh, gw): one flat weight vector per patch.
The vector is laid out row-major per convolution, in the order of :meth:`weight_layout`; for
the inverted residual that is pw1 (hidden, in), dw (hidden, k, k), pw2 (out, hidden), exactly
as in the authors' checkpoints.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ...errors import HypersegError
from .dpwconv import (
    PatchDepthwiseConv,
    PatchPointwiseConv,
    merge_patches,
    patch_rows,
    split_patches,
    split_windows,
)

__all__ = ["PointwiseMetaBlock", "InvertedResidualMetaBlock", "WINDOW_MODES"]

# Where the 1-px ring that a patch's depthwise conv needs comes from:
#   "input"  -- the neighbours' block *input*, pushed through this patch's pw1 (authors' v1_0);
#   "hidden" -- the neighbours' pw1 *output*, made with their own weights (authors' v0_1).
WINDOW_MODES = ("input", "hidden")


def fuse_dynamic_bn(block: nn.Module, pairs: list[tuple[nn.Module, str]],
                    scale_weights: Callable[[slice, Tensor], None]) -> None:
    """Fold each BatchNorm of ``pairs`` (patch conv, BN attribute) into the weights that feed its conv.

    BN(conv(x; w)) = conv(x; w * s) + t per output channel, so the rows of the weight vector that
    produce the conv's weights are scaled by ``s`` (``scale_weights(segment, factor per weight)``,
    done by whoever owns them) and ``t`` becomes the conv's bias. Eval-mode semantics.
    """
    offset = 0
    for (conv, bn_attr), (_, shape) in zip(pairs, block.weight_layout()):
        bn = getattr(block, bn_attr)
        scale = bn.running_var.add(bn.eps).rsqrt() * (bn.weight if bn.weight is not None else 1)
        shift = (bn.bias if bn.bias is not None else 0) - bn.running_mean * scale
        per_row = math.prod(shape[1:])
        segment = slice(offset, offset + shape[0] * per_row)
        with torch.no_grad():
            scale_weights(segment, scale.repeat_interleave(per_row))  # one factor per weight of this conv
            conv.bias = nn.Parameter(shift.detach().clone())
        setattr(block, bn_attr, nn.Identity())
        offset = segment.stop


class PointwiseMetaBlock(nn.Module):
    """Dynamic patch-wise 1x1 conv -> BN -> ReLU (the paper's "pw1 only" block)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv = PatchPointwiseConv(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def weight_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """(conv name, weight shape with output channels first) for each segment of the vector."""
        return [("conv", (self.out_channels, self.in_channels))]

    @property
    def num_weights(self) -> int:
        return sum(math.prod(shape) for _, shape in self.weight_layout())

    def fuse(self, scale_weights: Callable[[slice, Tensor], None]) -> None:
        """Fold the BN into the generated weights; see :func:`fuse_dynamic_bn`."""
        fuse_dynamic_bn(self, [(self.conv, "bn")], scale_weights)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        batch, grid = x.shape[0], (weights.shape[-2], weights.shape[-1])
        w = patch_rows(weights).reshape(-1, self.out_channels, self.in_channels)  # (P, out, in)
        y = self.conv(split_patches(x, grid), w)  # (P, out, ph, pw)
        y = merge_patches(y, batch, grid)  # (B, out, H, W)
        return self.act(self.bn(y))


class InvertedResidualMetaBlock(nn.Module):
    """Dynamic patch-wise inverted residual: pw1 -> BN -> ReLU6 -> dw -> BN -> ReLU6 -> pw2 -> BN.

    The depthwise conv of a patch needs a ring of ``kernel_size // 2`` pixels around it;
    ``window`` selects where that ring comes from (see :data:`WINDOW_MODES`). BatchNorm runs on
    the patch tensors, so in training mode its statistics include the ring pixels as in the
    authors' code.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        expand_ratio: float = 2.0,
        window: str = "input",
    ) -> None:
        super().__init__()
        if window not in WINDOW_MODES:
            raise HypersegError(f"window must be one of {WINDOW_MODES}, got {window!r}")
        hidden = int(round(in_channels * expand_ratio))
        self.in_channels, self.hidden_channels, self.out_channels = in_channels, hidden, out_channels
        self.kernel_size = kernel_size
        self.window = window
        self.residual = in_channels == out_channels
        self.pw1 = PatchPointwiseConv(in_channels, hidden)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = PatchDepthwiseConv(hidden, kernel_size)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.pw2 = PatchPointwiseConv(hidden, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU6(inplace=True)

    def weight_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        k, h = self.kernel_size, self.hidden_channels
        return [("pw1", (h, self.in_channels)), ("dw", (h, k, k)), ("pw2", (self.out_channels, h))]

    @property
    def num_weights(self) -> int:
        return sum(math.prod(shape) for _, shape in self.weight_layout())

    def fuse(self, scale_weights: Callable[[slice, Tensor], None]) -> None:
        """Fold the three BNs into the generated weights; see :func:`fuse_dynamic_bn`."""
        fuse_dynamic_bn(self, [(self.pw1, "bn1"), (self.dw, "bn2"), (self.pw2, "bn3")], scale_weights)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        batch, grid = x.shape[0], (weights.shape[-2], weights.shape[-1])
        rows = patch_rows(weights)  # (P, num_weights)
        w1, wd, w2 = torch.split(rows, [math.prod(s) for _, s in self.weight_layout()], dim=1)
        w1 = w1.reshape(-1, self.hidden_channels, self.in_channels)  # (P, hidden, in)
        wd = wd.reshape(-1, self.hidden_channels, self.kernel_size, self.kernel_size)  # (P, hidden, k, k)
        w2 = w2.reshape(-1, self.out_channels, self.hidden_channels)  # (P, out, hidden)
        ring = self.kernel_size // 2

        if self.window == "input":
            y = self.act(self.bn1(self.pw1(split_windows(x, grid, ring), w1)))  # (P, hidden, ph+2r, pw+2r)
        else:
            y = self.act(self.bn1(self.pw1(split_patches(x, grid), w1)))  # (P, hidden, ph, pw)
            y = split_windows(merge_patches(y, batch, grid), grid, ring)  # (P, hidden, ph+2r, pw+2r)
        y = self.act(self.bn2(self.dw(y, wd)))  # (P, hidden, ph, pw)
        y = self.bn3(self.pw2(y, w2))  # (P, out, ph, pw)
        y = merge_patches(y, batch, grid)  # (B, out, H, W)
        return x + y if self.residual else y
