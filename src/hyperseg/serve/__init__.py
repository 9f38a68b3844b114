"""`hyperseg serve`: an HTTP inference server with a web page (FastAPI + uvicorn, the ``serve`` extra).

    POST /v1/segment   an image (multipart or raw body) -> label PNG, JSON summary or overlay
    GET  /v1/model     classes, palette, input size, runtime, precision, val mIoU
    GET  /healthz      whether the model is loaded
    GET  /             the web page;  /openapi.json the schema
"""
from __future__ import annotations

import ipaddress
import logging
import math
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Union

from ..errors import HypersegError, require
from .upload import UPLOAD_IDLE_TIMEOUT_S

__all__ = ["create_app", "run_server", "is_loopback"]


def create_app(*args, **kwargs):
    """See :func:`hyperseg.serve.app.create_app` (imported lazily: it needs the serve extra)."""
    _require_extra()
    from .app import create_app as build

    return build(*args, **kwargs)


def _require_extra() -> None:
    for module in ("fastapi", "uvicorn", "python_multipart"):
        require(module, "serve", "hyperseg serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Fail with one sentence, before loading the model, when the address cannot be bound."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HypersegError(f"--host {host!r}: not an address this machine can listen on ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise HypersegError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})") from None


def run_server(model: Union[str, Path] = "camvid", *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               max_queue: int = 16, max_upload_mb: float = 20.0, max_megapixels: float = 50.0,
               upload_timeout_s: float = UPLOAD_IDLE_TIMEOUT_S, **predictor_options: Any) -> None:
    """Load the model, then serve until SIGTERM or Ctrl-C; in-flight requests finish first.
    ``predictor_options`` (``options=``, a :class:`~hyperseg.runtime.options.RuntimeOptions`, or its
    fields runtime, precision, device, ... as keywords; meta) go to :func:`create_app`."""
    _require_extra()
    import uvicorn

    from .app import create_app as build

    for option, value, low in (("--workers", workers, 1), ("--max-queue", max_queue, 0), ("--port", port, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (option == "--port" and value > 65535):
            raise HypersegError(f"{option} {value!r}: expected a whole number >= {low}"
                                + (" and <= 65535" if option == "--port" else ""))
    for option, value in (("--max-upload-mb", max_upload_mb), ("--max-megapixels", max_megapixels),
                          ("--upload-timeout", upload_timeout_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise HypersegError(f"{option} {value!r}: expected a positive, finite number")
    _check_port_free(host, port)
    if not is_loopback(host):
        print(f"hyperseg serve: warning: listening on {host}, reachable from other machines; the server has no "
              f"authentication (use --host 127.0.0.1 to keep it local)", file=sys.stderr)
    if workers > 1:  # the workers share the cores instead of each taking all of them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    app = build(model, workers=workers, max_queue=max_queue, max_upload_mb=max_upload_mb,
                max_megapixels=max_megapixels, upload_timeout_s=upload_timeout_s, **predictor_options)
    app.state.pool.load()  # a bad model source is a one-line error here, before anything listens
    logging.getLogger("hyperseg.serve").setLevel(logging.INFO)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, log_level="info",
                                           timeout_graceful_shutdown=60))
    # uvicorn finishes the in-flight requests on SIGTERM, then re-raises the signal to the handler
    # that was installed before it: this one, so the process exits 0 instead of being killed.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
