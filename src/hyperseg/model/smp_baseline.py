"""Ordinary decoders from segmentation_models_pytorch, as baselines on the same encoders.

The paper's Table 4 asks what the hypernetwork buys over a plain decoder. ``smp:<Arch>`` (for
example ``smp:FPN`` with ``encoder_name="tu-tf_efficientnet_lite2"``) builds SMP's model and
wraps it so that the rest of hyperseg treats it like a HyperSeg: it takes any image size
(padding to the encoder's stride and cropping back), carries ``meta`` and a plain-data config,
and saves to and loads from our checkpoints. Needs the ``smp`` extra.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from torch import Tensor, nn

from ..classes import IMAGENET_MEAN, IMAGENET_STD
from ..errors import HypersegError, require
from .backbone import load_encoder_weights
from .config import PlainConfig
from .padding import run_padded

__all__ = ["SMP_PREFIX", "SMPConfig", "SMPModel", "create_smp_model", "is_smp_name"]

SMP_PREFIX = "smp:"


def is_smp_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(SMP_PREFIX) and len(name) > len(SMP_PREFIX)


def _smp():
    return require("segmentation_models_pytorch", "smp", "an smp:<Arch> model")


@dataclass
class SMPConfig(PlainConfig):
    """An SMP architecture as plain data: ``arch`` (``"FPN"``, ``"Unet"``...), the encoder, the
    class count, and any other keyword of ``segmentation_models_pytorch.create_model``."""

    kind = "SMP config"

    arch: str
    encoder_name: str
    num_classes: int
    in_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)


class SMPModel(nn.Module):
    """An SMP segmentation model behind HyperSeg's interface: ``(B, C, H, W) -> (B, classes, H, W)``
    for any H, W (SMP itself needs multiples of the encoder stride)."""

    family = "smp"

    def __init__(self, config: SMPConfig) -> None:
        super().__init__()
        smp = _smp()
        self.config = config
        reserved = {"arch", "encoder_name", "encoder_weights", "classes", "in_channels"} & set(config.options)
        if reserved:
            raise HypersegError(f"SMP options {sorted(reserved)} are set by hyperseg; remove them from model.options")
        try:
            self.net = smp.create_model(config.arch, encoder_name=config.encoder_name, encoder_weights=None,
                                        classes=config.num_classes, in_channels=config.in_channels, **config.options)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise HypersegError(f"smp:{config.arch} with encoder {config.encoder_name!r} cannot be built: "
                                f"{str(exc).splitlines()[0]}") from None
        stride = int(getattr(self.net.encoder, "output_stride", 32))
        self.size_multiple = (stride, stride)
        mean, std = _encoder_normalisation(config.encoder_name)
        self.meta: dict[str, Any] = {"architecture": f"{SMP_PREFIX}{config.arch}", "mean": mean, "std": std}

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def forward(self, x: Tensor) -> Tensor:
        return run_padded(self.net, x, self.size_multiple)  # the same padding as HyperSeg


def _encoder_normalisation(encoder_name: str) -> tuple[list[float], list[float]]:
    """The mean/std the encoder's ImageNet weights expect (timm's record for ``tu-`` encoders)."""
    if encoder_name.startswith("tu-"):
        import timm

        cfg = timm.get_pretrained_cfg(encoder_name[3:])
        if cfg is not None:
            return list(cfg.mean), list(cfg.std)
    return list(IMAGENET_MEAN), list(IMAGENET_STD)


def create_smp_model(name: str, *, num_classes: int, encoder_name: Optional[str] = None, in_channels: int = 3,
                     pretrained_backbone: Optional[Union[str, Path]] = None, **options: Any) -> SMPModel:
    """``smp:<Arch>`` with ``num_classes`` outputs; ``pretrained_backbone`` loads local ImageNet
    weights (a file or an installed weights package, as for HyperSeg) into a ``tu-`` timm encoder."""
    if not is_smp_name(name):
        raise HypersegError(f"{name!r} is not an smp:<Arch> name (for example smp:FPN)")
    if not encoder_name:
        raise HypersegError(f"{name} needs model.options.encoder_name (for example tu-tf_efficientnet_lite2)")
    model = SMPModel(SMPConfig(arch=name[len(SMP_PREFIX):], encoder_name=encoder_name, num_classes=num_classes,
                               in_channels=in_channels, options=dict(options)))
    if pretrained_backbone is not None:
        model.meta["pretrained_backbone"] = str(_load_pretrained_encoder(model, pretrained_backbone))
    return model


def _load_pretrained_encoder(model: SMPModel, source: Union[str, Path]) -> Path:
    """ImageNet weights into SMP's timm encoder: loaded into the full timm model first (the layout
    our weights loader maps), then copied into the feature extractor, which lacks only the head."""
    import timm

    name = model.config.encoder_name
    if not name.startswith("tu-"):
        raise HypersegError(f"model.pretrained_backbone loads weights into timm encoders (tu-...), not {name!r}")
    full = timm.create_model(name[3:], pretrained=False, num_classes=0, in_chans=model.config.in_channels)
    path = load_encoder_weights(full, source, name[3:])
    features = model.net.encoder.model
    target = features.state_dict()
    weights = full.state_dict()
    missing = [k for k in target if k not in weights or weights[k].shape != target[k].shape]
    if missing:
        raise HypersegError(f"{path}: the weights of {name[3:]} do not cover SMP's encoder ({missing[:2]} ...)")
    features.load_state_dict({k: weights[k] for k in target})
    return path
