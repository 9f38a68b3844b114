"""A small model registry: builders register by name; ``create_model`` looks them up."""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Callable, Optional

from ..errors import HypersegError

__all__ = ["register_model", "list_models", "get_model_builder", "model_cfg"]

_builders: dict[str, Callable[..., Any]] = {}
_cfgs: dict[str, dict[str, Any]] = {}


def register_model(cfg: Optional[dict[str, Any]] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder under its function name, with optional metadata (dataset, classes, ...)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        name = fn.__name__
        if name in _builders:
            raise HypersegError(f"model {name!r} is registered twice")
        _builders[name] = fn
        _cfgs[name] = dict(cfg or {})
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _builders if fnmatch.fnmatch(n, pattern))


def get_model_builder(name: str) -> Callable[..., Any]:
    try:
        return _builders[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_builders), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise HypersegError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}") from None


def model_cfg(name: str) -> dict[str, Any]:
    """Metadata registered with a model (dataset, class names, palette, normalisation, size)."""
    get_model_builder(name)
    return dict(_cfgs[name])
