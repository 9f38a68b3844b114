"""On-disk cache of converted models: a PyTorch model is exported (and quantised) once per input
size, or once for every size (a dynamic-shape file).

Entries are keyed by a hash of the weights, the architecture config, the input size, the
precision, the calibration set and the versions of everything that affects the result. The
cache lives in ``$HYPERSEG_CACHE`` (default ``~/.cache/hyperseg``); deleting it is always safe.
It is bounded: after every conversion the least recently used files (OpenVINO's compiled blobs
included) are deleted until the folder holds at most ``$HYPERSEG_CACHE_MAX_MB`` (2048 MB), so a
server that meets a new image size per request cannot fill the disk.

A long-lived process (``serve``) calls :func:`isolate_conversions`: each conversion then runs in a
fresh child process that exits when the file is written. torch's exporter keeps a few MB per
export that no cache reset fully returns (graphs, guards, allocator fragmentation); in a child
they go with it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from .. import __version__
from ..errors import HypersegError
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = ["cache_dir", "cache_limit_bytes", "cache_lock", "prune_cache", "weights_digest", "cached_onnx",
           "isolate_conversions", "size_label"]

DEFAULT_CACHE_MAX_MB = 2048
_ISOLATED = [False]  # set once by a long-lived process; read by every conversion


def isolate_conversions(enabled: bool = True) -> None:
    """Run every later conversion (export, and quantisation for int8) in a child process."""
    _ISOLATED[0] = enabled


def cache_dir() -> Path:
    return Path(os.environ.get("HYPERSEG_CACHE") or Path.home() / ".cache" / "hyperseg").expanduser()


def cache_limit_bytes() -> int:
    """``$HYPERSEG_CACHE_MAX_MB`` (a positive number of megabytes; default 2048) in bytes."""
    raw = os.environ.get("HYPERSEG_CACHE_MAX_MB", "").strip()
    if not raw:
        return DEFAULT_CACHE_MAX_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = float("nan")
    if not 0 < mb < float("inf"):
        raise HypersegError(f"HYPERSEG_CACHE_MAX_MB={raw!r}: expected a positive, finite number of megabytes")
    return int(mb * 2**20)


# torch's exporter is not thread-safe, and a file must not be pruned between being found and being
# loaded: serve's workers convert, load and prune one at a time (re-entrant: loading calls cached_onnx).
_CACHE_LOCK = threading.RLock()


def cache_lock() -> threading.RLock:
    """Hold it from finding a cached file until the runtime has read it."""
    return _CACHE_LOCK


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _, names in os.walk(root):
        for name in names:
            yield Path(dirpath) / name


def prune_cache(limit_bytes: int, *, keep: tuple[Path, ...] = (), root: Optional[Path] = None) -> list[Path]:
    """Delete the least recently used files under ``root`` (the cache) until the rest take at most
    ``limit_bytes``; ``keep`` is never deleted. Use is the modification time (a hit touches its
    file). Files another process deletes meanwhile are skipped. Returns the deleted paths."""
    root = cache_dir() if root is None else root
    kept = {Path(p).resolve() for p in keep}
    entries = []
    for path in _files(root):
        with suppress(OSError):
            st = path.stat()
            entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries, key=lambda e: e[0]):  # oldest first
        if total <= limit_bytes:
            break
        if path.resolve() in kept:
            continue
        with suppress(FileNotFoundError):
            path.unlink()
            deleted.append(path)
        total -= size
    return deleted


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def size_label(size: Optional[tuple[int, int]], dynamic: str = "any size") -> str:
    """``"HxW"`` for a conversion at one size; ``dynamic`` for one that takes every size (``None``)."""
    return f"{size[0]}x{size[1]}" if size else dynamic


def cached_onnx(model: nn.Module, size: Optional[tuple[int, int]], precision: str, *,
                calibration: Optional[str] = None, calibration_count: int = 30) -> tuple[Path, float]:
    """The ONNX file of ``model`` at ``size`` (``None``: one file for any size, HyperSeg models only)
    and ``precision`` ("fp32" or "int8"), and the seconds spent making it."""
    versions = {"hyperseg": __version__, "torch": torch.__version__, "opset": DEFAULT_OPSET}
    if precision == "int8":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    config = getattr(model, "config", None)
    key_data = {
        "weights": weights_digest(model),
        "config": config.to_dict() if hasattr(config, "to_dict") else type(model).__name__,
        "size": list(size) if size else "dynamic", "precision": precision, "versions": versions,
        "calibration": [str(Path(calibration).resolve()), calibration_count] if precision == "int8" else None,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:20]
    arch = str(getattr(model, "meta", {}).get("name") or getattr(model, "meta", {}).get("architecture") or "model")
    arch = re.sub(r"[^A-Za-z0-9_.-]", "_", arch)  # "smp:FPN" -> "smp_FPN": a file name on every system
    path = cache_dir() / f"{arch}-{size_label(size, 'dynamic')}-{precision}-{key}.onnx"
    with _CACHE_LOCK:
        if path.is_file():  # a hit (perhaps made by another thread while this one waited): mark it used
            with suppress(OSError):
                os.utime(path)
            return path, 0.0
        made = _make(model, path, size, precision, calibration, calibration_count)
        prune_cache(cache_limit_bytes(), keep=(path,))
        return made


def _make(model: nn.Module, path: Path, size: Optional[tuple[int, int]], precision: str, calibration: Optional[str],
          calibration_count: int) -> tuple[Path, float]:
    if not _ISOLATED[0]:
        return _convert(model, path, size, precision, calibration, calibration_count)
    # A fresh interpreter (not fork: the parent has threads, a server's workers, and a forked child
    # could inherit a lock one of them holds; not multiprocessing's spawn, which re-runs the parent's
    # main module). The job goes in and the result or the error comes back pickled: the model is ours,
    # in memory, never read from a file. The child is gone when it returns, taking its memory along.
    try:
        job = pickle.dumps((model, path, size, precision, calibration, calibration_count))
    except Exception:  # a user's module that cannot be pickled (a lambda inside): convert here instead
        return _convert(model, path, size, precision, calibration, calibration_count)
    done = subprocess.run([sys.executable, "-c", "from hyperseg.runtime.cache import _child; _child()"],
                          input=job, capture_output=True)
    try:
        ok, value = pickle.loads(done.stdout)
    except Exception:  # the child died before answering (killed, out of memory)
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise HypersegError(f"converting the model for {size_label(size)} failed in its child process "
                            f"(exit code {done.returncode}): {tail[0]}") from None
    if not ok:
        raise value
    return value


def _child() -> None:
    """The child's side of an isolated conversion: a pickled job on stdin, (ok, result or error) on stdout."""
    job = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the exporter prints stays out of the answer
    try:
        answer = (True, _convert(*job))
    except HypersegError as exc:
        answer = (False, exc)
    out.write(pickle.dumps(answer))
    out.flush()


def _convert(model: nn.Module, path: Path, size: Optional[tuple[int, int]], precision: str, calibration: Optional[str],
             calibration_count: int) -> tuple[Path, float]:
    start = time.perf_counter()
    fp32 = path if precision == "fp32" else path.with_name(path.stem + ".fp32.onnx")
    if not fp32.is_file():
        export_onnx(model, fp32, size=size, dynamic=size is None)
    if precision == "int8":
        from .quantize import quantize_onnx

        if calibration is None:
            raise HypersegError("int8 needs calibration images: give --calibration DIR (a folder of images)")
        quantize_onnx(fp32, path, calibration, count=calibration_count)
        fp32.unlink()
    return path, time.perf_counter() - start
