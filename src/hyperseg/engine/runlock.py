"""One process per run folder: an advisory lock that the kernel drops when its holder dies."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..errors import HypersegError

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = "train.lock"


class RunLock:
    """``flock`` on ``<run>/train.lock``, taken without waiting. A second trainer on the same folder
    is refused with the holder's pid; after ``kill -9`` the kernel has already released the lock,
    so it can never go stale. Where ``fcntl`` does not exist (Windows) there is no lock."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise HypersegError(f"{self.path.parent} is being trained by another process (pid {holder}); wait for it, "
                                f"or stop it, before resuming this run") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
