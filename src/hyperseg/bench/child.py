"""Measurements that each need a process of their own, and the protocol between parent and child.

Some things cannot be timed side by side in one process: two runtimes disturb each other's thread
pools, a compiled training step or an allocator keeps state that the next variant would inherit, and
a whole command (``hyperseg predict``) pays its own start-up. So the scripts in ``benchmarks/`` start
a child per measurement. The protocol is one line: the child prints its result as JSON on stdout
(:func:`send_result`), the parent takes the last line that parses (:func:`run_child`), so that
anything a library prints before it does no harm. A child that fails is one :class:`ChildFailed`
sentence carrying the end of its stderr, rather than a parse error or a page of output.
"""
from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar

from ..errors import HypersegError
from .harness import interleaved

__all__ = ["ChildFailed", "run_command", "run_child", "send_result", "alternating"]

T = TypeVar("T")

_TAIL_LINES = 3
_TAIL_CHARS = 600


class ChildFailed(HypersegError):
    """A measurement's own process failed; ``stderr`` holds all it wrote there, ``returncode`` its status."""

    def __init__(self, message: str, stderr: str = "", returncode: Optional[int] = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode


def _tail(stderr: str) -> str:
    """The last few non-empty lines of ``stderr`` on one line: where a traceback says what went wrong."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = " | ".join(lines[-_TAIL_LINES:])
    return tail if len(tail) <= _TAIL_CHARS else "..." + tail[-_TAIL_CHARS:]


def run_command(cmd: Sequence[str], *, label: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
                timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` to its end with its output captured; a failure is one :class:`ChildFailed` line.

    ``label`` names the measurement in that line (default: the command itself).
    """
    name = label or " ".join(str(part) for part in cmd)
    try:
        done = subprocess.run([str(part) for part in cmd], capture_output=True, text=True,
                              env=dict(env) if env is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ChildFailed(f"{name}: no result within {timeout:g} s; stderr: {_tail(stderr) or '(empty)'}",
                          stderr) from None
    except OSError as exc:
        raise ChildFailed(f"{name}: cannot start it ({exc.strerror or exc})") from None
    if done.returncode != 0:
        raise ChildFailed(f"{name} ended with status {done.returncode}: {_tail(done.stderr) or '(no stderr)'}",
                          done.stderr, done.returncode)
    return done


def run_child(cmd: Sequence[str], *, label: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
              timeout: Optional[float] = None) -> Any:
    """Run one measurement in its own process and return the JSON result it printed last on stdout."""
    done = run_command(cmd, label=label, env=env, timeout=timeout)
    for line in reversed(done.stdout.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    name = label or " ".join(str(part) for part in cmd)
    raise ChildFailed(f"{name} printed no JSON result; stderr: {_tail(done.stderr) or '(empty)'}", done.stderr, 0)


def send_result(result: Any) -> None:
    """The child's side of :func:`run_child`: its result, as one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def alternating(runs: Mapping[str, Callable[[], T]], rounds: int,
                progress: Optional[Callable[[int, str, T], None]] = None) -> tuple[dict[str, list[T]], dict[str, list[float]]]:
    """Call every run once per round, the order alternating between rounds as :func:`interleaved` times
    callables, so that drift of the machine hits every variant alike; typically each run starts a child.

    Returns each run's results and the wall seconds of each call, in round order. ``progress`` hears
    (round, name, result) after every call.
    """
    results: dict[str, list[T]] = {name: [] for name in runs}

    def call(name: str) -> None:
        results[name].append(runs[name]())
        if progress:
            progress(len(results[name]), name, results[name][-1])

    seconds = interleaved([partial(call, name) for name in runs], rounds)
    return results, dict(zip(runs, seconds))
