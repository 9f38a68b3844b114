"""Run configuration: typed dataclasses, YAML files and ``section.key=value`` overrides.

The dataclasses are the single source of truth: a YAML file or override naming a key they do
not have is an error, and the resolved config is saved with every run.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml

from ..errors import HypersegError
from ..validate import Rule, at_least, check_fields, check_value, list_of, one_of, positive, reject_unknown, within

__all__ = ["RunConfig", "ModelSection", "DataSection", "OptimSection", "LossSection", "DistillSection", "TrainSection",
           "load_config", "ConfigError"]


class ConfigError(HypersegError):
    """An unknown key, a malformed override, or a value of the wrong type."""


@dataclass
class ModelSection:
    name: str = "hyperseg"  # registered model name, or a checkpoint path to fine-tune
    pretrained_backbone: Optional[str] = None  # local file or weights package name
    options: dict = field(default_factory=dict)  # HyperSegConfig overrides
    input_scale: float = 1.0  # the model sees images resized by this, in training and inference (logits resized back)


@dataclass
class DataSection:
    dataset: str = "camvid"  # camvid | camvid32 | cityscapes | voc | ade20k | folder
    root: str = "data/camvid"
    train_split: str = "train"
    val_split: Optional[str] = "val"  # null: no validation (train on train+val, keep the last weights)
    classes_file: Optional[str] = None  # folder datasets: YAML with class names (+ palette)
    train_drives: Optional[list[str]] = None  # keep only these drives of train_split (null: all)
    val_drives: Optional[list[str]] = None  # ...and of val_split: a leave-one-drive-out fold validates on unseen drives
    drive_pattern: Optional[str] = None  # regex whose first group in a file name is its drive (CamVid default: ^([^_]+)_)
    crop_size: Optional[list[int]] = None  # [H, W]
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    scale_prob: float = 0.5
    hflip: float = 0.5
    color_jitter: float = 0.0
    rotation: float = 0.0
    pad_only: bool = False
    focus_classes: Optional[list[str]] = None  # class names crops are steered to (e.g. [pole, sign/symbol])...
    focus_prob: float = 0.0  # ...with this probability (0: uniform crops)
    val_resize: Optional[list[int]] = None  # [H, W] the model sees at validation; logits go back to label size
    batch_size: int = 8
    val_batch_size: int = 1
    workers: int = 2


@dataclass
class OptimSection:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    weight_decay: float = 0.0
    poly_power: float = 0.9
    max_iters: int = 1000
    accum_steps: int = 1


@dataclass
class LossSection:
    name: str = "bootstrapped_ce"
    k: int = 4096
    threshold: float = 0.3
    class_weights: Optional[list[float]] = None
    lovasz_weight: float = 0.0  # > 0: add this times Lovasz-softmax, a per-class IoU surrogate (needs the smp extra)
    lovasz_stride: int = 2  # the Lovasz term on every n-th row and column: its per-class sorts cost ~4.5x less at 2


@dataclass
class DistillSection:
    teacher: Optional[str] = None  # any model source load_model takes (weights name, checkpoint, .pth); null: off
    temperature: float = 1.0  # softens both distributions; the soft term is scaled by temperature^2
    weight: float = 0.5  # loss = (1 - weight) * task loss + weight * soft KL


@dataclass
class TrainSection:
    out_dir: str = "runs/camvid"
    seed: int = 0
    deterministic: bool = False
    amp: str = "off"  # off | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    sync_bn: bool = False
    channels_last: bool = True  # NHWC activations: ~1.2x faster training steps on CPU (bf16 or fp32)
    compile: bool = False  # torch.compile the model for the training steps (validation stays eager)
    threads: int = 0  # torch intra-op threads per process; 0 keeps torch's default (one per core)
    keep_freed_memory: bool = True  # glibc keeps freed tensors' memory for the next step (~0.75x CPU step time)
    ema_decay: float = 0.0  # > 0: validate and save an exponential moving average of the weights (e.g. 0.999)
    log_interval: int = 10
    val_interval: int = 200  # 0: validate only after the last step (train+val runs set data.val_split: null)
    ckpt_interval: int = 50
    tensorboard: bool = True
    progress: Optional[bool] = None  # null: a progress bar when stderr is a terminal, none in logs


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    loss: LossSection = field(default_factory=LossSection)
    distill: DistillSection = field(default_factory=DistillSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> "RunConfig":
        """Build a config, coercing each value to its field's type and checking its range."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
        sections = typing.get_type_hints(cls)
        try:
            reject_unknown(data, sections, where, "section")
            return cls(**{name: _section(name, section_cls, data.get(name) or {}, where)
                          for name, section_cls in sections.items()})
        except HypersegError as exc:
            raise ConfigError(str(exc)) from None

    def check(self, where: str = "config") -> "RunConfig":
        """Refuse settings that are each in range but do nothing, or fail late, together: a crop focus
        without classes to focus on, a split list with an empty part, a drive pattern that is no
        regular expression (checked even where no drive filter reads it)."""
        from ..data import check_drive_pattern, split_names

        data = self.data
        if data.focus_prob and not data.focus_classes:
            raise ConfigError(f"{where}: data.focus_prob={data.focus_prob:g} steers crops to data.focus_classes, "
                              f"which is empty; give data.focus_classes (class names) or set data.focus_prob=0")
        try:
            split_names(data.train_split, "data.train_split")
            if data.val_split:
                split_names(data.val_split, "data.val_split")
            check_drive_pattern(data.drive_pattern, "data.drive_pattern")
        except HypersegError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return self


def _section(name: str, section_cls: type, values: Any, where: str) -> Any:
    """One section built from its ``values``, each coerced to its field's type and checked against its range."""
    values = check_value(values, dict, None, where, name)
    annotations = typing.get_type_hints(section_cls)
    reject_unknown(values, annotations, where, prefix=f"{name}.")
    if name == "train" and values.get("amp") is False:
        values = {**values, "amp": "off"}  # YAML 1.1 reads a bare `off` as false
    return section_cls(**check_fields(values, annotations, _RANGES.get(name, {}), where, prefix=f"{name}.",
                                      coerce=True))


_RANGES: dict[str, dict[str, Rule]] = {
    "model": {"input_scale": within(0, 2, low_open=True)},
    "data": {
        "crop_size": list_of(at_least(32), 2),
        "val_resize": list_of(at_least(32), 2),
        "scale_range": Rule("two numbers 0 < low <= high", lambda v: len(v) == 2 and 0 < v[0] <= v[1] < math.inf),
        "scale_prob": within(0, 1),
        "hflip": within(0, 1),
        "color_jitter": within(0, 1),
        "rotation": within(0, 180),
        "focus_prob": within(0, 1),
        "batch_size": at_least(1),
        "val_batch_size": at_least(1),
        "workers": at_least(0),
    },
    "optim": {
        "lr": positive(),
        "betas": list_of(within(0, 1, high_open=True), 2),
        "weight_decay": at_least(0),
        "poly_power": at_least(0),
        "max_iters": at_least(1),
        "accum_steps": at_least(1),
    },
    "loss": {
        "name": one_of("ce", "bootstrapped_ce"),
        "k": at_least(1),
        "threshold": within(0, 1, low_open=True),
        "class_weights": list_of(at_least(0)),
        "lovasz_weight": at_least(0),
        "lovasz_stride": at_least(1),
    },
    "distill": {"temperature": positive(), "weight": within(0, 1)},
    "train": {
        "seed": at_least(0),
        "amp": one_of("off", "bf16", "fp16"),
        "ema_decay": within(0, 1, high_open=True),
        "threads": at_least(0),
        "log_interval": at_least(1),
        "val_interval": at_least(0),
        "ckpt_interval": at_least(1),
    },
}


# A YAML file this many nodes long once its aliases are expanded is an attack, not a recipe.
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    if id(node) not in memo:
        memo[id(node)] = 0  # a recursive alias counts once
        if isinstance(node, yaml.MappingNode):
            size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            size = 1 + sum(_expanded_size(v, memo) for v in node.value)
        else:
            size = 1
        memo[id(node)] = size
    return memo[id(node)]


def _parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` that first refuses documents whose aliases expand past :data:`MAX_YAML_NODES`."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values through its "
                              f"aliases; refusing it (a YAML bomb?)")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) < 2:
        raise ConfigError(f"override {dotted!r} must be section.key=value, e.g. optim.lr=0.001")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Defaults <- YAML file (after the files its ``base`` names) <- ``section.key=value`` overrides
    (values parsed as YAML)."""
    data: dict[str, Any] = RunConfig().to_dict()
    if path is not None:
        for section, values in _read_config_file(Path(path), ()).items():
            data[section].update(values or {})
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must be section.key=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), _parse_yaml(raw, f"override {item!r}"))
    where = "overrides" if overrides else str(path or "config")
    return RunConfig.from_dict(data, where).check(where)


def _read_config_file(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The sections of one YAML file, laid over those of the file its ``base:`` key names (a path
    relative to it): a variant of a recipe states only what differs, as MMSegmentation's ``_base_`` does."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"{path}: its base chain comes back to itself ({' -> '.join(map(str, chain))})")
    loaded = _parse_yaml(path.read_text(), str(path)) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(loaded).__name__}")
    base = loaded.pop("base", None)
    RunConfig.from_dict(loaded, str(path))  # reject unknown keys, naming the file
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of another config file, got {base!r}")
    merged = _read_config_file(path.parent / base, (*chain, path.resolve()))
    for section, values in loaded.items():
        merged[section] = _deep_update(dict(merged.get(section) or {}), values or {})
    return merged


def _deep_update(into: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``into`` with ``values`` laid over it; nested mappings (``model.options``) merge key by key."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            value = _deep_update(dict(into[key]), value)
        into[key] = value
    return into
