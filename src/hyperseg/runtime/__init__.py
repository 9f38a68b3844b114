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
from .base import Runtime
from .options import OFFERED, PRECISIONS, RUNTIMES, SHAPES, RuntimeOptions, as_options
from .precision import PrecisionChoice, choose_precision, cpu_kind
from .onnx_export import ExportError, export_onnx, read_onnx_meta
from .onnx_runtimes import ONNX_RUNTIMES, ConvertedRuntime
from .quantize import quantize_onnx
from ..hub.resolve import resolve_model
from .torch_runtime import EagerRuntime, TorchRuntime, bf16_supported, prepare_for_inference, resolve_device

__all__ = ["load_runtime", "Runtime", "RuntimeOptions", "RUNTIMES", "PRECISIONS", "SHAPES", "export_onnx",
           "quantize_onnx", "read_onnx_meta", "ExportError", "resolve_model", "prepare_for_inference", "resolve_device",
           "bf16_supported", "installed_runtimes", "TorchRuntime", "EagerRuntime", "PrecisionChoice", "cpu_kind",
           "SAMPLE_IMAGES"]

# The CamVid samples shipped in the package: int8 calibration of the built-in weights (their records'
# int8 accuracy was measured with exactly these) and the label-agreement check of --precision auto.
SAMPLE_IMAGES = Path(__file__).resolve().parents[1] / "assets"


def installed_runtimes(*, for_onnx_file: bool = False) -> list[str]:
    """The runtimes usable here, fastest first (docs/results.md, "End to end: runtimes and precisions").

    A PyTorch model reaches onnxruntime or OpenVINO only through the exporter (onnxscript); an
    ``.onnx`` file (``for_onnx_file``) needs only the runtime itself.
    """
    found = [name for name, module in (("openvino", "openvino"), ("onnxruntime", "onnxruntime"))
             if importlib.util.find_spec(module) is not None]
    if found and not for_onnx_file and importlib.util.find_spec("onnxscript") is None:
        found = []
    return found + ["torch"]


def _auto_runtime(is_onnx: bool, precision: Optional[str], device: Any) -> str:
    """The fastest installed runtime for the request."""
    candidates = [r for r in installed_runtimes(for_onnx_file=is_onnx) if not (is_onnx and r == "torch")]
    if precision is not None:
        candidates = [r for r in candidates if precision in OFFERED[r]]
    if not is_onnx and str(device).startswith("cuda"):
        candidates = ["torch"]  # the ONNX runtimes here are CPU builds
    if not candidates:
        need = "an ONNX runtime" if is_onnx else f"precision {precision}"
        raise HypersegError(f"{need} needs onnxruntime or OpenVINO: pip install 'hyperseg[openvino]'")
    return candidates[0]


def load_runtime(source: Union[str, Path, nn.Module, Runtime], *, options: Optional[RuntimeOptions] = None,
                 meta: Optional[dict[str, Any]] = None, runtime: Optional[str] = None, precision: Optional[str] = None,
                 device: Any = None, calibration: Optional[str] = None, calibration_count: Optional[int] = None,
                 shapes: Optional[str] = None) -> Runtime:
    """Any model source, ready to infer.

    Args:
        source: built-in or registered weights name, our checkpoint, authors' ``.pth``,
            an ``.onnx`` file, an ``nn.Module`` or a :class:`Runtime` (returned as is).
        options: how to run it, a :class:`~hyperseg.runtime.options.RuntimeOptions`; or give its
            fields as keywords instead, not both.
        meta: class names / mean / std for ONNX files without our metadata.
        runtime: ``"auto"`` (the default: the fastest installed), ``"torch"``, ``"onnxruntime"``,
            ``"openvino"`` or ``"eager"`` (the unprepared PyTorch model, for reference).
        precision: ``"auto"`` (the default: the fastest precision on this CPU whose accuracy stays
            within 0.3 mIoU of fp32 for these weights, see :mod:`~hyperseg.runtime.precision`;
            what an ONNX file holds), ``"fp32"`` (exact), ``"bf16"`` or ``"int8"``. ``None`` is ``"auto"``.
        device: ``"auto"`` (the default), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        calibration: folder of images for int8 conversion of a PyTorch model.
        calibration_count: how many of its images to calibrate on (default 30).
        shapes: for a PyTorch model in onnxruntime or OpenVINO, ``"static"`` (the default: one
            conversion per input size, the fastest graphs) or ``"dynamic"`` (one for every size; see
            :class:`~hyperseg.runtime.onnx_runtimes.ConvertedRuntime`).
    """
    options = as_options(options, runtime=runtime, precision=precision, device=device, calibration=calibration,
                         calibration_count=calibration_count, shapes=shapes)
    if isinstance(source, Runtime):
        return source
    is_onnx = isinstance(source, (str, Path)) and str(source).lower().endswith(".onnx")
    runtime = options.runtime
    if runtime == "auto":
        runtime = _auto_runtime(is_onnx, None if options.precision == "auto" else options.precision, options.device)
    if is_onnx:
        return _onnx_file(Path(source).expanduser(), runtime, options, meta)
    model = resolve_model(source)
    precision, choice = options.precision, None
    if precision == "auto" and runtime == "eager":
        precision = "fp32"  # the unprepared reference: fp32 only, nothing to choose
    if precision == "auto":
        choice = _choose(model, runtime, options)
        precision = choice.precision
    made = _build(model, runtime, precision, options)
    made.precision_choice = choice
    if options.runtime == "auto" and runtime == "torch" and made.device.type == "cpu":
        made.advice = _openvino_advice(getattr(model, "meta", {}) or {})
    return made


def _onnx_file(path: Path, runtime: str, options: RuntimeOptions, meta: Optional[dict[str, Any]]) -> Runtime:
    """An ``.onnx`` file in ``runtime``, at the precision asked for or, for ``auto``, the one it holds."""
    if runtime not in ONNX_RUNTIMES:
        raise HypersegError(f"{path} is an ONNX file; it runs in onnxruntime or openvino, not {runtime}")
    auto = options.precision == "auto"
    made = ONNX_RUNTIMES[runtime](path, precision=None if auto else options.precision, meta=meta,
                                  device=options.device)
    if auto:
        made.precision_choice = PrecisionChoice(made.precision, "an ONNX file runs at the precision it holds")
    return made


def _openvino_advice(meta: dict[str, Any]) -> Optional[str]:
    """How much faster OpenVINO would run these weights here, when it is not installed (from the
    record's latencies for this CPU kind where it has them)."""
    if importlib.util.find_spec("openvino") is not None:
        return None
    table = (meta.get("latency_ms") or {}).get(cpu_kind()) or {}
    default = choose_precision(meta, "openvino", has_calibration=True).precision
    ours = min((ms for key, ms in table.items() if key.startswith("torch ")), default=None)
    theirs = table.get(f"openvino {default}")
    faster = f"{ours / theirs:.1f}x faster on this kind of CPU" if ours and theirs else "faster"
    return f"OpenVINO would run it {faster}: pip install 'hyperseg[openvino]'"


def _build(model: nn.Module, runtime: str, precision: str, options: RuntimeOptions) -> Runtime:
    """``model`` in ``runtime`` at ``precision`` (both settled, never ``auto``), the rest as ``options`` say."""
    if runtime == "eager":
        return EagerRuntime(model, device=options.device, precision=precision)
    if runtime == "torch":
        return TorchRuntime(model, device=options.device, precision=precision)
    return ConvertedRuntime(model, runtime, precision=precision, calibration=_calibration(options, precision),
                            calibration_count=options.calibration_count, shapes=options.shapes)


def _calibration(options: RuntimeOptions, precision: str) -> Optional[str]:
    """The images an int8 conversion calibrates on: those given, or the bundled samples where ``auto``
    took int8 without a folder (it does so only for weights whose record measured int8 on them)."""
    if precision == "int8" and options.calibration is None and options.precision == "auto":
        return str(SAMPLE_IMAGES)
    return options.calibration


def _choose(model: nn.Module, runtime: str, options: RuntimeOptions) -> PrecisionChoice:
    """``auto``'s precision for ``model`` in ``runtime``: from its record's evidence, or, for weights
    without one, from their labels' agreement with fp32 on the sample images (measured once, cached)."""
    meta = getattr(model, "meta", {}) or {}
    builtin = bool(meta.get("weights")) and meta.get("precision_miou") is not None

    def agreement(precision: str) -> float:
        from .cache import cache_dir, weights_digest
        from .precision import cached_agreement, label_agreement

        key = {"weights": weights_digest(model), "runtime": runtime, "precision": precision, "cpu": cpu_kind(),
               "versions": _versions()}
        return cached_agreement(cache_dir() / "hyperseg-precision", key, lambda: label_agreement(
            _build(model, runtime, "fp32", options), _build(model, runtime, precision, options), SAMPLE_IMAGES))

    device_type = resolve_device(options.device).type
    # int8 needs images to calibrate on, and onnxruntime's quantiser to make the file
    can_quantise = (builtin or options.calibration is not None) and importlib.util.find_spec("onnxruntime") is not None
    return choose_precision(meta, runtime, device_type=device_type, has_calibration=can_quantise,
                            agreement=agreement)


def _versions() -> dict[str, str]:
    import importlib.metadata

    found = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found
