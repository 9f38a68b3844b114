"""BatchNorm fusion (paper Appendix E) for deployment.

Every BatchNorm that directly follows a static convolution is folded into that convolution.
Every BatchNorm that follows a dynamic (patch-wise) convolution is folded into the weight
mapper: the rows that produce that convolution's weights are scaled, and the BN's shift
becomes the convolution's bias. The result computes the same function in eval mode.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .errors import InputTypeError
from .model.hyperseg import HyperSeg
from .model.weight_mapper import StaticWeights

__all__ = ["fuse_bn"]


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
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                        bn.weight, bn.bias)
    conv.weight, conv.bias = weight, bias
    parent, _, child = bn_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, _without_bn(bn))


def _fold_dynamic(model: HyperSeg) -> None:
    """Each decoder block folds its BNs (its own ``fuse``); the weight mapper scales the rows it produces."""
    mapper = model.weight_mapper
    for level, block in enumerate(model.decoder.levels):
        if not hasattr(block, "fuse"):
            raise InputTypeError(f"cannot fuse decoder level {level} of type {type(block).__name__}")
        layer, rows = mapper.level_rows(level)

        def scale_weights(segment: slice, factor: Tensor, layer=layer, start=rows.start) -> None:
            rows_of_conv = slice(start + segment.start, start + segment.stop)
            if isinstance(mapper, StaticWeights):
                mapper.weights[layer][rows_of_conv] *= factor
            else:
                mapper.layers[layer].weight[rows_of_conv] *= factor.view(-1, 1, 1, 1)

        block.fuse(scale_weights)


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
