"""The run's logs: ``metrics.jsonl`` always, ``val.csv`` for validations, TensorBoard when installed."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ..hub.checkpoint import atomic_write_text
from ..process.runlock import open_own_file

__all__ = ["RunLogger", "append_text"]


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to a log of the run. A link placed where the log belongs is refused, never
    written through (:func:`~hyperseg.process.runlock.open_own_file`)."""
    with os.fdopen(open_own_file(path, os.O_WRONLY | os.O_APPEND), "a", encoding="utf-8") as f:
        f.write(text)


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize  # a torn last line of a killed run: dropped with the lines after the checkpoint


def _csv_step(line: str) -> int:
    try:
        return int(line.split(",", 1)[0])
    except ValueError:
        return sys.maxsize  # a blank or torn line (an editor, a killed write): dropped


class RunLogger:
    """JSONL always, TensorBoard when installed and enabled; rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.csv = out_dir / "val.csv"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after ``step``: a resumed run repeats them."""
        if not self.enabled:
            return
        if self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            atomic_write_text(self.path, "".join(line for line in lines if _logged_step(line) <= step))
        if self.csv.exists():
            lines = self.csv.read_text().splitlines(keepends=True)
            atomic_write_text(self.csv, "".join(lines[:1] + [line for line in lines[1:]
                                                             if _csv_step(line) <= step]))

    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_text(self.path, json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if kind == "val":
            row = f"{step},{values['miou']:.6f},{values['pixel_acc']:.6f},{values['mean_class_acc']:.6f}\n"
            if not self.csv.is_file() or self.csv.stat().st_size == 0:
                row = "step,miou,pixel_acc,mean_class_acc\n" + row
            append_text(self.csv, row)
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()
