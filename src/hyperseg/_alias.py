"""Old import paths as aliases of the modules that now hold the code.

An alias is the same module object under a second name, so ``from old.path import name``,
private names, ``isinstance`` checks and ``monkeypatch.setattr(old_module, ...)`` all reach the
code that runs.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

__all__ = ["alias"]


def alias(old: str, new: str) -> ModuleType:
    """Register module ``new`` under the name ``old`` as well and return it."""
    module = importlib.import_module(new)
    sys.modules[old] = module
    return module
