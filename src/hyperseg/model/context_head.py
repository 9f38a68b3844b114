"""Context heads: nested U-Nets that turn the backbone's last map into the context signal phi.

Two styles exist in the authors' released code:

* :class:`ContextHead` (v1_0, also used by the "unify" configuration): a 1x1 conv halves the
  channels, 2x2 stride-2 convs go down, the bottom is replaced by its global mean, and 1x1
  convs plus nearest upsampling come back up; phi is the concatenation of the first map and
  the top of the up path, so it has as many channels as the backbone head.
* :class:`FlatContextHead` (v0_1, PASCAL VOC): full width throughout, with upsampling before
  each 1x1 "flat" conv on the concatenation; phi is the output of the last flat conv.

Both need the stride-32 map divisible by ``2 ** (levels - 1)``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import HypersegError

__all__ = ["ContextHead", "FlatContextHead", "CONTEXT_HEADS", "CONTEXT_PADDING"]


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _global_mean(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


# Where an input the head cannot halve is padded (HyperSegConfig.context_padding).
CONTEXT_PADDING = ("image", "features")


class ContextHead(nn.Module):
    """The v1_0 nested U-Net: (B, C, h, w) -> phi (B, 2 * (C // 2), h, w)."""

    def __init__(self, in_channels: int, levels: int = 2) -> None:
        super().__init__()
        if levels < 1:
            raise HypersegError(f"context head levels must be >= 1, got {levels}")
        half = in_channels // 2
        self.levels = levels
        self.in_conv = _conv_bn_relu(in_channels, half, 1)
        self.down_blocks = nn.ModuleList(_conv_bn_relu(half, half, 2, stride=2) for _ in range(levels - 1))
        self.up_blocks = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(2 * half, half, 1), nn.Upsample(scale_factor=2, mode="nearest"))
            for _ in range(levels - 1)
        )
        self.out_channels = 2 * half if levels > 1 else half

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_conv(x)
        if self.levels == 1:
            return x
        skips = [x]
        for down in self.down_blocks:
            x = down(x)
            skips.append(x)
        x = _global_mean(x)
        for k in range(len(self.up_blocks) - 1, -1, -1):
            x = self.up_blocks[k](torch.cat((skips.pop(), x), dim=1))
        return torch.cat((skips.pop(), x), dim=1)


class FlatContextHead(nn.Module):
    """The v0_1 nested U-Net: (B, C, h, w) -> phi (B, C, h, w)."""

    def __init__(self, in_channels: int, levels: int = 3) -> None:
        super().__init__()
        if levels < 2:
            raise HypersegError(f"the v0_1 context head needs levels >= 2, got {levels}")
        c = in_channels
        self.levels = levels
        self.down_blocks = nn.ModuleList(_conv_bn_relu(c, c, 2, stride=2) for _ in range(levels - 1))
        # The top flat conv has no ReLU: phi is signed.
        self.up_blocks = nn.ModuleList(_conv_bn_relu(2 * c, c, 1, relu=k > 0) for k in range(levels - 1))
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.out_channels = c

    def forward(self, x: Tensor) -> Tensor:
        skips = [x]
        for down in self.down_blocks:
            x = down(x)
            skips.append(x)
        x = _global_mean(skips.pop())
        for k in range(len(self.up_blocks) - 1, -1, -1):
            x = self.up_blocks[k](torch.cat((skips.pop(), self.upsample(x)), dim=1))
        return x


CONTEXT_HEADS = {"v1_0": ContextHead, "v0_1": FlatContextHead}
