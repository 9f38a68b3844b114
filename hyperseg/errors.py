"""The package's error family: everything the command line reports as one sentence."""
from __future__ import annotations

__all__ = ["HypersegError", "MissingExtraError", "require"]


class HypersegError(ValueError):
    """Bad input or an unmet requirement that the user can fix; the message says how."""


class MissingExtraError(HypersegError, ImportError):
    """An optional dependency is not installed; the message gives the ``pip install`` line."""


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or fail with the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs the '{extra}' extra: pip install 'hyperseg[{extra}]'") from None
