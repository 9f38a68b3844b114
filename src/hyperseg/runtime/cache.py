"""On-disk cache of converted models: a PyTorch model is exported (and quantised) once per input
size, or once for every size (a dynamic-shape file).

Entries are keyed by a hash of the weights, the architecture config, the input size, the
precision, the calibration set and the versions of everything that affects the result. The
cache lives in ``$HYPERSEG_CACHE`` (default ``~/.cache/hyperseg``); deleting it is always safe.
It is bounded: after every conversion the least recently used of hyperseg's own files are deleted
until they take at most ``$HYPERSEG_CACHE_MAX_MB`` (2048 MB), so a server that meets a new image
size per request cannot fill the disk. Its own files are the ONNX files named as
:func:`cached_onnx` names them, at the top of the folder, and the blobs OpenVINO compiles into the
subfolder :data:`OPENVINO_FOLDER` when hyperseg made that folder (it holds :data:`OWNER_MARK`).
Nothing else in the folder is ever deleted, counted or followed: ``$HYPERSEG_CACHE`` may point
at a folder that holds other things.

A long-lived process (``serve``) calls :func:`isolate_conversions`: each conversion then runs in a
fresh child process that exits when the file is written. torch's exporter keeps a few MB per
export that no cache reset fully returns (graphs, guards, allocator fragmentation); in a child
they go with it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn

from .. import __version__
from ..errors import HypersegError, ResourceError
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = ["cache_dir", "cache_limit_bytes", "check_cache_settings", "openvino_cache_dir", "cache_lock", "prune_cache",
           "weights_digest", "cached_onnx", "isolate_conversions", "size_label", "environment_cause", "OPENVINO_FOLDER",
           "OWNER_MARK"]

DEFAULT_CACHE_MAX_MB = 2048
# The names of the files hyperseg writes into the cache, and so the only ones it may delete:
# "{arch}-{HxW|dynamic}-{precision}-{20 hex}.onnx" (arch as cached_onnx sanitises it), and the float
# intermediate "....-int8-{key}.fp32.onnx" of an int8 conversion.
_OUR_ONNX = re.compile(r"[A-Za-z0-9_.-]+-(?:[0-9]+x[0-9]+|dynamic)-(?:fp32-[0-9a-f]{20}|int8-[0-9a-f]{20}(?:\.fp32)?)\.onnx")
# OpenVINO's compiled models get a folder of their own, recognisably ours by its mark: an
# OpenVINO cache the user set up elsewhere, or a folder of that name we did not make, is left alone.
OPENVINO_FOLDER = "hyperseg-openvino"
OWNER_MARK = ".hyperseg-owned"
# OpenVINO's file-storage cache writes one "{hash}.blob" per compiled model (the hash in decimal).
_OPENVINO_BLOB = re.compile(r"[0-9A-Za-z_]+\.blob")
# Failures of the machine rather than of the input: every later conversion would fail the same way.
_ENVIRONMENT_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOMEM,
                                 errno.EMFILE, errno.ENFILE, errno.EIO, errno.ENOTDIR})
_ISOLATED = [False]  # set once by a long-lived process; read by every conversion


def isolate_conversions(enabled: bool = True) -> None:
    """Run every later conversion (export, and quantisation for int8) in a child process."""
    _ISOLATED[0] = enabled


def cache_dir() -> Path:
    return Path(os.environ.get("HYPERSEG_CACHE") or Path.home() / ".cache" / "hyperseg").expanduser()


def _cache_name(folder: Path) -> str:
    """How a message names the cache: by the variable that chose it."""
    if os.environ.get("HYPERSEG_CACHE"):
        return f"the model cache HYPERSEG_CACHE={folder}"
    return f"the model cache {folder} (the default; set HYPERSEG_CACHE to move it)"


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


def check_cache_settings(*, folder: bool = True) -> tuple[Path, int]:
    """Refuse, before anything is converted, an unusable cache: ``$HYPERSEG_CACHE_MAX_MB`` that is not a
    positive number, and (with ``folder``) a ``$HYPERSEG_CACHE`` that is not a folder hyperseg can
    write to (made if missing; a read-only or full one is a :class:`ResourceError`).
    Returns the folder and the limit in bytes."""
    limit = cache_limit_bytes()
    root = cache_dir()
    if not folder:
        return root, limit
    if root.exists() and not root.is_dir():
        raise HypersegError(f"{_cache_name(root)} is not a folder; expected a folder to keep converted models in")
    try:
        root.mkdir(parents=True, exist_ok=True)
        # writing is the only reliable test: permissions, read-only mounts and quotas all show here
        fd, probe = tempfile.mkstemp(prefix=".hyperseg-probe-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _cache_unwritable(root, exc) from None
    return root, limit


def _cache_unwritable(root: Path, exc: OSError) -> HypersegError:
    reason = exc.strerror or str(exc)
    if exc.errno in _ENVIRONMENT_ERRNOS:
        return ResourceError(f"{_cache_name(root)} cannot be written ({reason}); free space there, make it writable "
                             f"or set HYPERSEG_CACHE to a writable folder")
    return HypersegError(f"{_cache_name(root)} cannot be used ({reason}); set HYPERSEG_CACHE to a writable folder")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling, innermost last."""
    seen: set[int] = set()
    cause: Optional[BaseException] = exc
    while cause is not None and id(cause) not in seen:
        yield cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__


def environment_cause(exc: BaseException, within: Path) -> Optional[OSError]:
    """The machine's OSError (read-only, full, no memory) behind ``exc`` when it concerns a path in the
    folder ``within``, or no path at all (a failed write names none); ``None`` otherwise. Writers such
    as :func:`~hyperseg.hub.checkpoint.atomic_write` report it as a one-line HypersegError chained to it."""
    inside = Path(within).absolute()
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in _ENVIRONMENT_ERRNOS:
            where = Path(os.fsdecode(cause.filename)).absolute() if cause.filename is not None else None
            if where is None or where == inside or inside in where.parents:
                return cause
    return None


def _owned(folder: Path) -> bool:
    """``folder`` is a real folder (not a link) holding our mark, as a real file."""
    with suppress(OSError):
        return stat.S_ISDIR(os.lstat(folder).st_mode) and stat.S_ISREG(os.lstat(folder / OWNER_MARK).st_mode)
    return False


def openvino_cache_dir() -> Optional[Path]:
    """The folder for OpenVINO's compiled-model cache (made, with its mark, if absent), or ``None`` where
    a folder of that name that hyperseg did not make is in the way: OpenVINO then compiles without one."""
    root, _ = check_cache_settings()
    folder = root / OPENVINO_FOLDER
    try:
        folder.mkdir()
    except FileExistsError:
        return folder if _owned(folder) else None
    except OSError as exc:
        raise _cache_unwritable(root, exc) from None
    mark = folder / OWNER_MARK
    try:
        mark.write_text("OpenVINO's compiled models for hyperseg; hyperseg deletes the least recently used *.blob "
                        "files here to keep its cache within HYPERSEG_CACHE_MAX_MB\n")
    except OSError as exc:
        with suppress(OSError):  # the folder and the mark are the ones just made here
            mark.unlink(missing_ok=True)
            folder.rmdir()
        raise _cache_unwritable(root, exc) from None
    return folder


# torch's exporter is not thread-safe, and a file must not be pruned between being found and being
# loaded: serve's workers convert, load and prune one at a time (re-entrant: loading calls cached_onnx).
_CACHE_LOCK = threading.RLock()


def cache_lock() -> threading.RLock:
    """Hold it from finding a cached file until the runtime has read it."""
    return _CACHE_LOCK


def _regular_files(folder: Path, name: "re.Pattern[str]") -> Iterator[tuple[Path, os.stat_result]]:
    """The regular files directly in ``folder`` whose whole name matches: links are neither followed nor listed."""
    with suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if name.fullmatch(entry.name):
                with suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        yield Path(entry.path), st


def _own_files(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """The files hyperseg wrote into the cache ``root``: its ONNX files, and OpenVINO's blobs in our folder."""
    yield from _regular_files(root, _OUR_ONNX)
    if _owned(root / OPENVINO_FOLDER):
        yield from _regular_files(root / OPENVINO_FOLDER, _OPENVINO_BLOB)


def prune_cache(limit_bytes: int, *, keep: tuple[Path, ...] = (), root: Optional[Path] = None) -> list[Path]:
    """Delete the least recently used of hyperseg's own files in ``root`` (the cache) until they take at
    most ``limit_bytes``; ``keep`` is never deleted, nor is any file hyperseg did not write (see the
    module's description). Use is the modification time (a hit touches its file). Files another
    process deletes meanwhile are skipped. Returns the deleted paths."""
    root = cache_dir() if root is None else root
    kept = set()
    for path in keep:
        with suppress(OSError):
            st = os.stat(path)
            kept.add((st.st_dev, st.st_ino))
    entries = sorted(_own_files(root), key=lambda e: e[1].st_mtime)  # oldest first
    total = sum(st.st_size for _, st in entries)
    deleted = []
    for path, st in entries:
        if total <= limit_bytes:
            break
        if (st.st_dev, st.st_ino) in kept:
            continue
        try:
            path.unlink()  # a link put in its place meanwhile is removed itself, never its target
        except FileNotFoundError:
            pass  # another process pruned it: its space is free all the same
        except OSError:
            continue  # not ours to delete after all (another user's, in a shared cache): it still counts
        else:
            deleted.append(path)
        total -= st.st_size
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
        _, limit = check_cache_settings()  # before minutes of conversion, not after
        made = _make(model, path, size, precision, calibration, calibration_count)
        prune_cache(limit, keep=(path,))
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
    try:
        done = subprocess.run([sys.executable, "-c", "from hyperseg.runtime.cache import _child; _child()"],
                              input=job, capture_output=True)
    except OSError as exc:  # no process could be started: out of memory or of process slots
        raise ResourceError(f"converting the model for {size_label(size)} needs a child process, and none could be "
                            f"started ({exc.strerror or exc})") from None
    try:
        ok, value = pickle.loads(done.stdout)
    except Exception:  # the child died before answering (killed, out of memory)
        raise _child_died(size, done.returncode, done.stderr) from None
    if not ok:
        raise value
    return value


def _child_died(size: Optional[tuple[int, int]], returncode: int, stderr: bytes) -> ResourceError:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "a signal"
        # SIGKILL is what the kernel's out-of-memory killer sends: the likeliest cause, and the one to fix
        hint = ", as the out-of-memory killer does; free memory and retry" if -returncode == signal.SIGKILL else ""
        return ResourceError(f"converting the model for {size_label(size)} stopped: its process was killed by {name} "
                             f"(signal {-returncode}){hint}")
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    return ResourceError(f"converting the model for {size_label(size)} stopped: its process exited with code "
                         f"{returncode} without a result ({tail[0][:200]})")


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
    """:func:`_write` with the machine's failures told apart from the model's: a full or read-only cache,
    or memory that ran out, is a :class:`ResourceError`."""
    try:
        return _write(model, path, size, precision, calibration, calibration_count)
    except ResourceError:
        raise
    except MemoryError:
        raise _out_of_memory(size) from None
    except Exception as exc:
        if any(isinstance(e, MemoryError) for e in _chain(exc)):  # the exporter words it as its own failure
            raise _out_of_memory(size) from None
        cause = environment_cause(exc, path.parent)
        if cause is None:
            raise
        if cause.errno == errno.ENOMEM:
            raise _out_of_memory(size) from None
        raise _cache_unwritable(path.parent, cause) from None


def _out_of_memory(size: Optional[tuple[int, int]]) -> ResourceError:
    return ResourceError(f"converting the model for {size_label(size)} ran out of memory; free memory and retry")


def _write(model: nn.Module, path: Path, size: Optional[tuple[int, int]], precision: str, calibration: Optional[str],
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
