"""Load the authors' released checkpoints (YuvalNirkin/hyperseg) unchanged.

A released ``.pth`` is ``{"state_dict", "arch", ...}``; ``arch`` is a Python call such as
``hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet('efficientnet-b1', levels=2, ...)``.
It is parsed with :mod:`ast` and literal evaluation only, never executed.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import Tensor

from ..errors import HypersegError, InputTypeError, NotFoundError
from ..model.config import HyperSegConfig
from ..model.hyperseg import HyperSeg
from ..model.registry import get_model_builder, list_models, model_cfg
from ..safe_load import safe_torch_load

__all__ = ["from_official", "config_from_arch", "parse_arch", "convert_state_dict", "OfficialCheckpointError"]


class OfficialCheckpointError(HypersegError):
    """The file or dict is not a checkpoint of the authors' code that we can convert."""


# Templates of the authors' code and what they mean in our config.
_TEMPLATES = {
    "hyperseg_v1_0": dict(context_head="v1_0", decoder_window="input", signal_slicing="prefix"),
    "hyperseg_v1_0_unify": dict(context_head="v1_0", decoder_window="input", signal_slicing="partition"),
    "hyperseg_v0_1": dict(context_head="v0_1", decoder_window="hidden", signal_slicing="partition"),
}
# Arguments of hyperseg_efficientnet() that change nothing in the network at inference.
_IGNORED_ARGS = {"pretrained", "inference_hflip", "coords_res", "weights_path", "inference_gather"}


def parse_arch(arch: str) -> tuple[str, list[Any], dict[str, Any]]:
    """``"pkg.mod.fn(a, k=v)"`` -> ``("pkg.mod.fn", [a], {"k": v})`` by literal evaluation only."""
    try:
        tree = ast.parse(arch.strip(), mode="eval")
    except SyntaxError:
        raise OfficialCheckpointError(f"the checkpoint's arch string is not a Python call: {arch[:120]!r}") from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise OfficialCheckpointError(f"the checkpoint's arch string is not a call: {arch[:120]!r}")
    try:
        func = ast.unparse(call.func)
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
    except ValueError:
        raise OfficialCheckpointError(
            f"the checkpoint's arch string has non-literal arguments, which are not evaluated: {arch[:200]!r}"
        ) from None
    return func, args, kwargs


def config_from_arch(arch: str) -> HyperSegConfig:
    """The :class:`HyperSegConfig` that reproduces an authors' ``arch`` string exactly."""
    func, args, kwargs = parse_arch(arch)
    parts = func.split(".")
    template = parts[-2] if len(parts) >= 2 else ""
    if parts[-1] != "hyperseg_efficientnet" or template not in _TEMPLATES:
        raise OfficialCheckpointError(
            f"arch {func!r} is not one of the released HyperSeg templates "
            f"({', '.join(t + '.hyperseg_efficientnet' for t in _TEMPLATES)})"
        )
    model_name = args[0] if args else kwargs.pop("model_name", None)
    kwargs.pop("model_name", None)
    match = re.fullmatch(r"efficientnet-(b[0-7])", str(model_name))
    if match is None:
        raise OfficialCheckpointError(f"arch backbone {model_name!r} is not an EfficientNet-B0..B7 name")
    encoder = f"tf_efficientnet_{match.group(1)}"

    for name in _IGNORED_ARGS:
        kwargs.pop(name, None)
    if kwargs.pop("with_out_fc", False):
        raise OfficialCheckpointError("arch uses with_out_fc=True, which no released checkpoint uses; not supported")
    if kwargs.pop("decoder_dropout", None) is not None:
        raise OfficialCheckpointError("arch uses decoder_dropout, which no released checkpoint uses; not supported")
    if kwargs.pop("decoder_groups", 1) != 1:
        raise OfficialCheckpointError("arch uses decoder_groups != 1, which no released checkpoint uses; not supported")

    try:
        data = _arch_fields(template, match.group(1), encoder, kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        missing = f"lacks the argument {exc}" if isinstance(exc, KeyError) else f"has an argument of the wrong type ({exc})"
        raise OfficialCheckpointError(f"arch {arch[:120]!r} {missing}") from None
    if kwargs:
        raise OfficialCheckpointError(f"arch has arguments no released configuration uses: {sorted(kwargs)}")
    try:
        return HyperSegConfig.from_dict(data)
    except ValueError as exc:
        raise OfficialCheckpointError(f"arch {arch[:120]!r} does not describe a valid HyperSeg: {exc}") from None


def _arch_fields(template: str, variant: str, encoder: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The HyperSegConfig fields of an arch call's arguments, popping each one it reads from ``kwargs``."""
    kernel_sizes = list(kwargs.pop("kernel_sizes", [1, 1, 1, 3, 3]))
    groups = kwargs.pop("weight_groups", 1)
    reductions = kwargs.pop("out_feat_scale", [0.25] * 5)
    data: dict[str, Any] = dict(
        _TEMPLATES[template],
        encoder_name=encoder,
        encoder_padding="static",
        encoder_drop_rate={"b0": 0.2, "b1": 0.2, "b2": 0.3, "b3": 0.3, "b4": 0.4, "b5": 0.4, "b6": 0.5, "b7": 0.5}[
            variant
        ],
        num_classes=int(kwargs.pop("num_classes")) if "num_classes" in kwargs else 19,
        context_levels=int(kwargs.pop("levels", 3 if template == "hyperseg_v0_1" else 2)),
        encoder_reductions=[float(reductions)] * 5 if isinstance(reductions, (int, float)) else list(reductions),
        decoder_kernel_sizes=kernel_sizes,
        decoder_channels=list(kwargs.pop("level_channels")) if template != "hyperseg_v0_1" else None,
        decoder_expand_ratio=float(kwargs.pop("expand_ratio", 2)),
        weight_groups=[groups] * len(kernel_sizes) if isinstance(groups, int) else list(groups),
    )
    if template == "hyperseg_v1_0_unify":
        data["unify_level"] = int(kwargs.pop("unify_level"))
    kwargs.pop("avg_pool", None)
    return data


_DECODER_RULES = [
    # (authors' key pattern, our key template)
    (r"decoder\.level_(\d+)\.0\.0\.signal2weights\.weight", "weight_mapper.layers.{0}.weight"),
    (r"decoder\.level_(\d+)\.0\.signal2weights\.weight", "weight_mapper.layers.{0}.weight"),
    (r"decoder\.weight_blocks\.(\d+)\.signal2weights\.weight", "weight_mapper.layers.{0}.weight"),
    (r"weight_mapper\.out_conv\.conv_(\d+)\.weight", "weight_mapper.layers.{0}.weight"),
    (r"decoder\.(?:level_|level_blocks\.)(\d+)\.0\.1\.(\w+)", "decoder.levels.{0}.bn.{1}"),
    (r"decoder\.(?:level_|level_blocks\.)(\d+)\.0\.(bn[123])\.(\w+)", "decoder.levels.{0}.{1}.{2}"),
    (r"decoder\.level_(\d+)\.0\.conv\.([012])\.1\.(\w+)", "decoder.levels.{0}.bn{1}.{2}"),
    (r"weight_mapper\.((?:in_conv|down_blocks|up_blocks)\..+)", "context_head.{0}"),
    (r"weight_mapper\.down_(\d+)\.(.+)", "context_head.down_blocks.{0}.{1}"),
    (r"weight_mapper\.flat_(\d+)\.(.+)", "context_head.up_blocks.{0}.{1}"),
    (r"backbone\._feat_fc_(\d+)\.(.+)", "backbone.reductions.{0}.{1}"),
]


def _rename(key: str) -> Optional[str]:
    for pattern, template in _DECODER_RULES:
        m = re.fullmatch(pattern, key)
        if m:
            groups = list(m.groups())
            if "bn{1}" in template:  # v0_1 conv.0/1/2 -> bn1/bn2/bn3
                groups[1] = str(int(groups[1]) + 1)
            return template.format(*groups)
    return None


def convert_state_dict(state_dict: dict[str, Tensor], model: HyperSeg) -> dict[str, Tensor]:
    """Rename an authors' state dict to ``model``'s keys; shapes are checked by the caller."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    out: dict[str, Tensor] = {}
    trunk: list[tuple[str, Tensor]] = []
    for key, value in state.items():
        if key.startswith("decoder.coord"):
            continue  # cached positional encodings; recomputed on the fly
        if key.startswith("backbone.") and not key.startswith("backbone._feat_fc_"):
            trunk.append((key, value))
            continue
        new = _rename(key)
        if new is None:
            raise OfficialCheckpointError(f"checkpoint key {key!r} fits no released HyperSeg configuration")
        out[new] = value
    # The lukemelas EfficientNet trunk holds the same tensors in the same order as timm's tf_* model.
    ours = [k for k in model.state_dict() if k.startswith("backbone.encoder.")]
    if len(trunk) != len(ours):
        raise OfficialCheckpointError(
            f"the checkpoint's backbone has {len(trunk)} tensors, {model.config.encoder_name} has {len(ours)}"
        )
    for (src, value), dst in zip(trunk, ours):
        out[dst] = value
    return out


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise NotFoundError(f"official checkpoint not found: {path}")
    return safe_torch_load(path)


def _config_from_name(name: str, state: dict[str, Tensor]) -> HyperSegConfig:
    get_model_builder(name)
    if name == "hyperseg" or not model_cfg(name):
        raise OfficialCheckpointError(f"config name must be one of the paper models: {list_models('hyperseg_*')}")
    config = HyperSegConfig.from_dict(model_cfg(name)["config"])
    # Each paper model's last BN holds the class count.
    last_bn = [k for k in state if k.endswith("running_mean") and ("decoder.level" in k)]
    if last_bn:
        classes = state[sorted(last_bn, key=_level_order)[-1]].numel()
        if classes != config.num_classes:
            config = config.replace(num_classes=classes)
    template = "hyperseg_v0_1" if config.context_head == "v0_1" else (
        "hyperseg_v1_0_unify" if config.unify_level else "hyperseg_v1_0"
    )
    return config.replace(encoder_padding="static", **_TEMPLATES[template])


def _level_order(key: str) -> tuple[int, str]:
    m = re.search(r"level_(?:blocks\.)?(\d+)", key)
    return (int(m.group(1)) if m else -1, key)


def _infer_config(state: dict[str, Tensor]) -> HyperSegConfig:
    for name in list_models("hyperseg_*"):
        try:
            config = _config_from_name(name, state)
            model = HyperSeg(config)
            converted = convert_state_dict(state, model)
        except (OfficialCheckpointError, ValueError):
            continue
        ref = model.state_dict()
        if set(converted) == set(ref) and all(converted[k].shape == ref[k].shape for k in ref):
            return config
    raise OfficialCheckpointError(
        "the checkpoint has no 'arch' entry and its keys fit none of the paper configurations "
        f"{list_models('hyperseg_*')}; pass config=NAME"
    )


def from_official(
    checkpoint: Union[str, Path, dict[str, Any]],
    *,
    config: Optional[str] = None,
) -> HyperSeg:
    """Build a model from an authors' checkpoint and load its weights; returns it in eval mode.

    Args:
        checkpoint: path to the authors' ``.pth``, its loaded dict (``{"state_dict", "arch", ...}``),
            or a bare state dict. ``module.`` prefixes (DataParallel) are accepted.
        config: a paper model name (e.g. ``"hyperseg_m_cityscapes"``) used when the checkpoint
            has no ``arch``; without either, the configuration is inferred from the keys.
    """
    if not isinstance(checkpoint, (str, Path, dict)):
        raise InputTypeError(f"from_official expects a .pth path or its loaded dict, got {type(checkpoint).__name__}")
    source = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "the given dict"
    ckpt = _load_file(Path(checkpoint)) if isinstance(checkpoint, (str, Path)) else checkpoint
    if not isinstance(ckpt, dict):
        raise OfficialCheckpointError(f"{source} does not hold a dict, so it is no HyperSeg checkpoint")
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    if not all(isinstance(k, str) for k in state):
        raise OfficialCheckpointError(f"{source}: its state dict has keys that are not names (e.g. "
                                      f"{next(k for k in state if not isinstance(k, str))!r})")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise OfficialCheckpointError(f"{source} holds no state dict of tensors")

    arch = ckpt.get("arch") if isinstance(ckpt.get("arch"), str) else None
    if arch is not None:
        cfg = config_from_arch(arch)
    elif config is not None:
        cfg = _config_from_name(config, state)
    else:
        cfg = _infer_config(state)
    with torch.device("meta"):  # shapes only: a config asking for huge layers allocates nothing here
        probe = HyperSeg(cfg)
    converted = convert_state_dict(state, probe)
    ref = probe.state_dict()
    missing = sorted(set(ref) - set(converted))
    unexpected = sorted(set(converted) - set(ref))
    if missing or unexpected:
        raise OfficialCheckpointError(
            f"{source} does not fit the configuration it names: "
            f"{len(missing)} tensors missing (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    last = len(probe.decoder.levels) - 1
    for key in (f"decoder.levels.{last}.bn3.weight", f"decoder.levels.{last}.bn.weight"):
        if key in converted and converted[key].numel() != cfg.num_classes:
            raise OfficialCheckpointError(
                f"{source}: class-count mismatch: the checkpoint outputs {converted[key].numel()} classes, "
                f"the configuration expects {cfg.num_classes}"
            )
    for key, value in converted.items():
        if value.shape != ref[key].shape:
            raise OfficialCheckpointError(
                f"{source}: tensor {key} has shape {tuple(value.shape)}, the configuration expects {tuple(ref[key].shape)}"
            )
    model = HyperSeg(cfg)
    model.load_state_dict(converted)
    variant = _paper_variant(cfg)
    if variant is not None:
        meta = model_cfg(variant)
        if cfg.num_classes == len(meta["class_names"]):
            model.meta.update(class_names=list(meta["class_names"]), palette=[list(c) for c in meta["palette"]])
        model.meta.update(mean=list(meta["mean"]), std=list(meta["std"]), architecture=variant)
    model.meta["source"] = "official"
    if arch is not None:
        model.meta["official_arch"] = arch
    return model.eval()


def _paper_variant(cfg: HyperSegConfig) -> Optional[str]:
    """The registered paper model with the same architecture, if any."""
    keys = ("encoder_name", "encoder_reductions", "context_head", "decoder_kernel_sizes", "decoder_channels",
            "weight_groups", "unify_level")
    for name in list_models("hyperseg_*"):
        ref = HyperSegConfig.from_dict(model_cfg(name)["config"])
        if all(getattr(ref, k) == getattr(cfg, k) for k in keys):
            return name
    return None
