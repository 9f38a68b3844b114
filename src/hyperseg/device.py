"""Which device a job runs on, and what it computes natively: shared by training, inference and runtimes."""
from __future__ import annotations

from typing import Any

import torch

from .errors import HypersegError

__all__ = ["resolve_device", "bf16_supported"]


def resolve_device(name: Any = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; refuses CUDA on a machine without a GPU."""
    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HypersegError(f"device {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HypersegError(f"device {name!r} requested but CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise HypersegError(f"device {name!r} is not supported; expected auto, cpu or cuda")
    return device


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (not emulated through float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False
