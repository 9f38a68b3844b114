"""Static int8 quantisation of an exported ONNX model (onnxruntime: QDQ, per-channel weights).

Activation ranges are calibrated on real images, preprocessed exactly as at inference. The
result runs in onnxruntime and in OpenVINO, which both execute QDQ graphs with int8 kernels.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from ..data.io import IMAGE_EXTENSIONS, read_image
from ..data.transforms import normalize
from ..errors import HypersegError, ResourceError, require
from .base import fit_input, padded_size
from .cache import environment_cause
from .onnx_export import atomic_save_onnx, read_onnx_meta, write_onnx_meta

__all__ = ["quantize_onnx", "calibration_files"]

_log = logging.getLogger(__name__)


def calibration_files(source: Union[str, Path], count: int) -> list[Path]:
    """``count`` images spread evenly over a folder (searched recursively), in sorted order."""
    root = Path(source).expanduser()
    if not root.is_dir():
        raise HypersegError(f"--calibration {root}: not a folder; expected a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise HypersegError(f"--calibration {root}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if count < 1:
        raise HypersegError(f"--calibration-count {count}: expected at least 1 image")
    if len(files) <= count:
        return files
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in picks]


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over preprocessed images."""

    def __init__(self, files: Sequence[Path], input_name: str, size: Optional[tuple[int, int]],
                 multiple: tuple[int, int], mean, std) -> None:
        self.files, self.input_name, self.size, self.multiple = files, input_name, size, multiple
        self.mean, self.std = mean, std
        self._it: Optional[Iterator[Path]] = None

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._it is None:
            self._it = iter(self.files)
        path = next(self._it, None)
        if path is None:
            return None
        x = normalize(torch.from_numpy(read_image(path).copy()).permute(2, 0, 1), self.mean, self.std).unsqueeze(0)
        if self.size is None:
            # A file that takes any size is calibrated at the first image's padded size: onnxruntime's
            # histograms need one shape for all images, so the others are fitted to it.
            self.size = padded_size(tuple(x.shape[-2:]), self.multiple)
        x, _ = fit_input(x, self.size)
        return {self.input_name: x.numpy()}

    def rewind(self) -> None:
        self._it = None


@contextlib.contextmanager
def _temporary_folder() -> Iterator[Path]:
    """A folder for the calibration's intermediate models, deleted afterwards; the machine failing to
    write there (full, read-only) is a :class:`ResourceError` naming it."""
    try:
        with tempfile.TemporaryDirectory(prefix="hyperseg-quant-") as tmp:
            yield Path(tmp)
    except HypersegError:
        raise
    except Exception as exc:
        cause = environment_cause(exc, Path(tempfile.gettempdir()))
        if cause is None:
            raise
        raise ResourceError(f"int8 calibration cannot write its temporary files in {tempfile.gettempdir()} "
                            f"({cause.strerror or cause}); free space there or set TMPDIR to a writable folder") from None


def _nodes_in_scopes(proto, scopes: Sequence[str]) -> list[str]:
    """Names of the nodes that the exporter recorded as coming from one of the module ``scopes``."""
    names = []
    for node in proto.graph.node:
        recorded = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if recorded is not None and any(s.strip("'\" ") in scopes for s in recorded.strip("[]").split(",")):
            names.append(node.name)
    return names


# The patch-wise decoder and the weight mappers stay in float: the decoder's convolution weights
# are computed per image, so int8 would quantise them as activations, with one range for all
# patches; measured on CamVid val this cost more mIoU than the rest of the network together.
FLOAT_SCOPES = ("decoder", "weight_mapper")


def quantize_onnx(fp32_path: Union[str, Path], out_path: Union[str, Path], calibration: Union[str, Path], *,
                  count: int = 30, float_scopes: Sequence[str] = FLOAT_SCOPES, method: str = "percentile") -> Path:
    """Write an int8 QDQ copy of ``fp32_path`` calibrated on ``count`` images of the folder ``calibration``.

    Nodes exported from the modules in ``float_scopes`` are left in float32. Activation ranges are
    the 0.01/99.99 percentiles (``"percentile"``) or the extremes (``"minmax"``) seen in calibration;
    on CamVid val the percentiles lost 0.36 mIoU in onnxruntime where min/max lost 0.53.
    """
    onnx = require("onnx", "onnx", "int8 quantisation")
    quant = require("onnxruntime.quantization", "onnx", "int8 quantisation")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    meta = read_onnx_meta(fp32_path)
    if not meta.get("input_size") and not meta.get("size_multiple"):
        raise HypersegError(f"{fp32_path}: int8 calibration needs the input size or padding unit in the hyperseg "
                            "metadata; export the model with `hyperseg export`")
    methods = {"minmax": quant.CalibrationMethod.MinMax, "percentile": quant.CalibrationMethod.Percentile}
    if method not in methods:
        raise HypersegError(f"calibration method {method!r}: expected one of {', '.join(methods)}")
    files = calibration_files(calibration, count)
    size = (int(meta["input_size"][0]), int(meta["input_size"][1])) if meta.get("input_size") else None
    multiple = tuple(meta.get("size_multiple") or (32, 32))
    with _temporary_folder() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant.quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
        reader = _Reader(files, "image", size, multiple, meta["mean"], meta["std"])
        staged = Path(tmp) / "int8.onnx"
        # names survive pre-processing, the scope metadata does not: read it from the exported file
        exclude = _nodes_in_scopes(onnx.load(str(fp32_path), load_external_data=False), float_scopes)
        def calibrate(chosen: str) -> None:
            reader.rewind()
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its histogram settings
                quant.quantize_static(str(prepped), str(staged), reader, quant_format=quant.QuantFormat.QDQ,
                                      nodes_to_exclude=exclude, per_channel=True,
                                      activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                                      calibrate_method=methods[chosen], extra_options={"CalibPercentile": 99.99})

        try:
            calibrate(method)
        except ValueError as exc:
            # onnxruntime's percentile histograms cannot bin an activation that is constant over the
            # calibration images (a dead channel, an untrained model); min/max handles a zero range
            if method != "percentile" or "bins" not in str(exc):
                raise
            _log.warning("percentile calibration failed (%s); calibrating with min/max instead", exc)
            method = "minmax"
            calibrate(method)
        proto = onnx.load(str(staged))
    write_onnx_meta(proto, {**meta, "precision": "int8",
                            "calibration": {"folder": str(calibration), "images": len(files), "method": method}})
    return atomic_save_onnx(proto, out_path)

