"""HyperSegConfig: every architectural knob of a HyperSeg network, as plain data.

A config round-trips through :meth:`HyperSegConfig.to_dict` / :meth:`from_dict` using only
lists, numbers, strings and None, so it can live inside a ``weights_only`` checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from ..errors import HypersegError

__all__ = ["HyperSegConfig", "PlainConfig"]


def _matches(value: Any, tp: Any) -> bool:
    """Whether a plain-data ``value`` fits the annotation ``tp`` (ints count as floats, bools as neither)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if tp is str:
        return isinstance(value, str)
    return True


class PlainConfig:
    """A dataclass config that round-trips through a plain dict and rejects unknown keys and values of
    the wrong type (a checkpoint's or arch string's fields are checked before anything is built)."""

    kind = "config"  # named in the error for an unknown key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise HypersegError(f"a {cls.kind} must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise HypersegError(f"unknown {cls.kind} key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**data)

    def check_types(self) -> None:
        """Raise naming the first field whose value does not fit its annotation."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise HypersegError(f"{self.kind} field {f.name}={value!r:.80} does not fit its type "
                                    f"{_type_name(hints[f.name])}")


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "") if typing.get_origin(tp) else getattr(tp, "__name__", str(tp))


@dataclass
class HyperSegConfig(PlainConfig):
    """Architecture of a HyperSeg network (the authors' released configs plus the paper's ablations).

    Decoder lists (``decoder_kernel_sizes``, ``decoder_channels``, ``weight_groups``) run
    coarsest level first, like the authors' configs.

    Attributes:
        num_classes: output classes.
        in_channels: input image channels.
        encoder_name: timm encoder (``tf_efficientnet_b1``, ``tf_efficientnet_lite0``, ``resnet18``...).
        encoder_reductions: r_i, channel scale of the taps F1..F5 (1 keeps a tap unreduced).
        encoder_padding: ``"dynamic"`` TF-SAME, or ``"static"`` as in the authors' backbone.
        encoder_drop_rate: dropout on the head map in training.
        encoder_drop_path_rate: stochastic depth inside the encoder.
        encoder_head_channels: width of an added head conv for non-EfficientNet encoders.
        context_head: ``"v1_0"`` (halving nested U-Net) or ``"v0_1"`` (full-width, VOC model).
        context_levels: depth of the context head's U-Net.
        context_padding: where an input whose stride-32 map the context head's U-Net cannot halve
            ``context_levels - 1`` times is padded: ``"image"`` pads the image to a multiple of
            ``32 * 2 ** (context_levels - 1)`` (the authors' sizes; every layer runs on the padding),
            ``"features"`` pads the image to a multiple of 32 only and the head's input map to the
            head's multiple (only the head runs on padding, which is cheaper: 288 rows stay 288, not 320).
            The two agree exactly on sizes that are already multiples of the head's.
        decoder_kernel_sizes: 1 = pointwise meta block, k = inverted residual with k x k dw;
            its length is the number of decoder levels (5, or 6 to add a full-resolution level).
        decoder_channels: output channels per level (the last level outputs ``num_classes``);
            ``None`` makes each level output its skip's channels (v0_1).
        decoder_expand_ratio: expansion of the inverted residuals.
        decoder_window: ring semantics of the inverted residuals: ``"input"`` (v1_0) or ``"hidden"`` (v0_1).
        weight_groups: groups of each weight mapper (one per level, or per weight layer).
        unify_level: share one weight layer among levels >= unify_level - 1 (Cityscapes-S).
        signal_slicing: ``"partition"`` (paper Eq. 5) or ``"prefix"`` (authors' v1_0 bug).
        channel_division: ``"released"`` (authors' code) or ``"paper"`` (Algorithm 1).
        patch_grid: ``None`` derives the grid from the stride-32 map (one patch per cell);
            ``[gh, gw]`` fixes it (the paper's 1x1 .. 16x16 ablation).
        positional_encoding: prepend coordinate channels at every decoder level.
        dynamic: ``False`` replaces the dynamic convolutions by learned static ones ("w/o DPWConv").
    """

    kind = "HyperSeg config"

    num_classes: int = 19
    in_channels: int = 3
    encoder_name: str = "tf_efficientnet_b1"
    encoder_reductions: list[float] = field(default_factory=lambda: [1.0, 0.25, 0.25, 0.25, 0.25])
    encoder_padding: str = "dynamic"
    encoder_drop_rate: float = 0.2
    encoder_drop_path_rate: float = 0.2
    encoder_head_channels: Optional[int] = None
    context_head: str = "v1_0"
    context_levels: int = 2
    context_padding: str = "image"
    decoder_kernel_sizes: list[int] = field(default_factory=lambda: [1, 1, 1, 3, 3])
    decoder_channels: Optional[list[int]] = field(default_factory=lambda: [64, 32, 16, 16, 16])
    decoder_expand_ratio: float = 2.0
    decoder_window: str = "input"
    weight_groups: list[int] = field(default_factory=lambda: [32, 16, 8, 16, 4])
    unify_level: Optional[int] = None
    signal_slicing: str = "partition"
    channel_division: str = "released"
    patch_grid: Optional[list[int]] = None
    positional_encoding: bool = True
    dynamic: bool = True

    def __post_init__(self) -> None:
        for name in ("encoder_reductions", "decoder_kernel_sizes", "decoder_channels", "weight_groups", "patch_grid"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and name == "patch_grid":
                value = [value, value]
            if isinstance(value, int) and not isinstance(value, bool) and name == "weight_groups" \
                    and isinstance(self.decoder_kernel_sizes, (list, tuple)):
                value = [value] * len(self.decoder_kernel_sizes)
            if isinstance(value, tuple):
                setattr(self, name, list(value))
            elif isinstance(value, list):
                setattr(self, name, list(value))  # a copy: the caller's list is not shared
        self.validate()

    def validate(self) -> None:
        """Raise ValueError with one sentence naming the first inconsistent field."""
        self.check_types()
        # the modules own their choices; this is the one place a config is checked against them
        from .backbone import PADDING_MODES
        from .channel_division import DIVISION_RULES
        from .context_head import CONTEXT_HEADS, CONTEXT_PADDING
        from .decoder.meta_blocks import WINDOW_MODES
        from .weight_mapper import SIGNAL_SLICING

        choices = {
            "encoder_padding": PADDING_MODES,
            "context_head": tuple(CONTEXT_HEADS),
            "context_padding": CONTEXT_PADDING,
            "decoder_window": WINDOW_MODES,
            "signal_slicing": SIGNAL_SLICING,
            "channel_division": DIVISION_RULES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise HypersegError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("num_classes", "in_channels", "context_levels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HypersegError(f"{name} must be a positive integer, got {value!r}")
        for name in ("decoder_channels", "weight_groups"):
            values = getattr(self, name)
            if values is not None and any(not isinstance(v, int) or v < 1 for v in values):
                raise HypersegError(f"{name} must hold positive integers, got {values}")
        if any(not 0 < r <= 1 for r in self.encoder_reductions):
            raise HypersegError(f"encoder_reductions must be in (0, 1], got {self.encoder_reductions}")
        levels = len(self.decoder_kernel_sizes)
        if not 1 <= levels <= 6:
            raise HypersegError(f"decoder_kernel_sizes must have 1 to 6 entries (levels), got {self.decoder_kernel_sizes}")
        if any(k < 1 or k % 2 == 0 for k in self.decoder_kernel_sizes):
            raise HypersegError(f"decoder_kernel_sizes must be odd and positive, got {self.decoder_kernel_sizes}")
        if self.decoder_channels is not None and len(self.decoder_channels) < levels - 1:
            raise HypersegError(
                f"decoder_channels needs {levels - 1} or {levels} entries for {levels} levels, got {self.decoder_channels}"
            )
        if self.patch_grid is not None and (len(self.patch_grid) != 2 or min(self.patch_grid) < 1):
            raise HypersegError(f"patch_grid must be None or [rows, cols] >= 1, got {self.patch_grid}")
        if self.context_levels < 1:
            raise HypersegError(f"context_levels must be >= 1, got {self.context_levels}")

    def replace(self, **overrides: Any) -> "HyperSegConfig":
        data = self.to_dict()
        data.update(overrides)
        return self.from_dict(data)
