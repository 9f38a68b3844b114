"""The PyTorch runtime: the model prepared for inference (BatchNorm fused, memory layout, bf16 autocast).

What helps, measured at batch 1 (docs/results.md, "End to end: runtimes and precisions"):

* BatchNorm folded into the convolutions and weight mappers: ~10 % less time.
* channels_last for the static convolutions (backbone, context head, weight mappers): oneDNN's
  NHWC kernels take about 0.75x the time. The decoder stays NCHW: its patch reshapes would make
  NHWC tensors copy twice, and the whole model in channels_last was *slower* than NCHW.
* The patch-wise 1x1 convolutions as one grouped convolution instead of ``bmm``: at batch 1
  ``bmm`` over a few hundred small patches falls back to a loop with copies (~0.85x the time).

On CUDA the same preparation applies (NHWC is cuDNN's fast layout); bf16 autocast is offered
where the CPU (AVX-512 bf16 / AMX) or the GPU computes bf16 natively.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..device import bf16_supported, resolve_device
from ..errors import HypersegError
from ..fuse import fuse_bn
from ..model import HyperSeg
from ..model.decoder.dpwconv import set_patch_kernels
from ..model.registry import model_cfg
from .base import Runtime, run_guarded
from .options import check_offered

__all__ = ["TorchRuntime", "EagerRuntime", "prepare_for_inference", "bf16_supported", "resolve_device", "runtime_meta"]


def runtime_meta(model: nn.Module) -> dict[str, Any]:
    """What a runtime needs to know about a model: classes, palette, mean/std, input size, padding unit."""
    meta = dict(getattr(model, "meta", {}))
    meta["num_classes"] = int(model.num_classes)
    if getattr(model, "size_multiple", None) is not None:  # HyperSeg and the smp: baselines pad to it
        meta["size_multiple"] = list(model.size_multiple)
    if isinstance(model, HyperSeg):
        arch = meta.get("architecture")
        cfg = model_cfg(arch) if arch else {}
        if "input_size" not in meta and cfg.get("input_size"):
            meta["input_size"] = list(cfg["input_size"])
    meta.setdefault("class_names", [str(i) for i in range(meta["num_classes"])])
    meta.setdefault("mean", [0.485, 0.456, 0.406])
    meta.setdefault("std", [0.229, 0.224, 0.225])
    return meta


def prepare_for_inference(model: nn.Module, device: torch.device, *, channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` for inference: BatchNorm folded, static convs channels_last, grouped patch 1x1 convs.

    It computes the same function as ``model`` in eval mode (up to float rounding). Models that
    are not HyperSeg are only moved and put in eval mode (and channels_last when asked).
    """
    if not isinstance(model, HyperSeg):
        prepared = copy.deepcopy(model).eval().to(device)
        return prepared.to(memory_format=torch.channels_last) if channels_last else prepared
    prepared = fuse_bn(model) if not model.meta.get("fused_bn") else copy.deepcopy(model).eval()
    prepared = prepared.to(device)
    if channels_last:
        for part in (prepared.backbone, prepared.context_head, prepared.weight_mapper):
            if part is not None:
                part.to(memory_format=torch.channels_last)
    set_patch_kernels(prepared.decoder, pointwise="grouped")
    for p in prepared.parameters():
        p.requires_grad_(False)
    return prepared


class TorchRuntime(Runtime):
    """The prepared PyTorch model; ``precision="bf16"`` runs it under bf16 autocast."""

    name = "torch"

    def __init__(self, model: nn.Module, *, device: Any = "auto", precision: str = "fp32",
                 channels_last: bool = True, prepare: bool = True) -> None:
        check_offered(self.name, precision)
        super().__init__(runtime_meta(model), precision)
        self.device = resolve_device(device)
        if precision == "bf16" and not bf16_supported(self.device):
            raise HypersegError(f"precision bf16 needs native bfloat16 support, which this {self.device.type} lacks; "
                                "use --precision fp32")
        self.model = prepare_for_inference(model, self.device, channels_last=channels_last) if prepare \
            else model.eval().to(self.device)
        self.channels_last = channels_last and prepare

    def __call__(self, x: Tensor) -> Tensor:
        return self.infer(x)

    def infer(self, x: Tensor) -> Tensor:
        return run_guarded(self._infer, x)

    def _infer(self, x: Tensor) -> Tensor:
        x = x.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self.model(x).float()


class EagerRuntime(TorchRuntime):
    """The model exactly as built, without fusion or layout changes: the reference path for benchmarks."""

    name = "eager"

    def __init__(self, model: nn.Module, *, device: Any = "auto", precision: str = "fp32") -> None:
        super().__init__(model, device=device, precision=precision, prepare=False)

    def _infer(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x.to(self.device)).float()
