"""A ``hyperseg serve`` process measured from outside, as its clients and the operating system see it.

A load test must talk to the real server (uvicorn, its worker pool, its queue) over a socket, and
read the server's own resident memory, so the server runs as a child: started on a free loopback
port, ready once ``/healthz`` answers 200, its log kept in a file for the errors it reports, and
stopped however the measurement ends.
"""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

from .child import ChildFailed

__all__ = ["ServerProcess", "served", "free_port", "rss_mb"]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ChildFailed(f"process {pid}: no VmRSS in /proc/{pid}/status")


@dataclass
class ServerProcess:
    """A running server: its process, base URL and log file; ``exit_code`` is set once it stopped."""

    proc: subprocess.Popen
    url: str
    log: Path
    exit_code: Optional[int] = field(default=None)

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def log_errors(self, route: str = "/v1/segment") -> list[str]:
        """Log lines that report an error, a traceback or a request to ``route`` not answered 200."""
        return [line for line in self.log.read_text().splitlines() if "ERROR" in line or "Traceback" in line
                or (f" {route} " in line and " 200 " not in line)]


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if server.proc.poll() is not None:
                tail = " | ".join(server.log.read_text().strip().splitlines()[-3:])
                raise ChildFailed(f"the server exited with status {server.proc.returncode}: {tail}") from None
        time.sleep(0.2)
    raise ChildFailed(f"the server did not become healthy within {timeout:g} s (log: {server.log})")


@contextlib.contextmanager
def served(options: Sequence[str], *, env: Optional[Mapping[str, str]] = None,
           timeout: float = 300) -> Iterator[ServerProcess]:
    """``hyperseg serve OPTIONS`` on a free loopback port, yielded once healthy, terminated on exit."""
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"hyperseg_serve_load_{port}.log"
    cmd = [sys.executable, "-m", "hyperseg", "serve", "--port", str(port), *options]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env) if env is not None else None)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        proc.terminate()
        try:
            server.exit_code = proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            server.exit_code = proc.wait()
