"""ONNX export with the metadata a runtime needs, through the dynamo exporter (``torch.export``).

The file's ``metadata_props`` hold JSON values under ``hyperseg.*`` keys: class names,
palette, mean/std, the input size it was exported for, the padding unit of the network, the
precision, and where the weights came from. :func:`read_onnx_meta` reads them back.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .. import __version__
from ..hub.checkpoint import atomic_write
from ..errors import HypersegError, require
from ..fuse import fuse_bn
from ..model import HyperSeg
from ..model.decoder.dpwconv import set_patch_kernels
from .base import scaled_size
from .torch_runtime import runtime_meta

__all__ = ["export_onnx", "read_onnx_meta", "write_onnx_meta", "ExportError", "DEFAULT_OPSET", "META_KEYS"]

DEFAULT_OPSET = 18
_PREFIX = "hyperseg."
META_KEYS = ("class_names", "palette", "mean", "std", "input_size", "num_classes", "size_multiple", "precision",
             "source", "val_miou", "unseen_miou", "unseen_split", "architecture", "hyperseg_version", "calibration",
             "input_scale")


class ExportError(HypersegError):
    """The model could not be converted to ONNX."""


def _failing_op(exc: BaseException) -> str:
    """The operation an exporter error is about (``prims.zeta``, ``aten::histc``), or the error's first line."""
    texts, seen = [], set()
    while exc is not None and id(exc) not in seen:  # the exporter nests the useful message in the chain
        seen.add(id(exc))
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    match = re.search(r"\b((?:aten|prims)(?:\.|::)[A-Za-z0-9_]+)", "\n".join(texts))
    if match:
        return f"the operation {match.group(1)} has no ONNX conversion"
    first = next((line.strip() for line in texts[-1].splitlines() if line.strip()), "unknown error")
    return re.sub(r"\x1b\[[0-9;]*m", "", first)[:300]


def write_onnx_meta(model_proto: Any, meta: dict[str, Any]) -> None:
    """Replace the ``hyperseg.*`` metadata_props of an in-memory ONNX model."""
    keep = [p for p in model_proto.metadata_props if not p.key.startswith(_PREFIX)]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(keep)
    for key in META_KEYS:
        if meta.get(key) is not None:
            prop = model_proto.metadata_props.add()
            prop.key, prop.value = _PREFIX + key, json.dumps(meta[key])


def read_onnx_proto(path: Union[str, Path]) -> Any:
    """The ONNX model in ``path`` (graph and metadata; external weight files are not read)."""
    onnx = require("onnx", "onnx", "reading ONNX files")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise HypersegError(f"{path}: cannot read it as an ONNX model ({type(exc).__name__})") from None


def read_onnx_meta(path: Union[str, Path], proto: Any = None) -> dict[str, Any]:
    """The ``hyperseg.*`` metadata of an ONNX file (empty if it has none); ``proto``: the file, if
    :func:`read_onnx_proto` has already read it."""
    path = Path(path)
    proto = read_onnx_proto(path) if proto is None else proto
    meta = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(_PREFIX):
            try:
                meta[prop.key[len(_PREFIX):]] = json.loads(prop.value)
            except json.JSONDecodeError:
                raise HypersegError(f"{path}: metadata {prop.key} is not valid JSON") from None
    inputs = proto.graph.input
    if inputs:
        dims = inputs[0].type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            meta.setdefault("input_size", [dims[2].dim_value, dims[3].dim_value])
    return meta


def atomic_save_onnx(proto: Any, path: Path) -> Path:
    """Check the model with ``onnx.checker`` and write it through a temporary file."""
    onnx = require("onnx", "onnx", "writing ONNX files")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"{path}: the exported model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return path


class _PaddedInput(nn.Module):
    """:meth:`HyperSeg.forward_padded` as a module: with symbolic sizes the caller does the padding."""

    def __init__(self, model: HyperSeg) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_padded(image)


def _for_symbolic_sizes(model: HyperSeg) -> nn.Module:
    """A fused copy of ``model`` that ``torch.export`` can trace with symbolic height and width.

    Two changes, both exact on padded inputs: the encoder's "same" padding becomes static (see
    :meth:`Backbone.freeze_padding`), and the patch-wise convolutions use their ``bmm``/``shifted`` kernels,
    because ONNX's Conv takes its group count as a constant and the patch count is not one.
    """
    net = fuse_bn(model)
    net.backbone.freeze_padding()
    set_patch_kernels(net, pointwise="bmm", depthwise="shifted")
    return _PaddedInput(net)


def _trace_size(meta: dict[str, Any], size: Optional[Sequence[int]], dynamic: bool) -> tuple[int, int]:
    """The (H, W) of the example input: the fixed size, or for ``dynamic`` a padded one to trace with.

    Without ``size`` it is the size the network sees an image of the model's ``input_size`` at: a
    model that sees images at ``input_scale`` is fed them resized by it (the runtimes resize before
    fitting an image to the file), so a file for the unscaled size would see them padded instead.
    """
    if size is None:
        size = meta.get("input_size")
        if size is None and not dynamic:
            raise ExportError("the model has no default input size; give one with --size HxW")
        if size is not None:
            size = scaled_size(size, float(meta.get("input_scale") or 1.0))
    if dynamic:
        mh, mw = meta["size_multiple"]
        h, w = size or (4 * mh, 4 * mw)
        # at least two patch rows and columns: a size of one block would be traced as a constant
        return max(h + -h % mh, 2 * mh), max(w + -w % mw, 2 * mw)
    size = (int(size[0]), int(size[1]))
    if min(size) < 32:
        raise ExportError(f"input size {size[0]}x{size[1]} is too small; expected at least 32x32")
    return size


def export_onnx(model: nn.Module, path: Union[str, Path], *, size: Optional[Sequence[int]] = None,
                dynamic: bool = False, opset: int = DEFAULT_OPSET, source: Optional[str] = None,
                quiet: bool = True) -> Path:
    """Write ``model`` (BatchNorm fused) as ONNX, with our metadata.

    Args:
        size: (H, W) of the network's input; default: the size the network sees an image of the
            model's ``input_size`` at (resized by its ``input_scale``, as the runtimes do).
        dynamic: instead of one size, accept a batch of any size whose height and width are
            multiples of the model's ``size_multiple`` (hyperseg's runtimes pad to them, as the
            PyTorch model does). The input is ``(batch, 3, m*height_blocks, m*width_blocks)``.
        opset: ONNX opset, at least 18.
    """
    require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")
    path = Path(path)
    if opset < 18:
        raise ExportError(f"opset {opset} is too old; the dynamo exporter needs opset 18 or newer")
    if dynamic and not isinstance(model, HyperSeg):
        raise ExportError(f"--dynamic export needs a HyperSeg model, got {type(model).__name__}")
    meta = runtime_meta(model)
    trace_size = _trace_size(meta, size, dynamic)
    dynamic_shapes = None
    if dynamic:
        net: nn.Module = _for_symbolic_sizes(model)
        mh, mw = meta["size_multiple"]
        blocks_h = torch.export.Dim("height_blocks", min=1, max=8192 // mh)
        blocks_w = torch.export.Dim("width_blocks", min=1, max=8192 // mw)
        dynamic_shapes = {"image": {0: torch.export.Dim("batch", min=1, max=1024), 2: mh * blocks_h,
                                    3: mw * blocks_w}}
    else:
        net = fuse_bn(model) if isinstance(model, HyperSeg) else model.eval()
    example = torch.zeros(1, 3, *trace_size)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(net, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
            program.optimize()
            proto = program.model_proto
    except HypersegError:
        raise
    except Exception as exc:
        raise ExportError(f"cannot export {meta.get('architecture', type(model).__name__)} to ONNX: {_failing_op(exc)}") from None
    meta.update(input_size=None if dynamic else list(trace_size), precision="fp32",
                source=source, hyperseg_version=__version__)
    write_onnx_meta(proto, meta)
    return atomic_save_onnx(proto, path)
