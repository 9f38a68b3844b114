"""Positional encoding: two coordinate channels prepended to every decoder level's input."""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["coordinate_grid", "PositionalEncoding"]


def _unit_linspace(steps: int, device: torch.device) -> Tensor:
    """``torch.linspace(-1, 1, steps)`` in float32, bit for bit, but traceable with a symbolic ``steps``.

    ``linspace`` itself makes ``torch.export`` fix the size. Like ATen's kernel, the first half
    counts up from -1 and the second half down from 1, each with one rounding (the float64
    product of a float32 step and an index is exact, as in a fused multiply-add).
    """
    index = torch.arange(steps, dtype=torch.float64, device=device)
    step = (torch.tensor(2.0, dtype=torch.float32, device=device) / max(steps - 1, 1)).double()
    up, down = index * step - 1.0, 1.0 - (steps - 1 - index) * step
    return torch.where(index < max(steps // 2, 1), up, down).float()


def coordinate_grid(height: int, width: int, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(1, 2, H, W): channel 0 is x in [-1, 1] along the width, channel 1 is y along the height.

    This is the paper's (2j - W + 1) / (W - 1) per axis, in the (x, y) channel order of the
    authors' code. The grid is computed in float32 and then cast, because the authors' models
    hold float32 coordinates even when run in float64; matching them there needs the same values.
    """
    ys = _unit_linspace(height, device)
    xs = _unit_linspace(width, device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0).to(dtype)


class PositionalEncoding(nn.Module):
    """Prepends :func:`coordinate_grid` to a (B, C, H, W) map, giving (B, C + 2, H, W)."""

    channels = 2

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        coords = coordinate_grid(h, w, dtype=x.dtype, device=x.device).expand(b, -1, -1, -1)
        return torch.cat((coords, x), dim=1)
