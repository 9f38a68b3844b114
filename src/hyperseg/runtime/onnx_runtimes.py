"""ONNX models in onnxruntime and OpenVINO, and PyTorch models converted for them on first use."""
from __future__ import annotations

import ctypes
import functools
import gc
import logging
import sys
from collections import OrderedDict
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import HypersegError, require
from ..meta_schema import MAX_SIDE, check_model_meta
from ..model import HyperSeg
from .base import Runtime, fit_input, padded_size, restore_output
from .cache import cache_dir, cache_lock, cached_onnx, check_cache_settings, openvino_cache_dir, size_label
from .labels import label_graph
from .onnx_export import read_onnx_meta, read_onnx_proto
from .options import check_offered
from .torch_runtime import runtime_meta

__all__ = ["OnnxRuntimeRuntime", "OpenVinoRuntime", "ConvertedRuntime", "ONNX_RUNTIMES", "onnx_file_meta",
           "check_graph", "check_logits"]

_REQUIRED = ("class_names", "mean", "std")
# Compiled models kept in memory per runtime object (per serve worker), one per input size: a server
# fed many image sizes recompiles the rarely seen ones instead of growing without bound.
MAX_COMPILED_SIZES = 4
_log = logging.getLogger("hyperseg")


def onnx_file_meta(path: Path, overrides: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The file's metadata with ``overrides`` applied; refuses files that lack what preprocessing needs."""
    if not path.is_file():
        raise HypersegError(f"{path}: file not found")
    proto = read_onnx_proto(path)  # read once: the metadata and the graph's shapes
    meta = {**read_onnx_meta(path, proto), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    missing = [k for k in _REQUIRED if not meta.get(k)]
    if missing:
        raise HypersegError(f"{path} has no hyperseg metadata ({', '.join(missing)} missing); export it with "
                            "`hyperseg export`, or give --mean, --std and --classes")
    meta = check_model_meta(meta, str(path))
    meta.setdefault("num_classes", len(meta["class_names"]))
    meta.setdefault("precision", "fp32")
    check_graph(path, meta, proto.graph)
    return meta


def check_graph(path: Path, meta: dict[str, Any], graph: Any = None) -> None:
    """The graph takes one image batch (N, 3, H, W) and gives logits (N, num_classes, H', W') first, as
    far as its stored shapes tell; anything else would run and give wrong labels."""
    graph = read_onnx_proto(path).graph if graph is None else graph
    initialised = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise HypersegError(f"{path}: the graph takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                            f"hyperseg feeds one image batch (N, 3, H, W)")
    if not graph.output:
        raise HypersegError(f"{path}: the graph has no output")

    def dims(value_info) -> list[Optional[int]]:
        shape = value_info.type.tensor_type.shape
        return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim] if value_info.type.tensor_type.HasField(
            "shape") else []

    shape, out = dims(inputs[0]), dims(graph.output[0])
    if shape and (len(shape) != 4 or shape[1] not in (None, 3)):
        raise HypersegError(f"{path}: the input {inputs[0].name} has shape {shape}; expected (N, 3, H, W)")
    if any(side is not None and not 32 <= side <= MAX_SIDE for side in shape[2:]):
        raise HypersegError(f"{path}: the input size {shape[2:]} is outside 32..{MAX_SIDE} pixels a side")
    if out and (len(out) != 4 or out[1] not in (None, meta["num_classes"])):
        raise HypersegError(f"{path}: the first output has shape {out}; expected logits (N, {meta['num_classes']}, "
                            f"H, W) for its {meta['num_classes']} classes")


def check_logits(logits: np.ndarray, batch: int, num_classes: int, path: Path) -> np.ndarray:
    """Refuse an output that is not finite (N, num_classes, H, W) logits for the batch that went in."""
    check_logits_summary(tuple(logits.shape), bool(np.isfinite(logits).all()), batch, num_classes, path)
    return logits


def check_logits_summary(shape: tuple[int, ...], finite: bool, batch: int, num_classes: int, path: Path) -> None:
    """:func:`check_logits` from the logits' shape and whether they are all finite."""
    if len(shape) != 4 or shape[0] != batch or shape[1] != num_classes:
        raise HypersegError(f"{path}: the model returned shape {shape}; expected logits ({batch}, {num_classes}, H, W)")
    if not finite:
        raise HypersegError(f"{path}: the model returned NaN or infinite logits")


def _check_precision(path: Path, stored: str, requested: Optional[str], runtime: str) -> str:
    """The precision a file that holds ``stored`` runs at in ``runtime`` when ``requested`` (None: as stored)."""
    precision = requested or stored
    if stored == "int8" and precision != "int8":
        raise HypersegError(f"{path} is an int8 model; it runs only at --precision int8")
    if stored == "fp32" and precision == "int8":
        raise HypersegError(f"{path} is a float32 model; make an int8 one with "
                            "`hyperseg export MODEL --precision int8 --calibration DIR`")
    check_offered(runtime, precision)
    return precision


class _OnnxFileRuntime(Runtime):
    """Shared by the ONNX runtimes: what they offer, fitting inputs to the file's size, numpy in and out."""

    module: str  # the runtime's Python module, and the extra that installs it
    extra: str

    @classmethod
    def import_module(cls) -> Any:
        """The runtime's module; a missing one is an error naming the extra that installs it."""
        return require(cls.module, cls.extra, f"the {cls.name} runtime")

    @classmethod
    def check_offers(cls, precision: str) -> None:
        """Refuse, before any file exists, a precision this runtime cannot run on this machine."""
        cls.import_module()
        check_offered(cls.name, precision)

    def __init__(self, path: Union[str, Path], meta: dict[str, Any], precision: str) -> None:
        super().__init__(meta, precision)
        self.path = Path(path)
        size = meta.get("input_size")
        self.input_size = (int(size[0]), int(size[1])) if size else None
        self.size_multiple = tuple(meta.get("size_multiple") or (32, 32))
        self.label_graphs: "OrderedDict[Any, Any]" = OrderedDict()  # least recently used first

    def _fit(self, x: Tensor) -> tuple[np.ndarray, str]:
        """``x`` as the file takes it, float32 at its size, and how it was fitted (see :func:`fit_input`)."""
        target = self.input_size or padded_size(tuple(x.shape[-2:]), self.size_multiple)
        fitted, how = fit_input(x.cpu().float(), target)
        return np.ascontiguousarray(fitted.numpy(), dtype=np.float32), how

    def infer(self, x: Tensor) -> Tensor:
        fitted, how = self._fit(x)
        out = self.run(fitted)
        logits = torch.from_numpy(check_logits(np.asarray(out), fitted.shape[0], self.num_classes, self.path))
        return restore_output(logits, tuple(x.shape[-2:]), how)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The bare model: (1, 3, h, w) float32 at the accepted size -> logits."""
        raise NotImplementedError

    def labels(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Labels computed by the runtime itself, the model's graph extended by
        :func:`~hyperseg.runtime.labels.label_graph`, one compiled graph per input and output size."""
        batch, how = self._fit(x)
        if how == "resize":  # a fixed-size file smaller than the image: its logits are resized back first
            return super().labels(x, size)
        crop = (int(x.shape[-2]), int(x.shape[-1])) if how == "pad" else None
        out = [self.run_labels(batch[i : i + 1], crop, (int(size[0]), int(size[1]))) for i in range(len(batch))]
        return torch.from_numpy(np.concatenate(out))

    def run_labels(self, x: np.ndarray, crop: Optional[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
        """(1, 3, h, w) float32 at the accepted size -> (1, H, W) labels; see :meth:`labels`."""
        compiled = _cached(self.label_graphs, (tuple(x.shape), crop, size),
                           lambda: self.compile_labels(label_graph(self.path, crop, size, self.num_classes), x.shape))
        labels, shape, total = self.run_label_graph(compiled, x)
        check_logits_summary(tuple(int(v) for v in shape), bool(np.isfinite(total)), x.shape[0], self.num_classes,
                             self.path)
        return labels

    def compile_labels(self, graph: bytes, shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def run_label_graph(self, compiled: Any, x: np.ndarray) -> list[np.ndarray]:
        """The compiled label graph's outputs for ``x``: labels, the logits' shape, their sum."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} {self.precision} ({self.path.name})"


class OnnxRuntimeRuntime(_OnnxFileRuntime):
    name = "onnxruntime"
    module, extra = "onnxruntime", "onnx"

    def __init__(self, path: Union[str, Path], *, precision: Optional[str] = None,
                 meta: Optional[dict[str, Any]] = None, device: Any = "auto") -> None:
        ort = self.import_module()
        path = Path(path)
        info = onnx_file_meta(path, meta)
        super().__init__(path, info, _check_precision(path, info["precision"], precision, self.name))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # fatal only: a file that fails to load or run is reported once, in our one sentence below,
        # not also in onnxruntime's own coloured log line ("Exception during initialization: ...")
        options.log_severity_level = 4
        # Idle workers sleep instead of spinning: spinning steals the cores from whatever runs next
        # (decoding, drawing, another model) for a latency gain we could not measure at batch 1.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # as many threads as torch was given (OMP_NUM_THREADS, torchrun's 1 per process, serve's
        # cores / workers), not one per core in every process
        options.intra_op_num_threads = torch.get_num_threads()
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise HypersegError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0][:200]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.session_args = (options, providers)

    def compile_labels(self, graph: bytes, shape: tuple[int, ...]) -> Any:
        options, providers = self.session_args
        return self.import_module().InferenceSession(graph, options, providers=providers)

    def run_label_graph(self, compiled: Any, x: np.ndarray) -> list[np.ndarray]:
        return compiled.run(None, {self.input_name: x})

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


def openvino_core() -> Any:
    """The process's one OpenVINO Core, kept until exit.

    Each Core's CPU plugin gives the calling thread an alternate signal stack and, when the Core goes,
    unmaps it and restores the stack that was there before. Two Cores freed in the order they were made
    leave the thread pointing at unmapped memory, and its next signal (Ctrl-C) kills the process with
    SIGSEGV. One Core that never goes cannot do that."""
    return _shared_core(OpenVinoRuntime.import_module())  # the import first: a missing extra names itself


@functools.cache
def _shared_core(ov: Any) -> Any:
    return ov.Core()


def require_openvino_bf16(core: Any) -> None:
    """Refuse bf16 where OpenVINO's CPU plugin has no native bfloat16 (it would not run bf16 there)."""
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise HypersegError("precision bf16 needs a CPU with native bfloat16 (AVX-512 bf16 or AMX); use fp32")


class OpenVinoRuntime(_OnnxFileRuntime):
    """OpenVINO on the CPU; the precision is always set explicitly (its own default on bf16 CPUs is bf16)."""

    name = "openvino"
    module, extra = "openvino", "openvino"
    _HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: QDQ ops run in int8, the rest in f32

    @classmethod
    def check_offers(cls, precision: str) -> None:
        super().check_offers(precision)
        if precision == "bf16":
            require_openvino_bf16(openvino_core())

    def __init__(self, path: Union[str, Path], *, precision: Optional[str] = None,
                 meta: Optional[dict[str, Any]] = None, device: Any = "auto") -> None:
        path = Path(path)
        info = onnx_file_meta(path, meta)
        super().__init__(path, info, _check_precision(path, info["precision"], precision, self.name))
        core = openvino_core()
        if self.precision == "bf16":
            require_openvino_bf16(core)
        self.core = core
        self.config: dict[str, Any] = {  # threads: what torch was given, as onnxruntime
            "INFERENCE_PRECISION_HINT": self._HINTS[self.precision], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()}
        try:
            self.graph = core.read_model(str(path))
        except Exception as exc:
            raise HypersegError(f"{path}: OpenVINO cannot read it: {str(exc).splitlines()[0][:200]}") from None
        # A file that takes any size is compiled once per input shape: OpenVINO's kernels for a
        # known shape ran 1.9x (f32) to 2.1x (bf16) faster than its dynamic-shape ones here.
        self.dynamic = self.graph.input(0).get_partial_shape().is_dynamic
        # Compiled on first use, logits and label graphs alike: a Predictor only ever runs the latter.
        self.requests: "OrderedDict[tuple[int, ...], Any]" = OrderedDict()  # least recently used first
        if not self.dynamic:
            # OpenVINO's own cache of the compiled blob: one entry per static graph, pruned with
            # ours. A dynamic file would add a blob per size it meets, and compiles in ~1 s anyway.
            blobs = openvino_cache_dir()
            if blobs is not None:  # None: a folder of that name that is not ours; compile without
                self.config["CACHE_DIR"] = str(blobs)  # this model's compiles only: the Core is shared

    def _compile(self, graph: Any) -> Any:
        try:
            return self.core.compile_model(graph, "CPU", self.config).create_infer_request()
        except Exception as exc:
            raise HypersegError(f"{self.path}: OpenVINO cannot compile it: {str(exc).splitlines()[0][:200]}") from None

    def _shaped(self, shape: tuple[int, ...], graph: Any = None) -> Any:
        """``graph`` (default: the file's) with its input fixed to ``shape`` when the file takes any."""
        graph = self.graph.clone() if graph is None else graph
        if self.dynamic:
            graph.reshape({graph.input(0).get_any_name(): list(shape)})
        return graph

    def compile_labels(self, graph: bytes, shape: tuple[int, ...]) -> Any:
        return self._compile(self._shaped(shape, self.core.read_model(graph)))

    def run_label_graph(self, compiled: Any, x: np.ndarray) -> list[np.ndarray]:
        compiled.infer({0: x})
        return [compiled.get_output_tensor(i).data.copy() for i in range(3)]

    def run(self, x: np.ndarray) -> np.ndarray:
        request = _cached(self.requests, tuple(x.shape) if self.dynamic else (), lambda: self._compile(self._shaped(x.shape)))
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()


ONNX_RUNTIMES = {"onnxruntime": OnnxRuntimeRuntime, "openvino": OpenVinoRuntime}


def _cached(compiled: OrderedDict, key: Any, build: Callable[[], Any]) -> Any:
    """``compiled[key]``, built on first use, as the most recently used entry; at most
    :data:`MAX_COMPILED_SIZES` entries stay (see :func:`_keep_newest`)."""
    if key in compiled:
        compiled.move_to_end(key)
        return compiled[key]
    compiled[key] = made = build()
    _keep_newest(compiled)  # memory does not grow with every new shape
    return made


def _keep_newest(compiled: OrderedDict) -> None:
    """Drop the least recently used compiled models beyond :data:`MAX_COMPILED_SIZES`, and give their
    memory back to the system: glibc keeps freed blocks in its arenas (one per thread that
    allocated), so a server whose workers compile and evict in turn would hold memory nothing uses."""
    if len(compiled) <= MAX_COMPILED_SIZES:
        return
    while len(compiled) > MAX_COMPILED_SIZES:
        compiled.popitem(last=False)
    gc.collect()
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class ConvertedRuntime(Runtime):
    """A PyTorch model run in an ONNX runtime, converted on first use and cached on disk.

    ``shapes="static"`` converts once per padded input size: the fastest graphs, but a new size
    costs a conversion (seconds to tens of seconds) and a file. ``"dynamic"`` converts once for
    every size; OpenVINO reshapes that graph to each size it meets (about a second) and onnxruntime
    runs it as is. On CamVid-sized inputs its graphs took 1.15x (OpenVINO) to 1.35x (onnxruntime)
    the static time (``benchmarks/dynamic_shapes.py``), but neither memory nor disk grows with the
    number of sizes, which is what ``serve`` needs.
    Only HyperSeg models export with symbolic sizes; other models are converted per size.
    """

    def __init__(self, model: nn.Module, runtime: str, *, precision: str = "fp32",
                 calibration: Optional[str] = None, calibration_count: int = 30, shapes: str = "static") -> None:
        super().__init__(runtime_meta(model), precision)
        self.name = runtime
        self.engine_cls = ONNX_RUNTIMES[runtime]
        require("onnx", "onnx", "converting a model for onnxruntime or OpenVINO")
        require("onnxscript", "onnx", "converting a model for onnxruntime or OpenVINO")
        self.engine_cls.check_offers(precision)  # before minutes of conversion, not after
        check_cache_settings()  # likewise a cache that cannot take the converted file
        if precision == "int8" and calibration is None:
            raise HypersegError("precision int8 needs calibration images: give --calibration DIR (a folder of images)")
        if shapes == "dynamic" and not isinstance(model, HyperSeg):
            _log.info("%s exports at fixed sizes only: converting it once per input size", type(model).__name__)
            shapes = "static"
        self.model, self.shapes = model, shapes
        self.calibration, self.calibration_count = calibration, calibration_count
        self.size_multiple = tuple(self.meta.get("size_multiple") or (32, 32))
        self.engines: "OrderedDict[Optional[tuple[int, int]], _OnnxFileRuntime]" = OrderedDict()  # LRU first

    def engine(self, size: tuple[int, int]) -> _OnnxFileRuntime:
        """The compiled model for inputs of ``size`` (converted and cached on first use). At most
        :data:`MAX_COMPILED_SIZES` stay in memory, the least recently used going first."""
        target = padded_size(size, self.size_multiple) if self.shapes == "static" else None  # None: any size
        return _cached(self.engines, target, lambda: self._convert(target))

    def _convert(self, target: Optional[tuple[int, int]]) -> _OnnxFileRuntime:
        with cache_lock():  # no other thread prunes the file between finding and reading it
            path, seconds = cached_onnx(self.model, target, "int8" if self.precision == "int8" else "fp32",
                                        calibration=self.calibration, calibration_count=self.calibration_count)
            engine = self.engine_cls(path, precision=self.precision)
        self.conversion_seconds += seconds
        if seconds:
            _log.info("converted the model for %s at %s (%s) in %.1f s, cached as %s",
                      self.name, size_label(target), self.precision, seconds, path)
        return engine

    def infer(self, x: Tensor) -> Tensor:
        return self.engine(tuple(x.shape[-2:])).infer(x)

    def labels(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.engine(tuple(x.shape[-2:])).labels(x, size)

    def describe(self) -> str:
        shapes = "one file per input size" if self.shapes == "static" else "one file for every size"
        return f"{self.name} {self.precision} (converted from PyTorch, {shapes}, cached in {cache_dir()})"
