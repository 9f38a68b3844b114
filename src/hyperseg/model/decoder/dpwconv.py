"""Dynamic patch-wise convolution (DPWConv).

A feature map is cut into a grid of equal patches and every patch is convolved with its own
weights, produced by the weight mapper from the context signal at that grid cell. Two
interchangeable kernels compute the same thing:

* ``"grouped"`` -- the authors' formulation: all patches become the groups of one grouped
  ``F.conv2d`` call. It is the oracle the tests and ``benchmarks/dpwconv.py`` compare against.
* ``"bmm"`` (pointwise) -- one batched matrix product over patches.
* ``"shifted"`` (depthwise) -- k*k shifted multiply-adds; with ``"bmm"`` the only kernels whose
  ONNX graph has no patch-count-dependent group attribute (``export --dynamic`` uses them).

``benchmarks/dpwconv.py`` measures them at the paper's shapes; :data:`DEFAULT_POINTWISE` and
:data:`DEFAULT_DEPTHWISE` are the faster ones in eager PyTorch on CPU. Each module takes its kernel
as a constructor argument (``backend``), and :func:`set_patch_kernels` switches a whole model.
There are no Python loops over patches in any of them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import HypersegError

__all__ = [
    "split_patches",
    "merge_patches",
    "split_windows",
    "patch_rows",
    "patch_pointwise",
    "patch_depthwise",
    "PatchPointwiseConv",
    "PatchDepthwiseConv",
    "DEFAULT_POINTWISE",
    "DEFAULT_DEPTHWISE",
    "POINTWISE_BACKENDS",
    "DEPTHWISE_BACKENDS",
    "set_patch_kernels",
]

POINTWISE_BACKENDS = ("bmm", "grouped")
DEPTHWISE_BACKENDS = ("grouped", "shifted")
# The faster kernels in benchmarks/dpwconv.py (docs/results.md, "DPWConv kernels").
DEFAULT_POINTWISE = "bmm"
DEFAULT_DEPTHWISE = "grouped"

Grid = tuple[int, int]


def split_patches(x: Tensor, grid: Grid) -> Tensor:
    """Cut ``x`` into ``grid`` equal patches: (B, C, H, W) -> (B*gh*gw, C, H/gh, W/gw)."""
    b, c, h, w = x.shape
    gh, gw = grid
    ph, pw = h // gh, w // gw
    x = x.reshape(b, c, gh, ph, gw, pw)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, ph, pw)
    return x.reshape(b * gh * gw, c, ph, pw)


def merge_patches(x: Tensor, batch: int, grid: Grid) -> Tensor:
    """Inverse of :func:`split_patches`: (B*gh*gw, C, ph, pw) -> (B, C, gh*ph, gw*pw)."""
    _, c, ph, pw = x.shape
    gh, gw = grid
    x = x.reshape(batch, gh, gw, c, ph, pw)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, ph, gw, pw)
    return x.reshape(batch, c, gh * ph, gw * pw)


def split_windows(x: Tensor, grid: Grid, ring: int) -> Tensor:
    """Overlapping patch windows: each patch plus a ``ring``-pixel border of its neighbours.

    The map is reflect-padded first, so windows at the image border see a reflection, as in
    the authors' code. (B, C, H, W) -> (B*gh*gw, C, ph+2*ring, pw+2*ring).
    """
    if ring == 0:
        return split_patches(x, grid)
    b, c, h, w = x.shape
    gh, gw = grid
    ph, pw = h // gh, w // gw
    x = F.pad(x, (ring, ring, ring, ring), mode="reflect")
    x = x.unfold(2, ph + 2 * ring, ph).unfold(3, pw + 2 * ring, pw)  # (B, C, gh, gw, ph+2r, pw+2r)
    x = x.permute(0, 2, 3, 1, 4, 5)  # (B, gh, gw, C, ph+2r, pw+2r)
    return x.reshape(b * gh * gw, c, ph + 2 * ring, pw + 2 * ring)


def patch_rows(weights: Tensor) -> Tensor:
    """Weight grid to one row per patch: (B, N, gh, gw) -> (B*gh*gw, N), patch-major like the maps."""
    b, n, gh, gw = weights.shape
    return weights.permute(0, 2, 3, 1).reshape(b * gh * gw, n)


def patch_pointwise(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, backend: str = DEFAULT_POINTWISE) -> Tensor:
    """Per-patch 1x1 convolution: x (P, Cin, h, w), weight (P, Cout, Cin) -> (P, Cout, h, w)."""
    p, cin, h, w = x.shape
    cout = weight.shape[1]
    if backend == "bmm":
        y = torch.bmm(weight, x.reshape(p, cin, h * w))  # (P, Cout, h*w)
        y = y.reshape(p, cout, h, w)
    elif backend == "grouped":
        y = F.conv2d(x.reshape(1, p * cin, h, w), weight.reshape(p * cout, cin, 1, 1), groups=p)
        y = y.reshape(p, cout, h, w)
    else:
        raise HypersegError(f"unknown pointwise DPWConv backend {backend!r}; expected one of {POINTWISE_BACKENDS}")
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def patch_depthwise(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, backend: str = DEFAULT_DEPTHWISE) -> Tensor:
    """Per-patch depthwise k x k convolution without padding ("valid").

    x (P, C, h+k-1, w+k-1) windows, weight (P, C, k, k) -> (P, C, h, w).
    """
    p, c, hp, wp = x.shape
    k = weight.shape[-1]
    h, w = hp - k + 1, wp - k + 1
    if backend == "grouped":
        y = F.conv2d(x.reshape(1, p * c, hp, wp), weight.reshape(p * c, 1, k, k), groups=p * c)
        y = y.reshape(p, c, h, w)
    elif backend == "shifted":
        # k*k shifted multiply-adds; weight[..., i, j] broadcasts over the patch pixels.
        y = x[:, :, :h, :w] * weight[:, :, 0, 0, None, None]
        for i in range(k):
            for j in range(k):
                if i or j:
                    y = y + x[:, :, i : i + h, j : j + w] * weight[:, :, i, j, None, None]
    else:
        raise HypersegError(f"unknown depthwise DPWConv backend {backend!r}; expected one of {DEPTHWISE_BACKENDS}")
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


class PatchPointwiseConv(nn.Module):
    """A 1x1 convolution whose weights are given per patch at call time.

    It has no weights of its own; ``bias`` only appears after :func:`hyperseg.fuse_bn` folds a
    BatchNorm into it. Being a module lets :func:`hyperseg.profile` count its work as executed.
    """

    def __init__(self, in_channels: int, out_channels: int, backend: str = DEFAULT_POINTWISE) -> None:
        super().__init__()
        if backend not in POINTWISE_BACKENDS:
            raise HypersegError(f"pointwise backend {backend!r}; expected one of {POINTWISE_BACKENDS}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.backend = backend
        self.register_parameter("bias", None)

    @property
    def num_weights(self) -> int:
        return self.in_channels * self.out_channels

    def macs_per_output(self) -> int:
        return self.in_channels

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return patch_pointwise(x, weight, self.bias, self.backend)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, backend={self.backend}"


class PatchDepthwiseConv(nn.Module):
    """A depthwise k x k convolution ("valid") with per-patch weights given at call time."""

    def __init__(self, channels: int, kernel_size: int, backend: str = DEFAULT_DEPTHWISE) -> None:
        super().__init__()
        if backend not in DEPTHWISE_BACKENDS:
            raise HypersegError(f"depthwise backend {backend!r}; expected one of {DEPTHWISE_BACKENDS}")
        if kernel_size % 2 != 1:
            raise HypersegError(f"depthwise kernel size must be odd, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.backend = backend
        self.register_parameter("bias", None)

    @property
    def num_weights(self) -> int:
        return self.channels * self.kernel_size**2

    def macs_per_output(self) -> int:
        return self.kernel_size**2

    def forward(self, x: Tensor, weight: Tensor) -> Tensor:
        return patch_depthwise(x, weight, self.bias, self.backend)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, backend={self.backend}"


def set_patch_kernels(model: nn.Module, *, pointwise: Optional[str] = None, depthwise: Optional[str] = None) -> nn.Module:
    """Switch the kernel of every patch-wise conv in ``model`` (in place); ``None`` leaves it as it is."""
    for module in model.modules():
        if pointwise is not None and isinstance(module, PatchPointwiseConv):
            if pointwise not in POINTWISE_BACKENDS:
                raise HypersegError(f"pointwise backend {pointwise!r}; expected one of {POINTWISE_BACKENDS}")
            module.backend = pointwise
        elif depthwise is not None and isinstance(module, PatchDepthwiseConv):
            if depthwise not in DEPTHWISE_BACKENDS:
                raise HypersegError(f"depthwise backend {depthwise!r}; expected one of {DEPTHWISE_BACKENDS}")
            module.backend = depthwise
    return model
