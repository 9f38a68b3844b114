"""One schema for a model's metadata, wherever it is read from: our checkpoints, ONNX files, overrides.

Preprocessing, labels and sizes come from this metadata, so a wrong type or value there gives wrong
labels or a crash deep inside a runtime. Every known key is checked when a file is opened; keys
the schema does not know pass through untouched (they are informational).
"""
from __future__ import annotations

from typing import Any, Optional

from .validate import Rule, check_fields, check_value, list_of, one_of, positive, refusal, whole, within

__all__ = ["check_model_meta", "META_SCHEMA", "MAX_SIDE", "MAX_CLASSES"]

MAX_SIDE = 8192  # the largest image side a stored input size may ask for
MAX_CLASSES = 65536

# key: (type, range)
META_SCHEMA: dict[str, tuple[Any, Optional[Rule]]] = {
    "class_names": (list[str], list_of(length=(1, MAX_CLASSES)).described(f"1 to {MAX_CLASSES} names")),
    "palette": (list[list[int]],
                list_of(list_of(whole(0, 255), 3)).described("a list of [r, g, b] colours, each 0..255")),
    "mean": (list[float], list_of(length=3)),
    "std": (list[float], list_of(positive(), 3)),
    "num_classes": (int, whole(1, MAX_CLASSES)),
    "input_size": (list[int], list_of(whole(32, MAX_SIDE), 2).described(f"[height, width], each 32..{MAX_SIDE}")),
    "size_multiple": (list[int], list_of(whole(1, 1024), 2).described("[height, width], each 1..1024")),
    "input_scale": (float, within(0, 2, low_open=True)),
    "precision": (str, one_of("fp32", "bf16", "int8")),
    "val_miou": (float, within(0, 1)),
    "val_in_training": (bool, None),
    "unseen_miou": (float, within(0, 1)),
    "unseen_split": (str, None),
    "architecture": (str, None),
    "source": (str, None),
    "weights": (str, None),
    "hyperseg_version": (str, None),
}
_TYPES = {key: tp for key, (tp, _) in META_SCHEMA.items()}
_RANGES = {key: rule for key, (_, rule) in META_SCHEMA.items() if rule is not None}


def check_model_meta(meta: Any, where: str) -> dict[str, Any]:
    """A copy of ``meta`` after checking every key the schema knows (a key set to None is unset);
    ``where`` names the file in errors."""
    check_value(meta, dict, None, where, "metadata")
    check_fields({k: v for k, v in meta.items() if v is not None}, _TYPES, _RANGES, where, prefix="metadata ")
    names, palette, count = meta.get("class_names"), meta.get("palette"), meta.get("num_classes")
    if names is not None and palette is not None and len(palette) != len(names):
        raise refusal(where, "metadata palette", palette, f"{len(names)} colours, one per class name",
                      "disagrees with class_names")
    if names is not None and count is not None and count != len(names):
        raise refusal(where, "metadata num_classes", count, f"{len(names)}, one per class name",
                      "disagrees with class_names")
    return dict(meta)
