"""The run folder (``train.out_dir``): creating it, reopening it for ``--resume``, and the checks that
a resume continues the same run.

Only rank 0 touches the folder. The lock on it (:class:`~hyperseg.process.runlock.RunLock`) is taken
by the trainer; the logs are :mod:`.logs`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import HypersegError, NotFoundError, OutputExistsError
from ..hub.checkpoint import atomic_write_text, load_training_checkpoint
from .config import RunConfig
from .logs import append_text

__all__ = ["create_run_dir", "reopen_run_dir", "load_last", "check_resume_config", "check_teacher"]

# Files a run rewrites atomically in train.out_dir; a killed write leaves `.<name>.*.tmp` beside them.
_ATOMIC_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "val.csv")
# What a resumed run appends to or writes new files into, rather than replacing by a rename: a link
# there would be written through, so one is refused before anything is written.
_APPENDED_FILES = ("metrics.jsonl", "val.csv", "resumes.jsonl")
_LOG_DIRS = ("tensorboard",)
# Sections a resume may change: the schedule and the run's mechanics, not what is trained on what.
_FROZEN_ON_RESUME = ("model", "data", "loss", "distill")
_DATA_FREE_ON_RESUME = ("workers", "val_batch_size", "root")


def create_run_dir(out_dir: Path, cfg: RunConfig) -> None:
    """A new run's folder, new or empty, holding the run's ``config.yaml``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"train.out_dir {out_dir} is a file; expected a new or empty folder")
    if (out_dir / "last.pt").exists() or (out_dir / "best.pt").exists():
        raise OutputExistsError(f"{out_dir} already holds a run (last.pt/best.pt); continue it with --resume, "
                                f"or choose another train.out_dir")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputExistsError(f"train.out_dir {out_dir} is not empty; a new run needs a new or empty folder "
                                f"(continue a run there with --resume)")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def reopen_run_dir(out_dir: Path, resumed_step: int, changes: dict[str, list]) -> None:
    """Reopen a run's folder for ``--resume``, touching only files the trainer wrote."""
    for name in _APPENDED_FILES + _LOG_DIRS:
        path = out_dir / name
        if path.is_symlink() or (path.exists() and (name in _LOG_DIRS) != path.is_dir()):
            what = f"a symbolic link to {os.readlink(path)}" if path.is_symlink() else \
                "not a folder" if name in _LOG_DIRS else "not a file"
            raise OutputExistsError(f"--resume: {path} is {what}, not what this run wrote; the run would write "
                                    f"through it, so remove it first")
    for name in _ATOMIC_FILES:  # half-written files of a run that was killed mid-save
        for stale in out_dir.glob(f".{name}.*.tmp"):
            stale.unlink()
    if changes:  # config.yaml stays the run's original; each resume that changed something is recorded
        append_text(out_dir / "resumes.jsonl", json.dumps({"step": resumed_step, "changes": changes}) + "\n")


def load_last(path: Path) -> dict[str, Any]:
    """The ``last.pt`` a resume continues from, through the checkpoint layer's checks."""
    if not path.is_file():
        raise NotFoundError(f"--resume: no checkpoint at {path}")
    return load_training_checkpoint(path)


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list]:
    """``section.key -> [old, new]`` for every value that differs between two run configs."""
    changes = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes[f"{section}.{key}"] = [a.get(key), b.get(key)]
    return changes


def check_resume_config(saved: dict[str, Any], cfg: RunConfig, out_dir: Path) -> dict[str, list]:
    """The changes a resume makes to the run's config; refuses changes to the model, data, loss or teacher.
    Keys missing from a run's saved config count as their defaults (a config without ``distill`` ran without one)."""
    defaults = RunConfig().to_dict()
    saved = {section: {**defaults.get(section, {}), **values} for section, values in saved.items()}
    for section in defaults:
        saved.setdefault(section, defaults[section])
    changes = _config_changes(saved, cfg.to_dict())
    frozen = [k for k in changes if k.split(".")[0] in _FROZEN_ON_RESUME
              and not (k.startswith("data.") and k.split(".", 1)[1] in _DATA_FREE_ON_RESUME)]
    if frozen:
        old, new = changes[frozen[0]]
        raise HypersegError(f"--resume: {out_dir} was trained with {frozen[0]}={old!r}, this command gives {new!r}; "
                            f"a resumed run keeps its model, data, loss and teacher (start a new run in another "
                            f"train.out_dir)")
    return changes


def check_teacher(saved: Optional[str], current: Optional[str], teacher: Optional[str], out_dir: Path) -> None:
    """Refuses a resume whose teacher file holds other weights than the run was distilled from: the
    same ``distill.teacher`` name can point at a retrained or replaced file. A run whose saved state
    holds no teacher digest has nothing to compare; it records the teacher's from this resume on."""
    if saved and current and saved != current:
        raise HypersegError(f"--resume: distill.teacher {teacher} has SHA-256 {current[:12]}, "
                            f"but {out_dir} was distilled from a teacher of SHA-256 {saved[:12]}; a resumed "
                            f"run keeps its teacher (restore that file, or start a new run in another "
                            f"train.out_dir)")
