"""Our checkpoint format: weights plus everything needed to rebuild and use the model.

A file holds ``{"format": "hyperseg", "version": 1, "config": {...}, "state_dict": {...},
"meta": {...}}`` (plus ``"family": "smp"`` for an SMP baseline) with only tensors and plain data, so it loads with
``torch.load(weights_only=True)``. ``meta`` carries class names, palette, normalisation and
anything else worth keeping (val mIoU, recipe, training time).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Sequence, Union

import torch

from ..errors import HypersegError, InputTypeError, NotFoundError, OutputExistsError
from ..model.config import HyperSegConfig
from ..model.hyperseg import HyperSeg
from ..model.smp_baseline import SMPConfig, SMPModel
from .weights import Weights, get_weights, is_weights_name, list_weights
from ..meta_schema import check_model_meta
from ..safe_load import safe_torch_load

__all__ = ["save_model", "load_model", "load_training_checkpoint", "atomic_write", "atomic_save", "refuse_replacing_inputs", "check_output", "atomic_write_text", "builtin_weights", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "hyperseg"
_VERSION = 1


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    A crash or a full disk leaves the old file intact and no temporary file behind; a failure is
    reported as one sentence naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise HypersegError(f"{path} is a folder; expected a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name's start is enough to recognise the file: a legal 250-byte name plus the random
        # part would pass the 255-byte limit of most file systems
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise HypersegError(f"{path}: cannot write there ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise HypersegError(f"{path}: cannot write it ({exc.strerror or exc})") from None
        raise
    return path


def refuse_replacing_inputs(outputs: Sequence[Path], inputs: Sequence[Union[str, Path]], option: str) -> None:
    """Refuse, before anything is written, an output path that is one of the input files."""
    originals = {Path(p).expanduser().resolve(): p for p in inputs if p is not None and Path(p).expanduser().is_file()}
    for target in outputs:
        source = originals.get(Path(target).resolve())
        if source is not None:
            raise OutputExistsError(f"{option}: {target} is the input {source}, and writing it would replace "
                                    f"the input; choose another output")


def check_output(path: Optional[Union[str, Path]], option: str = "", overwrite: bool = False,
                 inputs: Sequence[Union[str, Path]] = ()) -> None:
    """Refuse, before any work, an output that is one of the inputs, a folder, or an existing file
    without ``overwrite``; ``option`` (e.g. ``--out``) names it in the message, None passes."""
    if path is None:
        return
    path = Path(path)
    refuse_replacing_inputs([path], inputs, option)
    named = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise HypersegError(f"{named} is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{named} already exists; choose another name or pass --overwrite")


def atomic_save(obj: Any, path: Union[str, Path]) -> Path:
    """``torch.save`` through :func:`atomic_write`."""
    def save(f: BinaryIO) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as exc:
            # torch's zip writer reports a failed write (a full disk, a quota) as RuntimeError, not OSError
            raise OSError(errno.EIO, f"torch.save failed: {str(exc).splitlines()[0][:200]}") from None

    return atomic_write(path, save)


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """Text through :func:`atomic_write`."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively: the checkpoint holds plain data only."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def save_model(model: Union[HyperSeg, SMPModel], path: Union[str, Path], *, meta: Optional[dict[str, Any]] = None, half: bool = False,
               extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model`` (config, weights, ``model.meta`` updated with ``meta``) to ``path`` atomically.

    ``half=True`` stores floating-point tensors as float16 (load_model restores float32).
    ``extra`` adds top-level entries that :func:`load_model` ignores (the trainer's resume state).
    """
    if not isinstance(model, (HyperSeg, SMPModel)):
        raise InputTypeError(f"save_model expects a HyperSeg (or smp: baseline) model, got {type(model).__name__}")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": _VERSION,
        "config": _plain(model.config.to_dict()),
        "state_dict": state,
        "meta": _plain({**model.meta, **(meta or {})}),
        **({"family": SMPModel.family} if isinstance(model, SMPModel) else {}),
        **(extra or {}),
    }
    return atomic_save(payload, path)


def builtin_weights() -> dict[str, Path]:
    """Names of the registered weights shipped inside the package, and their files."""
    return {name: get_weights(name).path for name in list_weights() if get_weights(name).builtin}


def _read_checkpoint(path: Path, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """The validated dictionary of one of our checkpoint files."""
    ckpt = safe_torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        if isinstance(ckpt, dict) and "arch" in ckpt and "state_dict" in ckpt:
            raise HypersegError(f"{path} is an authors' checkpoint; load it with hyperseg.from_official() or `hyperseg convert`")
        raise HypersegError(f"{path} is not a hyperseg checkpoint (no format tag); expected a file written by save_model")
    if not isinstance(ckpt.get("version"), int) or ckpt["version"] > _VERSION:
        raise HypersegError(f"{path} has checkpoint version {ckpt.get('version')!r}; this hyperseg reads 1 to {_VERSION}")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("state_dict"), dict) \
            or not all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise HypersegError(f"{path} is damaged: it lacks a config or a state_dict of tensors")
    return ckpt


def load_training_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """A run's ``last.pt``: our checkpoint plus the ``train_state`` that resuming needs."""
    path = Path(path)
    ckpt = _read_checkpoint(path)
    state = ckpt.get("train_state")
    needed = ("step", "best_miou", "optimizer", "scheduler", "rng")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise HypersegError(f"{path} holds no training state; --resume needs the last.pt a run wrote")
    return ckpt


def load_model(source: Union[str, Path], *, map_location: Union[str, torch.device] = "cpu") -> HyperSeg:
    """Rebuild a model from one of our checkpoints, or from registered weights (see ``list_weights``).

    Returns the model in eval mode, with ``model.meta`` restored (for registered weights: the
    record's classes, palette, preprocessing and metrics).
    """
    if not isinstance(source, (str, Path)):
        raise InputTypeError(f"load_model expects a weights name or a checkpoint path, got {type(source).__name__}")
    if is_weights_name(source):
        return _load_registered(get_weights(str(source)), map_location)
    path = Path(source).expanduser()
    if not path.is_file():
        raise NotFoundError(f"no checkpoint file {str(source)!r}; registered weights: {', '.join(list_weights())}")
    return _load_checkpoint_file(path, map_location)


def _check_fit(build: Callable[[], Union[HyperSeg, SMPModel]], state: dict[str, torch.Tensor], path: Path) -> None:
    """Build the stored config on the meta device (no memory) and compare it with the stored tensors,
    so that a config asking for huge layers is refused before anything is allocated."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise HypersegError(f"{path}: weights do not fit the stored config: {len(missing)} tensors missing "
                            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise HypersegError(f"{path}: weights do not fit the stored config: {key} holds {tuple(state[key].shape)}, "
                                f"the config builds {shape}")


def _load_checkpoint_file(path: Path, map_location: Union[str, torch.device]) -> Union[HyperSeg, SMPModel]:
    ckpt = _read_checkpoint(path, map_location)
    family = ckpt.get("family", "hyperseg")
    try:
        if family == SMPModel.family:
            config = SMPConfig.from_dict(ckpt["config"])
            config.check_types()
            build = lambda: SMPModel(config)  # noqa: E731
        elif family == "hyperseg":
            config = HyperSegConfig.from_dict(ckpt["config"])
            build = lambda: HyperSeg(config)  # noqa: E731
        else:
            raise HypersegError(f"holds a model of family {family!r}; this hyperseg reads hyperseg and smp")
    except (HypersegError, TypeError) as exc:
        raise HypersegError(f"{path}: {exc}") from None
    meta = check_model_meta(ckpt.get("meta", {}), str(path))
    state = {k: v.float() if v.dtype == torch.float16 else v for k, v in ckpt["state_dict"].items()}
    _check_fit(build, state, path)
    model = build()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise HypersegError(f"{path}: weights do not fit the stored config: {str(exc).splitlines()[0]}") from None
    model.meta = meta
    return model.eval()


def _load_registered(weights: Weights, map_location: Union[str, torch.device]) -> HyperSeg:
    """The model of a weights record: its file, checked against the record, with the record's data as meta."""
    path = weights.verified_path()
    if weights.format == "official":
        from .official import from_official

        model = from_official(path, config=weights.architecture)
    else:
        model = _load_checkpoint_file(path, map_location)
    model.meta.update(weights.meta())  # the record is the authority on preprocessing and classes
    return model.eval()
