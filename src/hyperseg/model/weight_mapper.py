"""Weight mappers: grouped 1x1 convolutions that turn the context signal into decoder weights."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..errors import HypersegError
from .channel_division import divide_channels

__all__ = ["WeightMapper", "StaticWeights", "SIGNAL_SLICING"]

# How each weight layer reads the signal:
#   "partition" -- disjoint consecutive slices (paper Eq. 5);
#   "prefix"    -- every layer reads phi[:, :C_i], an overlapping prefix. This is the authors'
#                  v1_0 behaviour (upstream issue #23): checkpoints trained with it need it, and it leaves
#                  the signal channels >= max(C_i) unread.
SIGNAL_SLICING = ("partition", "prefix")


def _ceil_to(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


class WeightMapper(nn.Module):
    """Maps the signal (B, signal_channels, gh, gw) to one weight grid per decoder level.

    Args:
        signal_channels: channels of the context signal phi.
        weights_per_level: number of dynamic weights of each decoder level, coarsest first.
        weight_groups: groups of each weight layer's 1x1 conv, in layer order.
        unify_level: if set, levels >= ``unify_level - 1`` share one weight layer (the authors'
            Cityscapes HyperSeg-S); otherwise each level has its own.
        signal_slicing: ``"partition"`` or ``"prefix"``, see :data:`SIGNAL_SLICING`.
        channel_division: ``"released"`` or ``"paper"`` rule of
            :func:`~hyperseg.model.channel_division.divide_channels`.
    """

    def __init__(
        self,
        signal_channels: int,
        weights_per_level: Sequence[int],
        weight_groups: Sequence[int],
        *,
        unify_level: Optional[int] = None,
        signal_slicing: str = "partition",
        channel_division: str = "released",
    ) -> None:
        super().__init__()
        if signal_slicing not in SIGNAL_SLICING:
            raise HypersegError(f"signal_slicing must be one of {SIGNAL_SLICING}, got {signal_slicing!r}")
        num_levels = len(weights_per_level)
        if unify_level is None:
            layer_levels = [[level] for level in range(num_levels)]
        else:
            first_shared = max(unify_level - 1, 0)
            layer_levels = [[level] for level in range(first_shared)] + [list(range(first_shared, num_levels))]
        if len(weight_groups) < len(layer_levels):
            raise HypersegError(
                f"weight_groups needs one entry per weight layer ({len(layer_levels)}), got {list(weight_groups)}"
            )
        self.layer_levels = layer_levels
        self.weights_per_level = list(weights_per_level)
        self.layer_weights = [sum(self.weights_per_level[lv] for lv in levels) for levels in layer_levels]
        unit = max(weight_groups)
        self.signal_split = divide_channels(signal_channels, self.layer_weights, unit, channel_division)
        if signal_slicing == "prefix":
            self.signal_offsets = [0] * len(layer_levels)
        else:
            self.signal_offsets = [sum(self.signal_split[:i]) for i in range(len(layer_levels))]
        self.signal_slicing = signal_slicing

        self.layers = nn.ModuleList()
        for channels, n_weights, groups in zip(self.signal_split, self.layer_weights, weight_groups):
            if channels % groups:
                raise HypersegError(f"a weight layer reading {channels} signal channels cannot use {groups} groups")
            # The conv's output is rounded up to a multiple of the groups and then truncated.
            self.layers.append(nn.Conv2d(channels, _ceil_to(n_weights, groups), 1, groups=groups, bias=False))

    @property
    def unread_channels(self) -> range:
        """Signal channels that no weight layer reads (non-empty only under prefix slicing)."""
        end = max(off + c for off, c in zip(self.signal_offsets, self.signal_split))
        return range(end, sum(self.signal_split))

    def level_rows(self, level: int) -> tuple[int, slice]:
        """(layer index, output rows) that hold the weights of ``level``."""
        for index, levels in enumerate(self.layer_levels):
            if level in levels:
                start = sum(self.weights_per_level[lv] for lv in levels if lv < level)
                return index, slice(start, start + self.weights_per_level[level])
        raise IndexError(f"no decoder level {level}")

    def forward(self, signal: Tensor) -> list[Tensor]:
        out: list[Tensor] = []
        for layer, offset, channels, n_weights, levels in zip(
            self.layers, self.signal_offsets, self.signal_split, self.layer_weights, self.layer_levels
        ):
            w = layer(signal[:, offset : offset + channels])[:, :n_weights]  # (B, n_weights, gh, gw)
            out.extend(torch.split(w, [self.weights_per_level[lv] for lv in levels], dim=1))
        return out


class StaticWeights(nn.Module):
    """Learned weights shared by every patch and image: the paper's "w/o DPWConv" ablation.

    Produces the same per-level grids as :class:`WeightMapper` with a 1x1 grid, so the decoder
    runs unchanged and computes ordinary convolutions.
    """

    def __init__(self, layouts: Sequence[Sequence[tuple[str, tuple[int, ...]]]]) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        for layout in layouts:
            # Kaiming-uniform bound per convolution, from its fan-in.
            parts = []
            for _, shape in layout:
                bound = 1.0 / math.sqrt(math.prod(shape[1:]))
                parts.append(torch.empty(math.prod(shape)).uniform_(-bound, bound))
            self.weights.append(nn.Parameter(torch.cat(parts)))
        self.weights_per_level = [w.numel() for w in self.weights]

    def level_rows(self, level: int) -> tuple[int, slice]:
        return level, slice(0, self.weights_per_level[level])

    def forward(self, batch: int) -> list[Tensor]:
        return [w.view(1, -1, 1, 1).expand(batch, -1, 1, 1) for w in self.weights]
