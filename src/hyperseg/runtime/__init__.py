"""Running a model fast: the prepared PyTorch path, ONNX export, int8, and onnxruntime/OpenVINO behind one interface.

:func:`load_runtime` turns any model source into a :class:`Runtime`, a callable from a
normalised batch to logits, like the model itself.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from ..errors import HypersegError
from .base import PRECISIONS, RUNTIMES, SHAPES, Runtime
from .onnx_export import ExportError, export_onnx, read_onnx_meta
from .onnx_runtimes import ONNX_RUNTIMES, ConvertedRuntime
from .quantize import quantize_onnx
from .resolve import resolve_model
from .torch_runtime import EagerRuntime, TorchRuntime, bf16_supported, prepare_for_inference, resolve_device

__all__ = ["load_runtime", "Runtime", "RUNTIMES", "PRECISIONS", "SHAPES", "export_onnx", "quantize_onnx", "read_onnx_meta",
           "ExportError", "resolve_model", "prepare_for_inference", "resolve_device", "bf16_supported",
           "installed_runtimes", "TorchRuntime", "EagerRuntime"]


def installed_runtimes() -> list[str]:
    """The runtimes usable here, fastest first (as measured on the development CPU, README "Speed")."""
    found = [name for name, module in (("openvino", "openvino"), ("onnxruntime", "onnxruntime"))
             if importlib.util.find_spec(module) is not None]
    if found and importlib.util.find_spec("onnxscript") is None:
        found = []  # cannot convert PyTorch models without the exporter
    return found + ["torch"]


def _auto_runtime(is_onnx: bool, precision: Optional[str], device: Any) -> str:
    """The fastest installed runtime for the request."""
    candidates = [r for r in installed_runtimes() if not (is_onnx and r == "torch")]
    if precision == "bf16":
        candidates = [r for r in candidates if r != "onnxruntime"]
    if precision == "int8":
        candidates = [r for r in candidates if r != "torch"]
    if not is_onnx and str(device).startswith("cuda"):
        candidates = ["torch"]  # the ONNX runtimes here are CPU builds
    if not candidates:
        need = "an ONNX runtime" if is_onnx else f"precision {precision}"
        raise HypersegError(f"{need} needs onnxruntime or OpenVINO: pip install 'hyperseg[openvino]'")
    return candidates[0]


def load_runtime(source: Union[str, Path, nn.Module, Runtime], *, runtime: str = "auto",
                 precision: Optional[str] = None, device: Any = "auto", calibration: Optional[str] = None,
                 calibration_count: int = 30, meta: Optional[dict[str, Any]] = None, shapes: str = "static") -> Runtime:
    """Any model source, ready to infer.

    Args:
        source: built-in or registered weights name, our checkpoint, authors' ``.pth``,
            an ``.onnx`` file, an ``nn.Module`` or a :class:`Runtime` (returned as is).
        runtime: ``"auto"`` (the fastest installed), ``"torch"``, ``"onnxruntime"``, ``"openvino"``
            or ``"eager"`` (the unprepared PyTorch model, for reference).
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``; default: fp32, or what an ONNX file holds.
        calibration: folder of images for int8 conversion of a PyTorch model.
        meta: class names / mean / std for ONNX files without our metadata.
        shapes: for a PyTorch model in onnxruntime or OpenVINO, ``"static"`` (one conversion per
            input size, the fastest graphs) or ``"dynamic"`` (one for every size; see
            :class:`~hyperseg.runtime.onnx_runtimes.ConvertedRuntime`).
    """
    if isinstance(source, Runtime):
        return source
    if runtime not in ("auto", "eager") + RUNTIMES:
        raise HypersegError(f"--runtime {runtime!r}: expected auto, {', '.join(RUNTIMES)} or eager")
    if precision is not None and precision not in PRECISIONS:
        raise HypersegError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if shapes not in SHAPES:
        raise HypersegError(f"--shapes {shapes!r}: expected one of {', '.join(SHAPES)}")
    is_onnx = isinstance(source, (str, Path)) and str(source).lower().endswith(".onnx")
    if runtime == "auto":
        runtime = _auto_runtime(is_onnx, precision, device)
    if is_onnx:
        if runtime not in ONNX_RUNTIMES:
            raise HypersegError(f"{source} is an ONNX file; it runs in onnxruntime or openvino, not {runtime}")
        return ONNX_RUNTIMES[runtime](Path(source).expanduser(), precision=precision, meta=meta, device=device)
    model = resolve_model(source)
    precision = precision or "fp32"
    if runtime == "eager":
        return EagerRuntime(model, device=device, precision=precision)
    if runtime == "torch":
        return TorchRuntime(model, device=device, precision=precision)
    return ConvertedRuntime(model, runtime, precision=precision, calibration=calibration,
                            calibration_count=calibration_count, shapes=shapes)
