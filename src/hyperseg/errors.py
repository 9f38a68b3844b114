"""The package's error family: everything the command line reports as one sentence.

Every error a user can cause or fix is a :class:`HypersegError`. The subclasses also derive
from the built-in a Python caller would expect (``FileNotFoundError``, ``TypeError``, ...), so
``except FileNotFoundError`` keeps working. Anything else that escapes is a bug, and the command
line shows its traceback.
"""
from __future__ import annotations

__all__ = ["HypersegError", "MissingExtraError", "NotFoundError", "OutputExistsError", "InputTypeError",
           "DivergedError", "ResourceError", "require"]


class HypersegError(ValueError):
    """Bad input or an unmet requirement that the user can fix; the message says how."""


class MissingExtraError(HypersegError, ImportError):
    """An optional dependency is not installed; the message gives the ``pip install`` line."""


class NotFoundError(HypersegError, FileNotFoundError):
    """A file, folder or name the user gave does not exist."""


class OutputExistsError(HypersegError, FileExistsError):
    """Writing would replace a file we did not write, or one of the inputs."""


class InputTypeError(HypersegError, TypeError):
    """A value of the wrong type (a NumPy array where a tensor is expected, ints where floats are)."""


class DivergedError(HypersegError, FloatingPointError):
    """Training produced a non-finite loss."""


class ResourceError(HypersegError, OSError):
    """The machine, not the input, cannot go on: a read-only or full cache, a conversion process that
    was killed, memory that ran out. A job over many inputs stops at the first one, since every later
    input would fail the same way; a server answers it as its own fault (503), not the client's."""


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or fail with the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs the '{extra}' extra: pip install 'hyperseg[{extra}]'") from None
