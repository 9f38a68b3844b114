"""On-disk cache of converted models, so a PyTorch model is exported (and quantised) once per input size.

Entries are keyed by a hash of the weights, the architecture config, the input size, the
precision, the calibration set and the versions of everything that affects the result. The
cache lives in ``$HYPERSEG_CACHE`` (default ``~/.cache/hyperseg``); deleting it is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from .. import __version__
from ..errors import HypersegError
from .onnx_export import DEFAULT_OPSET, export_onnx

__all__ = ["cache_dir", "weights_digest", "cached_onnx"]


def cache_dir() -> Path:
    return Path(os.environ.get("HYPERSEG_CACHE") or Path.home() / ".cache" / "hyperseg").expanduser()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over parameter and buffer names, shapes, dtypes and bytes."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cached_onnx(model: nn.Module, size: tuple[int, int], precision: str, *, calibration: Optional[str] = None,
                calibration_count: int = 30) -> tuple[Path, float]:
    """The ONNX file of ``model`` at ``size`` and ``precision`` ("fp32" or "int8"), and the seconds spent making it."""
    versions = {"hyperseg": __version__, "torch": torch.__version__, "opset": DEFAULT_OPSET}
    if precision == "int8":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    config = getattr(model, "config", None)
    key_data = {
        "weights": weights_digest(model),
        "config": config.to_dict() if hasattr(config, "to_dict") else type(model).__name__,
        "size": list(size), "precision": precision, "versions": versions,
        "calibration": [str(Path(calibration).resolve()), calibration_count] if precision == "int8" else None,
    }
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True, default=str).encode()).hexdigest()[:20]
    arch = str(getattr(model, "meta", {}).get("name") or getattr(model, "meta", {}).get("architecture") or "model")
    arch = re.sub(r"[^A-Za-z0-9_.-]", "_", arch)  # "smp:FPN" -> "smp_FPN": a file name on every system
    path = cache_dir() / f"{arch}-{size[0]}x{size[1]}-{precision}-{key}.onnx"
    with _EXPORTING:  # torch's exporter is not thread-safe: serve's workers convert one at a time
        return _make(model, path, size, precision, calibration, calibration_count)


_EXPORTING = threading.Lock()


def _make(model: nn.Module, path: Path, size: tuple[int, int], precision: str, calibration: Optional[str],
          calibration_count: int) -> tuple[Path, float]:
    if path.is_file():  # made by another thread while this one waited
        return path, 0.0
    start = time.perf_counter()
    fp32 = path if precision == "fp32" else path.with_name(path.stem + ".fp32.onnx")
    if not fp32.is_file():
        export_onnx(model, fp32, size=size)
    if precision == "int8":
        from .quantize import quantize_onnx

        if calibration is None:
            raise HypersegError("int8 needs calibration images: give --calibration DIR (a folder of images)")
        quantize_onnx(fp32, path, calibration, count=calibration_count)
        fp32.unlink()
    return path, time.perf_counter() - start
