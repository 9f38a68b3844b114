"""What a ``predict --out`` folder holds: the options that made it, and which inputs are finished.

``hyperseg-predict.json`` (written atomically, once per run) records the options that decide the
outputs' bytes (model, runtime, precision, test-time augmentation, sizes, overlay options) and a
digest of the input list. Each process appends the inputs it finished to its own log,
``.hyperseg-predict/done-<rank>.txt``, one line per input after all of its files are in place.
An input counts as finished when all of its output files exist: outputs are written atomically, so
an existing one is complete. The logs say who did what, so a resumed job can show it redid nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from ..hub.checkpoint import atomic_write_text
from ..errors import HypersegError, OutputExistsError
from ..process.runlock import open_own_file

__all__ = ["MANIFEST_NAME", "DONE_DIR", "PredictManifest", "DoneLog", "inputs_digest", "read_done", "refuse_link",
           "remove_stale_temporaries"]

MANIFEST_NAME = "hyperseg-predict.json"
DONE_DIR = ".hyperseg-predict"
SCHEMA = 1


def inputs_digest(files: Sequence[Path]) -> str:
    """SHA-256 of the ordered input list (paths as given, made absolute)."""
    h = hashlib.sha256()
    for path in files:
        h.update(os.path.abspath(path).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def read_done(out: Path) -> list[str]:
    """Every input the done logs under ``out`` record, in log order (a torn last line is skipped)."""
    done: list[str] = []
    for log in sorted((out / DONE_DIR).glob("done-*.txt")):
        text = log.read_text(encoding="utf-8", errors="surrogateescape")
        lines = text.split("\n")
        done += [line for line in lines[:-1] if line]  # the part after the last newline may be torn
    return done


class PredictManifest:
    """The manifest of one ``--out`` folder; :meth:`check` decides whether a run may write there."""

    def __init__(self, out: Path, options: dict[str, Any], files: Sequence[Path]) -> None:
        self.out, self.path = Path(out), Path(out) / MANIFEST_NAME
        self.options = options
        self.inputs = {"count": len(files), "sha256": inputs_digest(files)}

    def stored(self) -> Optional[dict[str, Any]]:
        refuse_link(self.path, self.out)
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HypersegError(f"{self.path}: not a readable predict manifest ({exc}); move it away or use "
                                f"another --out") from None
        inputs = data.get("inputs") if isinstance(data, dict) else None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("options"), dict) \
                or not isinstance(inputs, dict) or not isinstance(inputs.get("count"), int) \
                or not isinstance(inputs.get("sha256"), str):
            raise HypersegError(f"{self.path}: not a hyperseg predict manifest of schema {SCHEMA}; move it away "
                                f"or use another --out")
        return data

    def check(self, planned: Iterable[Path], *, resume: bool, overwrite: bool) -> str:
        """Whether this run may write its ``planned`` outputs into ``out``: ``"new"``, ``"resume"``
        or ``"overwrite"``; otherwise an :class:`OutputExistsError` naming the way on."""
        if resume and overwrite:
            raise HypersegError("--resume and --overwrite exclude each other: --resume keeps finished outputs, "
                                "--overwrite redoes them")
        stored = self.stored()
        if stored is not None:
            if overwrite:
                return "overwrite"
            if not resume:
                raise OutputExistsError(f"--out {self.out} holds the outputs of an earlier run ({self.path}); add "
                                        f"--resume to continue it, --overwrite to redo it, or choose another --out")
            for key in sorted(set(self.options) | set(stored["options"])):
                then, now = stored["options"].get(key), self.options.get(key)
                if then != now:
                    raise OutputExistsError(f"--resume: --out {self.out} was written with {key}={then!r}, this run "
                                            f"has {key}={now!r}; use the same options, or another --out")
            if stored.get("inputs") != self.inputs:
                raise OutputExistsError(
                    f"--resume: the inputs differ from those of the run in --out {self.out} "
                    f"({stored['inputs']['count']} inputs then, {self.inputs['count']} now); "
                    f"give the same inputs, or another --out")
            return "resume"
        existing = next((p for p in planned if os.path.lexists(p)), None)
        if existing is not None and not overwrite:  # not ours: no manifest says a run of ours wrote it
            raise OutputExistsError(f"--out {self.out}: {existing} exists and was not written by a hyperseg predict "
                                    f"run (no {MANIFEST_NAME}); give --overwrite to replace it, or another --out")
        return "overwrite" if overwrite else "new"

    def start(self, mode: str) -> None:
        """Record the options (atomically); a fresh or overwriting run also forgets the old done logs."""
        self.out.mkdir(parents=True, exist_ok=True)
        done_dir = self.out / DONE_DIR
        refuse_link(done_dir, self.out)
        if mode != "resume":
            shutil.rmtree(done_dir, ignore_errors=True)
        done_dir.mkdir(exist_ok=True)
        if mode != "resume" or not self.path.is_file():
            record = {"schema": SCHEMA, "tool": "hyperseg predict", "options": self.options, "inputs": self.inputs}
            atomic_write_text(self.path, json.dumps(record, indent=2, sort_keys=True) + "\n")


class DoneLog:
    """One process's append-only record of the inputs it finished."""

    def __init__(self, out: Path, rank: int) -> None:
        path = Path(out) / DONE_DIR / f"done-{rank}.txt"
        refuse_link(path.parent, out)
        fd = open_own_file(path, os.O_RDWR | os.O_APPEND)  # never through a link, as the trainer's logs
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="surrogateescape")
        if torn:  # a kill mid-line: end that line, so the next entry starts on its own
            self._file.write("\n")

    def add(self, path: Path) -> None:
        self._file.write(f"{path}\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def refuse_link(path: Path, out: Path) -> None:
    """Refuse a symbolic link where ``predict`` keeps its own records: writing through it would
    change a file elsewhere, one that no predict run wrote."""
    if os.path.islink(path):
        raise OutputExistsError(f"--out {out}: {path} is a symbolic link, where predict keeps its own records; "
                                f"remove the link, or choose another --out")


def remove_stale_temporaries(out: Path, planned: Iterable[Path]) -> int:
    """Delete the temporary files that a killed run left beside its outputs in ``out`` (an atomic
    write's ``.<name>.<random>.tmp``, a video's ``.<stem>.tmp.mp4``), only for this job's output
    names. Returns how many went."""
    names = {p.name[:100] for p in planned}
    videos = {p.stem for p in planned if p.suffix == ".mp4"}
    removed = 0
    try:
        entries = list(os.scandir(out))
    except FileNotFoundError:
        return 0
    for entry in entries:
        name = entry.name
        if not name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        ours = (name.endswith(".tmp") and name[1:-4].rpartition(".")[0] in names) or \
               (name.endswith(".tmp.mp4") and name[1:-8] in videos)
        if ours:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed
