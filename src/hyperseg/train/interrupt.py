"""Stopping a training run cleanly: SIGINT (Ctrl-C) or SIGTERM end the current step, not the process."""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Optional

import torch
import torch.distributed as dist

__all__ = ["StopRequest", "TrainingInterrupted", "ignore_stop_signals"]


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after saving ``last.pt``; the message says how to resume."""


class StopRequest:
    """While active, SIGINT and SIGTERM only set a flag that the training loop reads between steps.

    A second Ctrl-C restores the default behaviour, so a stuck step can still be killed. Under DDP
    every rank must stop after the same step, so :meth:`agreed` combines the ranks' flags.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self.signal = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the next one is not caught

    def agreed(self, distributed: bool) -> bool:
        """Whether to stop now; under DDP, true on every rank as soon as one rank was signalled."""
        if not distributed:
            return self.signal is not None
        flag = torch.tensor([1.0 if self.signal is not None else 0.0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` for DataLoader workers: a Ctrl-C or SIGTERM sent to the whole process group
    is the main process's to handle; a worker that died of it would abort the step being finished."""
    for sig in StopRequest._SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
