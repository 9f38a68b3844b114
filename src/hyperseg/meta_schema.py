"""One schema for a model's metadata, wherever it is read from: our checkpoints, ONNX files, overrides.

Preprocessing, labels and sizes come from this metadata, so a wrong type or value there gives wrong
labels or a crash deep inside a runtime. Every known key is checked when a file is opened; keys
the schema does not know pass through untouched (they are informational).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .errors import HypersegError

__all__ = ["check_model_meta", "META_SCHEMA", "MAX_SIDE", "MAX_CLASSES"]

MAX_SIDE = 8192  # the largest image side a stored input size may ask for
MAX_CLASSES = 65536


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _list_of(n: int, item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) == n and all(item(x) for x in v)


META_SCHEMA: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "class_names": (f"a list of 1 to {MAX_CLASSES} names",
                    lambda v: isinstance(v, list) and 1 <= len(v) <= MAX_CLASSES and all(isinstance(x, str) for x in v)),
    "palette": ("a list of [r, g, b] colours, each 0..255",
                lambda v: isinstance(v, list) and all(_list_of(3, _whole(0, 255))(c) for c in v)),
    "mean": ("3 finite numbers", _list_of(3, _number)),
    "std": ("3 finite numbers > 0", _list_of(3, lambda x: _number(x) and x > 0)),
    "num_classes": (f"a whole number 1..{MAX_CLASSES}", _whole(1, MAX_CLASSES)),
    "input_size": (f"[height, width], each 32..{MAX_SIDE}", _list_of(2, _whole(32, MAX_SIDE))),
    "size_multiple": ("[height, width], each 1..1024", _list_of(2, _whole(1, 1024))),
    "input_scale": ("a number in (0, 2]", lambda v: _number(v) and 0 < v <= 2),
    "precision": ("fp32, bf16 or int8", lambda v: v in ("fp32", "bf16", "int8")),
    "val_miou": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "val_in_training": ("true or false", lambda v: isinstance(v, bool)),
    "unseen_miou": ("a number in [0, 1]", lambda v: _number(v) and 0 <= v <= 1),
    "unseen_split": ("text", lambda v: isinstance(v, str)),
    "architecture": ("text", lambda v: isinstance(v, str)),
    "source": ("text", lambda v: isinstance(v, str)),
    "weights": ("text", lambda v: isinstance(v, str)),
    "hyperseg_version": ("text", lambda v: isinstance(v, str)),
}


def check_model_meta(meta: Any, where: str) -> dict[str, Any]:
    """A copy of ``meta`` after checking every key the schema knows; ``where`` names the file in errors."""
    if not isinstance(meta, dict):
        raise HypersegError(f"{where}: its metadata is {type(meta).__name__}, expected a mapping")
    for key, (expected, fits) in META_SCHEMA.items():
        if key in meta and meta[key] is not None and not fits(meta[key]):
            raise HypersegError(f"{where}: metadata {key}={meta[key]!r:.80} is not valid; expected {expected}")
    names, palette, count = meta.get("class_names"), meta.get("palette"), meta.get("num_classes")
    if names is not None and palette is not None and len(palette) != len(names):
        raise HypersegError(f"{where}: metadata has {len(palette)} palette colours for {len(names)} class names")
    if names is not None and count is not None and count != len(names):
        raise HypersegError(f"{where}: metadata num_classes={count} but {len(names)} class names")
    return dict(meta)
