"""One process per run folder: an advisory lock that the kernel drops when its holder dies."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Optional

from ..errors import HypersegError

__all__ = ["RunLock", "LOCK_NAME", "open_own_file"]

LOCK_NAME = "train.lock"


def open_own_file(path: Path, flags: int) -> int:
    """A descriptor on ``path`` (created if missing) that is sure to be a regular file of the run's own.

    A symbolic link there (dangling or not) is refused instead of followed, and so is a hard link or
    anything else that is not a plain file: writing through it would truncate or append to a file
    elsewhere that the run never wrote."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)  # absent on Windows, which has no such links in practice
    try:
        fd = os.open(path, flags | os.O_CREAT | nofollow | getattr(os, "O_NONBLOCK", 0), 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK) or os.path.islink(path):
            raise HypersegError(f"{path} is {_kind(path)}, not a file this run wrote; remove it (the run writes "
                                f"only plain files of its own there)") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "a hard link to another file" if stat.S_ISREG(info.st_mode) else _kind(path)
        raise HypersegError(f"{path} is {kind}, not a file this run wrote; remove it (the run writes only plain "
                            f"files of its own there)")
    return fd


def _kind(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "not a regular file"
    if stat.S_ISLNK(mode):
        return f"a symbolic link to {os.readlink(path)}"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


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
        fd = open_own_file(self.path, os.O_RDWR)
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
