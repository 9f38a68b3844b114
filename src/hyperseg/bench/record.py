"""Result files of the measurement scripts: JSON that says where, when and how it was measured.

A number without its machine, date and command cannot be compared with another or taken again, so
every record carries :func:`machine_info`, the date and the command line. The file is written
atomically (a crash leaves the old one or none, never half a file), and an existing file is not
replaced unless the caller says so, as the package's commands refuse an existing ``--out`` without
``--overwrite``; :func:`check_record_path` lets a script refuse before an hour of measuring, not after.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from ..hub.checkpoint import atomic_write_text, check_output
from .harness import machine_info

__all__ = ["provenance", "check_record_path", "write_record"]


def provenance() -> dict[str, Any]:
    """The machine, today's date and the command line of this process, as a record states them."""
    return {"machine": machine_info(), "date": time.strftime("%Y-%m-%d"), "command": shlex.join(sys.argv)}


def check_record_path(path: Optional[Union[str, Path]], overwrite: bool = False) -> None:
    """Refuse a record path that is a folder, or an existing file unless ``overwrite``; None passes."""
    check_output(path, overwrite=overwrite)


def write_record(path: Union[str, Path], result: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``result`` as JSON to ``path``, atomically, with :func:`provenance` added where it does not
    already say them (a script that printed its own machine and date keeps those)."""
    check_record_path(path, overwrite)
    record = dict(result)
    for key, value in provenance().items():
        record.setdefault(key, value)
    return atomic_write_text(path, json.dumps(record, indent=1) + "\n")
