"""How a model is to be run: :class:`RuntimeOptions` (runtime, precision, shapes, device, calibration), checked once.

Every command and every Python entry point that loads a runtime builds one object, and what each
field accepts is written here and nowhere else: the command line takes its choices and defaults
from this module, and the layers below receive values that are already known to be valid.

Whether a runtime can run a precision *here* (bf16 needs a CPU or GPU that computes it natively, an
int8 file runs only at int8) depends on the machine and the model, not on the value, so the runtime
says so when it is built; what each runtime computes in at all is :data:`OFFERED`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

import torch

from ..errors import HypersegError, InputTypeError

__all__ = ["RuntimeOptions", "RUNTIMES", "RUNTIME_CHOICES", "PRECISIONS", "PRECISION_CHOICES", "STORED_PRECISIONS",
           "SHAPES", "DEVICES", "OFFERED", "as_options", "split_options", "check_offered"]

RUNTIMES = ("torch", "onnxruntime", "openvino")
RUNTIME_CHOICES = ("auto",) + RUNTIMES + ("eager",)  # eager: the unprepared PyTorch model, for reference
PRECISIONS = ("fp32", "bf16", "int8")
PRECISION_CHOICES = ("auto",) + PRECISIONS
# What an ONNX file can hold: bf16 is a way of computing, chosen when the file runs, never stored.
STORED_PRECISIONS = ("fp32", "int8")
SHAPES = ("static", "dynamic")  # how a PyTorch model is converted: per input size, or once for all
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N, one GPU by its index
_DEVICE = re.compile(r"auto|(cpu|cuda)(:\d+)?")

# What each runtime computes in, on a machine that supports it.
OFFERED = {"torch": ("fp32", "bf16"), "eager": ("fp32",), "onnxruntime": ("fp32", "int8"),
           "openvino": ("fp32", "bf16", "int8")}
# Where to go instead, for a runtime that does not offer a precision.
_INSTEAD = {"torch": "; int8 runs in onnxruntime or openvino (or export an int8 file with `hyperseg export "
                     "MODEL --precision int8 --calibration DIR`)",
            "eager": "; the eager reference is the unprepared model, use --runtime torch for bf16"}


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model is to be run; every field is checked when the object is made.

    Args:
        runtime: ``"auto"`` (the fastest installed), ``"torch"``, ``"onnxruntime"``, ``"openvino"``
            or ``"eager"`` (the unprepared PyTorch model, for reference).
        precision: ``"auto"`` (the fastest precision on this CPU whose accuracy stays within 0.3 mIoU
            of fp32 for these weights, see :mod:`~hyperseg.runtime.precision`; what an ONNX file
            holds), ``"fp32"`` (exact), ``"bf16"`` or ``"int8"``.
        shapes: for a PyTorch model in onnxruntime or OpenVINO, ``"static"`` (one conversion per
            input size, the fastest graphs) or ``"dynamic"`` (one for every size; see
            :class:`~hyperseg.runtime.onnx_runtimes.ConvertedRuntime`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a ``torch.device`` is taken as its name).
        calibration: folder of images for int8 conversion of a PyTorch model.
        calibration_count: how many of its images to calibrate on.
    """

    runtime: str = "auto"
    precision: str = "auto"
    shapes: str = "static"
    device: str = "auto"
    calibration: Optional[str] = None
    calibration_count: int = 30

    def __post_init__(self) -> None:
        for option, value, choices in (("--runtime", self.runtime, RUNTIME_CHOICES),
                                       ("--precision", self.precision, PRECISION_CHOICES),
                                       ("--shapes", self.shapes, SHAPES)):
            if not isinstance(value, str) or value not in choices:
                raise HypersegError(f"{option} {value!r}: expected one of {', '.join(choices)}")
        object.__setattr__(self, "device", _device_name(self.device))
        object.__setattr__(self, "calibration", _folder_name(self.calibration))
        count = self.calibration_count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise HypersegError(f"--calibration-count {count!r}: expected a whole number of images >= 1")


def _device_name(device: Any) -> str:
    name = str(device) if isinstance(device, torch.device) else device
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise HypersegError(f"--device {device!r}: expected one of {', '.join(DEVICES)}, cuda:N")
    return name


def _folder_name(folder: Union[None, str, "os.PathLike[str]"]) -> Optional[str]:
    if folder is None:
        return None
    name = os.fspath(folder) if isinstance(folder, (str, os.PathLike)) else None
    if not isinstance(name, str) or not name:
        raise HypersegError(f"--calibration {folder!r}: expected the path of a folder of images")
    return name


_FIELDS = tuple(f.name for f in fields(RuntimeOptions))


def as_options(options: Optional[RuntimeOptions] = None, **keywords: Any) -> RuntimeOptions:
    """``options``, or the :class:`RuntimeOptions` that the loose keywords (``runtime=``,
    ``precision=``, ... as :class:`~hyperseg.Predictor` and :func:`~hyperseg.runtime.load_runtime`
    take them) describe; a keyword that is ``None`` was not given. Both at once is refused, since one
    of them would be silently ignored."""
    unknown = sorted(set(keywords) - set(_FIELDS))
    if unknown:
        raise InputTypeError(f"{', '.join(unknown)}: not a runtime option; expected {', '.join(_FIELDS)}")
    given = {name: value for name, value in keywords.items() if value is not None}
    if options is None:
        return RuntimeOptions(**given)
    if not isinstance(options, RuntimeOptions):
        raise InputTypeError(f"options={options!r}: expected a RuntimeOptions")
    if given:
        names = ", ".join(f"{name}=" for name in given)
        raise HypersegError(f"options= and {names} given together; put {names} into the RuntimeOptions")
    return options


def split_options(options: Optional[RuntimeOptions], keywords: dict[str, Any]) -> tuple[RuntimeOptions, dict[str, Any]]:
    """:func:`as_options` of ``options`` and the runtime options among ``keywords``, and the other keywords."""
    loose = {name: value for name, value in keywords.items() if name in _FIELDS}
    return as_options(options, **loose), {name: value for name, value in keywords.items() if name not in _FIELDS}


def check_offered(runtime: str, precision: str) -> None:
    """Refuse a precision that ``runtime`` never computes in (see :data:`OFFERED`)."""
    offered = OFFERED[runtime]
    if precision not in offered:
        raise HypersegError(f"{runtime} does not offer precision {precision}; it offers {', '.join(offered)}"
                            + _INSTEAD.get(runtime, ""))
