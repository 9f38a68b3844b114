"""How a measurement script ends when the package refuses something: one line, not a traceback.

The scripts in ``benchmarks/`` and ``experiments/`` call the package directly, so its refusals (a
failed child, an existing results file, a runtime this machine lacks) arrive as a
:class:`~hyperseg.errors.HypersegError` whose message is already the whole story.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import HypersegError

__all__ = ["run_script"]


def run_script(main: Callable[[], Any]) -> None:
    """Call ``main``; a :class:`HypersegError` ends the process with status 1 and its one-line message."""
    try:
        main()
    except HypersegError as exc:
        raise SystemExit(f"error: {exc}") from None
