"""The multi-scale decoder: a U-Net of meta blocks, coarsest level first."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import HypersegError
from .meta_blocks import InvertedResidualMetaBlock, PointwiseMetaBlock
from .positional_encoding import PositionalEncoding

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Level l takes skip l, the bilinearly upsampled output of level l-1 and the coordinates.

    Args:
        skip_channels: channels of the skip features, coarsest first (F5, F4, ..., and the
            image itself for a sixth level).
        level_channels: output channels per level; the last level outputs ``num_classes``.
            ``None`` makes each level output its skip's channel count (the authors' v0_1).
        kernel_sizes: 1 gives a pointwise meta block, k > 1 an inverted residual with a k x k
            depthwise conv.
        expand_ratio: hidden/input channel ratio of the inverted residuals.
        num_classes: output channels of the last level.
        positional_encoding: prepend the two coordinate channels at every level.
        window: ring semantics of the inverted residuals (see ``meta_blocks.WINDOW_MODES``).
    """

    def __init__(
        self,
        skip_channels: Sequence[int],
        *,
        level_channels: Optional[Sequence[int]],
        kernel_sizes: Sequence[int],
        expand_ratio: float,
        num_classes: int,
        positional_encoding: bool = True,
        window: str = "input",
    ) -> None:
        super().__init__()
        num_levels = len(kernel_sizes)
        if len(skip_channels) != num_levels:
            raise HypersegError(f"{num_levels} decoder levels need {num_levels} skip features, got {len(skip_channels)}")
        if level_channels is None:
            level_channels = list(skip_channels)
        if len(level_channels) < num_levels - 1:
            raise HypersegError(
                f"decoder_channels needs at least {num_levels - 1} entries for {num_levels} levels, "
                f"got {list(level_channels)}"
            )
        self.positional_encoding = PositionalEncoding() if positional_encoding else None
        coord_channels = PositionalEncoding.channels if positional_encoding else 0

        self.levels = nn.ModuleList()
        prev = 0
        for level, (skip, k) in enumerate(zip(skip_channels, kernel_sizes)):
            out = num_classes if level == num_levels - 1 else level_channels[level]
            in_channels = coord_channels + skip + prev
            if k == 1:
                block: nn.Module = PointwiseMetaBlock(in_channels, out)
            else:
                block = InvertedResidualMetaBlock(
                    in_channels, out, kernel_size=k, expand_ratio=expand_ratio, window=window
                )
            self.levels.append(block)
            prev = out
        self.out_channels = prev

    @property
    def weights_per_level(self) -> list[int]:
        return [block.num_weights for block in self.levels]

    def forward(self, skips: Sequence[Tensor], weights: Sequence[Tensor]) -> Tensor:
        x: Optional[Tensor] = None
        for skip, block, w in zip(skips, self.levels, weights):
            if x is None:
                y = skip
            else:
                up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                y = torch.cat((skip, up), dim=1)
            if self.positional_encoding is not None:
                y = self.positional_encoding(y)
            x = block(y, w)
        assert x is not None
        return x
