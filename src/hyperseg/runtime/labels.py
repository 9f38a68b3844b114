"""Label maps from logits at another size: in PyTorch without resizing every class's logits, and
inside an ONNX runtime by extending its graph.

The labels of ``F.interpolate(logits, size, mode="bilinear", align_corners=False).max(1).indices``
are what every single-pass prediction returns. Most of that work is wasted: a bilinear sample is a
convex combination of its four source neighbours, so where all four neighbours' argmax is the same
class, that class wins the combination too (an inequality that holds for every neighbour holds for
any weighted sum of them, and float rounding of the same operations keeps it). Only the pixels whose
neighbours disagree, the class boundaries, need their class scores interpolated. Those are computed
with PyTorch's own bilinear formula, so the labels match the full resize up to float ties.

An ONNX runtime does better still with :func:`label_graph`: the crop, resize and argmax appended to
the model, so that the runtime hands back a small uint8 map instead of every class's float scores,
and no PyTorch kernels run between its own (on two cores, their threads and the runtime's took turns
badly). Its resize is ONNX's ``linear``/``half_pixel``, PyTorch's ``align_corners=False``: in fp32 the
labels matched PyTorch's on every pixel measured; in bf16 the resize itself runs in bf16, part of the
path whose accuracy ``--precision auto`` measures.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resized_labels", "label_graph", "LABELS_OUTPUT"]

LABELS_OUTPUT = "labels"


@lru_cache(maxsize=32)
def _taps(n_in: int, n_out: int) -> tuple[Tensor, Tensor, Tensor]:
    """For each of ``n_out`` output positions along one axis: the two source indices and the weight
    of the second, as PyTorch's bilinear resize with ``align_corners=False`` computes them."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    lo = src.long().clamp_(max=n_in - 1)
    hi = (lo + 1).clamp_(max=n_in - 1)
    return lo, hi, src - lo


BOUNDARY = 255  # a uint8 label no class takes here: marks the pixels whose neighbours disagree


def resized_labels(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) logits -> (B, H, W) labels of the logits bilinearly resized to ``size``: uint8
    when the classes fit below :data:`BOUNDARY`, int64 otherwise."""
    b, c, h, w = logits.shape
    H, W = size
    if (h, w) == (H, W) or c >= BOUNDARY:
        if (h, w) != (H, W):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits.max(1).indices  # max().indices: argmax's labels, much faster over NCHW's class dim
    coarse = logits.max(1).indices.to(torch.uint8)                         # (B, h, w)
    # the last row and column repeated: a tap clamped at the border reads them, as PyTorch's does
    edged = torch.cat([coarse, coarse[:, -1:]], 1)
    edged = torch.cat([edged, edged[:, :, -1:]], 2)                         # (B, h+1, w+1)
    corner = edged[:, :-1, :-1]
    agree = (corner == edged[:, :-1, 1:]) & (corner == edged[:, 1:, :-1]) & (corner == edged[:, 1:, 1:])
    marked = torch.where(agree, corner, torch.tensor(BOUNDARY, dtype=torch.uint8))  # (B, h, w)
    y0, y1, wy = _taps(h, H)
    x0, x1, wx = _taps(w, W)
    labels = marked.index_select(1, y0).index_select(2, x0)                # (B, H, W)
    todo = labels == BOUNDARY
    n, i, j = todo.nonzero(as_tuple=True)                                   # N boundary pixels, row-major
    if n.numel():
        scores = logits.transpose(0, 1).reshape(c, b * h * w)                # (C, B*h*w), a view when B is 1
        base = n * (h * w)
        rows0, rows1, cols0, cols1 = base + y0[i] * w, base + y1[i] * w, x0[j], x1[j]
        a, t = wy[i], wx[j]                                                  # (N,) weights of the far taps
        v00, v01 = scores.index_select(1, rows0 + cols0), scores.index_select(1, rows0 + cols1)  # (C, N)
        v10, v11 = scores.index_select(1, rows1 + cols0), scores.index_select(1, rows1 + cols1)
        mixed = (1 - a) * ((1 - t) * v00 + t * v01) + a * ((1 - t) * v10 + t * v11)  # PyTorch's formula
        labels.masked_scatter_(todo, mixed.max(0).indices.to(torch.uint8))
    return labels


def label_graph(path: Path, crop: Optional[tuple[int, int]], size: tuple[int, int], num_classes: int) -> bytes:
    """The ONNX file at ``path`` with its logits cropped to ``crop`` (H, W; ``None``: no padding to
    remove), resized bilinearly to ``size`` and reduced to labels: the serialised model. Its outputs
    are the labels (B, H, W), uint8 when the classes fit in it, the logits' shape, and their sum."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    logits = graph.output[0].name
    consts = {"label_head_axes": [2, 3], "label_head_start": [0, 0], "label_head_size": list(size)}
    nodes = []
    if crop is not None:
        consts["label_head_crop"] = list(crop)
        nodes.append(helper.make_node("Slice", [logits, "label_head_start", "label_head_crop", "label_head_axes"],
                                      ["label_head_cropped"]))
        logits = "label_head_cropped"
    # opset 18's Resize takes the sizes of the axes it names; linear + half_pixel is PyTorch's bilinear
    # with align_corners=False, and no antialias (PyTorch's default too)
    nodes.append(helper.make_node("Resize", [logits, "", "", "label_head_size"], ["label_head_resized"], mode="linear",
                                  coordinate_transformation_mode="half_pixel", axes=[2, 3]))
    # ArgMax keeps the first of equal maxima, as torch's max().indices
    nodes.append(helper.make_node("ArgMax", ["label_head_resized"], ["label_head_index"], axis=1, keepdims=0))
    small = num_classes < BOUNDARY
    nodes.append(helper.make_node("Cast", ["label_head_index"], [LABELS_OUTPUT],
                                  to=TensorProto.UINT8 if small else TensorProto.INT64))
    # what the caller checks the logits by without receiving them: their shape, and a sum that is
    # finite only when every logit is
    nodes.append(helper.make_node("Shape", [graph.output[0].name], ["label_head_logits_shape"]))
    nodes.append(helper.make_node("ReduceSum", [graph.output[0].name], ["label_head_logits_sum"], keepdims=0))
    graph.initializer.extend(helper.make_tensor(name, TensorProto.INT64, [len(v)], v) for name, v in consts.items())
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info(LABELS_OUTPUT, TensorProto.UINT8 if small else TensorProto.INT64, None),
        helper.make_tensor_value_info("label_head_logits_shape", TensorProto.INT64, [4]),
        helper.make_tensor_value_info("label_head_logits_sum", TensorProto.FLOAT, []),
    ])
    return model.SerializeToString()
