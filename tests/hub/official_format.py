"""Synthetic checkpoints in the authors' layout (YuvalNirkin/hyperseg), made from our own models.

For the tests of behaviour that needs *an* authors' checkpoint but not the authors' float64 outputs
(prefix stripping, conversion, inference of the configuration from the keys, refusals), so that they
run without the shared equivalence fixtures.

:func:`authors_checkpoint` builds one of our paper models with a fixed seed and writes its tensors
under the authors' names, in the authors' order: the EfficientNet trunk under the lukemelas names
(``backbone._blocks.N._expand_conv`` ...), the reductions as ``backbone._feat_fc_i``, the decoder
levels, w_i and context head as each of the authors' three templates names them, plus the cached
positional-encoding buffers ``decoder.coord<H>_<W>`` of the v1_0 templates; ``arch`` is a hand-written
call of the authors' form. Loading it must give back exactly the model it was made from.
"""
from __future__ import annotations

import functools
import re
from typing import Any

import torch
from torch import Tensor, nn

import hyperseg

# Small positional-encoding caches: the authors' code sizes them from ``coords_res`` and our loader drops them.
COORDS_RES = [(64, 64), (64, 128)]

# The authors' factory call of each paper configuration, with what their template means in our config.
# ``{coords}`` is filled with COORDS_RES (the v1_0 templates cache coordinates for those sizes).
PAPER = {
    "hyperseg_m_cityscapes": dict(
        template="hyperseg_v1_0",
        arch="hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet('efficientnet-b1',pretrained=True,levels=2,"
             "out_feat_scale=[1.0,0.25,0.25,0.25,0.25],kernel_sizes=[1,1,1,3,3],level_channels=[64,32,16,16,16],"
             "expand_ratio=2,with_out_fc=False,decoder_dropout=None,weight_groups=[32,16,8,16,4],decoder_groups=1,"
             "inference_hflip=True,coords_res={coords},num_classes=19)",
    ),
    "hyperseg_s_cityscapes": dict(
        template="hyperseg_v1_0_unify",
        arch="hyperseg.models.hyperseg_v1_0_unify.hyperseg_efficientnet('efficientnet-b1',pretrained=True,levels=2,"
             "out_feat_scale=[1.0,0.166,0.2,0.25,0.4],kernel_sizes=[1,1,1,3,3],level_channels=[32,16,8,8,8],"
             "expand_ratio=2,with_out_fc=False,decoder_dropout=None,weight_groups=[32,16,8,16,4],decoder_groups=1,"
             "inference_hflip=True,unify_level=4,coords_res={coords},num_classes=19)",
    ),
    "hyperseg_s_camvid": dict(
        template="hyperseg_v1_0",
        arch="hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet('efficientnet-b1',pretrained=True,levels=2,"
             "kernel_sizes=(1,1,1,3,3),level_channels=[64,32,16,16,16],expand_ratio=2,inference_hflip=True,"
             "with_out_fc=False,decoder_dropout=None,weight_groups=[64,32,32,16,8],coords_res={coords},num_classes=12)",
    ),
    "hyperseg_l_camvid": dict(
        template="hyperseg_v1_0",
        arch="hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet('efficientnet-b1',pretrained=True,levels=2,"
             "kernel_sizes=(1,1,1,3,3,3),level_channels=[64,32,16,16,16,16],expand_ratio=2,inference_hflip=True,"
             "with_out_fc=False,decoder_dropout=None,weight_groups=[64,32,32,16,8,8],coords_res={coords},"
             "num_classes=12)",
    ),
    "hyperseg_l_voc": dict(
        template="hyperseg_v0_1",
        arch="hyperseg.models.hyperseg_v0_1.hyperseg_efficientnet('efficientnet-b3',pretrained=True,levels=3,"
             "kernel_sizes=(1,1,3,3,3,3),expand_ratio=2,inference_hflip=True,with_out_fc=False,decoder_dropout=None,"
             "weight_groups=16,num_classes=21)",
    ),
}
# How each of the authors' templates computes (SPEC: static "same" padding for every template; v1_0
# slices the context signal from channel 0 for every level, the later templates partition it).
TEMPLATE_CONFIG = {
    "hyperseg_v1_0": dict(context_head="v1_0", decoder_window="input", signal_slicing="prefix"),
    "hyperseg_v1_0_unify": dict(context_head="v1_0", decoder_window="input", signal_slicing="partition"),
    "hyperseg_v0_1": dict(context_head="v0_1", decoder_window="hidden", signal_slicing="partition"),
}

# timm's EfficientNet block members -> the lukemelas port's, in the same order.
_DS_BLOCK = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "se.conv_reduce": "_se_reduce",
             "se.conv_expand": "_se_expand", "conv_pw": "_project_conv", "bn2": "_bn2"}
_IR_BLOCK = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
             "se.conv_reduce": "_se_reduce", "se.conv_expand": "_se_expand", "conv_pwl": "_project_conv",
             "bn3": "_bn2"}
_STEM = {"conv_stem": "_conv_stem", "bn1": "_bn0"}
_HEAD = {"conv_head": "_conv_head", "bn2": "_bn1"}


def _member(rest: str, table: dict[str, str]) -> str:
    module, param = rest.rsplit(".", 1)
    return f"{table[module]}.{param}"


def _trunk_names(keys: list[str]) -> dict[str, tuple[tuple, str]]:
    """Our ``backbone.encoder.*`` keys -> (sort position, the lukemelas name)."""
    blocks: list[tuple[str, str]] = []  # (stage, block) in order
    for key in keys:
        m = re.match(r"backbone\.encoder\.blocks\.(\d+)\.(\d+)\.", key)
        if m and m.groups() not in blocks:
            blocks.append(m.groups())
    inverted = {b for b in blocks if any(k.startswith(f"backbone.encoder.blocks.{b[0]}.{b[1]}.conv_pwl.")
                                         for k in keys)}
    out = {}
    for i, key in enumerate(keys):
        rest = key[len("backbone.encoder."):]
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", rest)
        if m:
            block = (m.group(1), m.group(2))
            name = f"_blocks.{blocks.index(block)}." + _member(m.group(3), _IR_BLOCK if block in inverted else _DS_BLOCK)
            out[key] = ((0, 0, 0, i), "backbone." + name)
        elif rest.split(".")[0] in _STEM:
            out[key] = ((0, 0, 0, i), "backbone." + _member(rest, _STEM))
        else:
            out[key] = ((2, 0, 0, i), "backbone." + _member(rest, _HEAD))
    return out


def _authors_key(key: str, i: int, template: str, kernel_sizes: list[int]) -> tuple[tuple, str]:
    """One of our non-trunk keys -> (sort position in the authors' state dict, the authors' name)."""
    if m := re.fullmatch(r"backbone\.reductions\.(\d+)\.(.+)", key):
        return (1, int(m.group(1)), 0, i), f"backbone._feat_fc_{m.group(1)}.{m.group(2)}"
    level = "level_blocks." if template == "hyperseg_v1_0_unify" else "level_"
    if m := re.fullmatch(r"decoder\.levels\.(\d+)\.bn\.(\w+)", key):
        return (4, int(m.group(1)), 1, i), f"decoder.{level}{m.group(1)}.0.1.{m.group(2)}"
    if m := re.fullmatch(r"decoder\.levels\.(\d+)\.bn([123])\.(\w+)", key):
        n, k, param = m.groups()
        inner = f"conv.{int(k) - 1}.1" if template == "hyperseg_v0_1" else f"bn{k}"
        return (4, int(n), 1, i), f"decoder.{level}{n}.0.{inner}.{param}"
    if m := re.fullmatch(r"weight_mapper\.layers\.(\d+)\.weight", key):
        n = int(m.group(1))
        if template == "hyperseg_v0_1":
            return (7, n, 0, i), f"weight_mapper.out_conv.conv_{n}.weight"
        if template == "hyperseg_v1_0_unify":
            return (5, n, 0, i), f"decoder.weight_blocks.{n}.signal2weights.weight"
        if kernel_sizes[n] == 1:  # a point-wise level: MetaSequential(hyper conv, BN, ...)
            return (4, n, 0, i), f"decoder.level_{n}.0.0.signal2weights.weight"
        return (4, n, 2, i), f"decoder.level_{n}.0.signal2weights.weight"  # an inverted residual block
    if m := re.fullmatch(r"context_head\.(in_conv|down_blocks|up_blocks)\.(\d+)\.(.+)", key):
        part, n, rest = m.groups()
        if template == "hyperseg_v0_1":
            name = {"down_blocks": "down", "up_blocks": "flat"}[part]
            return (6, int(n), ["down_blocks", "up_blocks"].index(part), i), f"weight_mapper.{name}_{n}.{rest}"
        return (6, ["down_blocks", "up_blocks", "in_conv"].index(part), 0, i), f"weight_mapper.{part}.{n}.{rest}"
    raise KeyError(f"no authors' name for {key}")


def _coords(h: int, w: int) -> Tensor:
    ys, xs = torch.linspace(-1.0, 1.0, h), torch.linspace(-1.0, 1.0, w)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0)


def _randomise(model: nn.Module, seed: int) -> None:
    """Distinct BatchNorm statistics and affine terms, so that any swapped tensor shows."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_((torch.rand(m.num_features, generator=g) * 2 - 1) * 0.1)


@functools.lru_cache(maxsize=None)
def _build(name: str, seed: int, coords_res: tuple) -> tuple[nn.Module, dict[str, Tensor], str]:
    paper = PAPER[name]
    template = paper["template"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = hyperseg.create_model(name, encoder_padding="static", **TEMPLATE_CONFIG[template])
    _randomise(model, seed)
    model.eval()
    ours = model.state_dict()
    keys = list(ours)
    kernel_sizes = list(model.config.decoder_kernel_sizes)
    placed = _trunk_names([k for k in keys if k.startswith("backbone.encoder.")])
    for i, key in enumerate(keys):
        if not key.startswith("backbone.encoder."):
            placed[key] = _authors_key(key, i, template, kernel_sizes)
    entries = sorted((position, authors, ours[key].clone()) for key, (position, authors) in placed.items())
    state = {authors: value for _, authors, value in entries}
    if template != "hyperseg_v0_1":  # the v1_0 decoders cache coordinates for every level of each size
        coords = {}
        for h, w in coords_res:
            for level in range(len(kernel_sizes)):
                coords[f"decoder.coord{h >> level}_{w >> level}"] = _coords(h >> level, w >> level)
        trunk_and_fc = [k for k in state if k.startswith("backbone.")]
        state = {**{k: state[k] for k in trunk_and_fc}, **coords,
                 **{k: v for k, v in state.items() if not k.startswith("backbone.")}}
    arch = paper["arch"].format(coords=repr(list(coords_res)).replace(" ", ""))
    return model, state, arch


def authors_checkpoint(name: str, seed: int = 0, coords_res=COORDS_RES) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, {"state_dict", "arch"})``: our paper model ``name`` (eval mode, fixed seed, static padding
    and the slicing of the authors' template) and the same tensors in the layout of the authors' ``.pth``.

    The dict and its state dict are fresh on every call (tests may add or drop keys); the tensors and the
    model are shared between calls and must not be modified.
    """
    model, state, arch = _build(name, seed, tuple(tuple(r) for r in coords_res))
    return model, {"state_dict": dict(state), "arch": arch}


def assert_loads_as(loaded: nn.Module, model: nn.Module, size=(64, 128)) -> None:
    """``loaded`` is ``model``: the same tensors under the same names, the same output on a fixed input."""
    got, expected = loaded.state_dict(), model.state_dict()
    assert list(got) == list(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype and torch.equal(got[key], expected[key]), key
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model.eval()(x))
