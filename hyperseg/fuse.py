"""BatchNorm fusion (paper Appendix E) for deployment.

Every BatchNorm that directly follows a static convolution is folded into that convolution.
Every BatchNorm that follows a dynamic (patch-wise) convolution is folded into the weight
mapper: the rows that produce that convolution's weights are scaled, and the BN's shift
becomes the convolution's bias. The result computes the same function in eval mode.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from .errors import InputTypeError
from .model.decoder.meta_blocks import InvertedResidualMetaBlock, PointwiseMetaBlock
from .model.hyperseg import HyperSeg
from .model.weight_mapper import StaticWeights

__all__ = ["fuse_bn"]


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) with bn(x) == x * scale + shift in eval mode."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _without_bn(bn: nn.Module) -> nn.Module:
    """What is left of a BN module once its affine part is folded away (timm's BatchNormAct2d keeps its act)."""
    act = getattr(bn, "act", None)
    drop = getattr(bn, "drop", None)
    if act is None and drop is None:
        return nn.Identity()
    return nn.Sequential(drop or nn.Identity(), act or nn.Identity())


def _static_pairs(model: HyperSeg) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BN's input is exactly that conv's output, found by one forward pass."""
    produced: dict[int, tuple[str, Tensor]] = {}
    pairs: list[tuple[str, str]] = []
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda mod, a, out, name=name: produced.__setitem__(id(out), (name, out))))
        elif isinstance(m, nn.BatchNorm2d):
            def pre(mod, args, name=name):
                hit = produced.get(id(args[0]))
                if hit is not None and hit[1] is args[0]:
                    pairs.append((hit[0], name))
            hooks.append(m.register_forward_pre_hook(pre))
    try:
        h, w = model.size_multiple
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_channels, h, w, dtype=next(model.parameters()).dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return pairs


def _fold_static(model: nn.Module, conv_name: str, bn_name: str) -> None:
    conv: nn.Conv2d = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name)
    scale, shift = _bn_affine(bn)
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        conv.bias = nn.Parameter(bias.clone())
    parent, _, child = bn_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, _without_bn(bn))


def _fold_dynamic(model: HyperSeg) -> None:
    mapper = model.weight_mapper
    for level, block in enumerate(model.decoder.levels):
        if isinstance(block, PointwiseMetaBlock):
            convs = [(block.conv, "bn")]
        elif isinstance(block, InvertedResidualMetaBlock):
            convs = [(block.pw1, "bn1"), (block.dw, "bn2"), (block.pw2, "bn3")]
        else:
            raise InputTypeError(f"cannot fuse decoder level {level} of type {type(block).__name__}")
        layer, rows = mapper.level_rows(level)
        offset = rows.start
        for (conv, bn_attr), (_, shape) in zip(convs, block.weight_layout()):
            bn = getattr(block, bn_attr)
            scale, shift = _bn_affine(bn)
            per_row = math.prod(shape[1:])
            row_scale = scale.repeat_interleave(per_row)  # one factor per weight of this conv
            seg = slice(offset, offset + shape[0] * per_row)
            with torch.no_grad():
                if isinstance(mapper, StaticWeights):
                    mapper.weights[layer][seg] *= row_scale
                else:
                    mapper.layers[layer].weight[seg] *= row_scale.view(-1, 1, 1, 1)
                conv.bias = nn.Parameter(shift.clone())
            setattr(block, bn_attr, nn.Identity())
            offset = seg.stop


def fuse_bn(model: HyperSeg) -> HyperSeg:
    """A copy of ``model`` in eval mode with every BatchNorm folded away; ``model`` is untouched."""
    if not isinstance(model, HyperSeg):
        raise InputTypeError(f"fuse_bn expects a HyperSeg model, got {type(model).__name__}")
    fused = copy.deepcopy(model).eval()
    for conv_name, bn_name in _static_pairs(fused):
        _fold_static(fused, conv_name, bn_name)
    _fold_dynamic(fused)
    fused.meta["fused_bn"] = True
    return fused
