"""HyperSegConfig: every architectural knob of a HyperSeg network, as plain data.

A config round-trips through :meth:`HyperSegConfig.to_dict` / :meth:`from_dict` using only
lists, numbers, strings and None, so it can live inside a ``weights_only`` checkpoint.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from ..errors import HypersegError
from ..validate import Rule, at_least, check_fields, list_of, one_of, refusal, reject_unknown, within

__all__ = ["HyperSegConfig", "PlainConfig"]


class PlainConfig:
    """A dataclass config that round-trips through a plain dict and rejects unknown keys and values of
    the wrong type (a checkpoint's or arch string's fields are checked before anything is built)."""

    kind = "config"  # where an error says the value is

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise HypersegError(f"a {cls.kind} must be a mapping of fields, got {type(data).__name__}")
        reject_unknown(data, [f.name for f in dataclasses.fields(cls)], cls.kind)
        return cls(**data)

    def check_types(self) -> None:
        """Raise naming the first field whose value does not fit its annotation."""
        self._check_fields({})

    def _check_fields(self, rules: dict[str, Rule]) -> None:
        """Raise naming the first field whose value does not fit its annotation, then the first that
        ``rules`` refuses."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        check_fields(values, typing.get_type_hints(type(self)), rules, self.kind)


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
        """Raise ValueError with one line naming the first field of the wrong type, out of range, or
        inconsistent with another."""
        self._check_fields(_field_ranges())
        levels = len(self.decoder_kernel_sizes)
        if self.decoder_channels is not None and len(self.decoder_channels) < levels - 1:
            raise refusal(self.kind, "decoder_channels", self.decoder_channels,
                          f"at least {levels - 1} values for {levels} decoder levels",
                          "disagrees with decoder_kernel_sizes")

    def replace(self, **overrides: Any) -> "HyperSegConfig":
        data = self.to_dict()
        data.update(overrides)
        return self.from_dict(data)


def _field_ranges() -> dict[str, Rule]:
    """The range of each HyperSegConfig field that has one, checked in this order."""
    # the modules own their choices; this is the one place a config is checked against them
    from .backbone import PADDING_MODES
    from .channel_division import DIVISION_RULES
    from .context_head import CONTEXT_HEADS, CONTEXT_PADDING
    from .decoder.meta_blocks import WINDOW_MODES
    from .weight_mapper import SIGNAL_SLICING

    odd = Rule("an odd number >= 1", lambda k: k >= 1 and k % 2 == 1)
    return {
        "encoder_padding": one_of(*PADDING_MODES),
        "context_head": one_of(*CONTEXT_HEADS),
        "context_padding": one_of(*CONTEXT_PADDING),
        "decoder_window": one_of(*WINDOW_MODES),
        "signal_slicing": one_of(*SIGNAL_SLICING),
        "channel_division": one_of(*DIVISION_RULES),
        "num_classes": at_least(1),
        "in_channels": at_least(1),
        "context_levels": at_least(1),
        "decoder_channels": list_of(at_least(1)),
        "weight_groups": list_of(at_least(1)),
        "encoder_reductions": list_of(within(0, 1, low_open=True)),
        "decoder_kernel_sizes": list_of(odd, (1, 6)),
        "patch_grid": list_of(at_least(1), 2),
    }
