"""Inference helpers: test-time augmentation and sliding windows, all returning logits at input size."""
from __future__ import annotations

from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HypersegError
from .base import Runtime, input_scale, model_input_size, run_guarded, to_seen_size
from .labels import resized_labels

__all__ = ["predict_logits", "predict_labels", "check_test_time_options", "input_scale", "model_input_size",
           "limited_size"]

MAX_SCALE = 8.0


def check_test_time_options(scales: Sequence[float], window: Optional[Sequence[int]] = None, *,
                            min_window: int = 1) -> tuple[float, ...]:
    """The scales as a tuple, after refusing an empty list, non-positive or absurd scales, and windows
    smaller than ``min_window`` (HyperSeg's :data:`MIN_INPUT_SIZE` where a HyperSeg runs them)."""
    scales = tuple(scales) if isinstance(scales, (list, tuple)) else (scales,)
    if not scales:
        raise HypersegError("scales is empty; give at least one, e.g. (1.0,)")
    for s in scales:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= MAX_SCALE:
            raise HypersegError(f"scale {s!r} is out of range; expected numbers in (0, {MAX_SCALE:g}]")
    if window is not None:
        window = list(window)
        if len(window) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < min_window for v in window):
            raise HypersegError(f"window {window!r} is not valid; expected [height, width], each at least "
                                f"{min_window} px")
    return tuple(float(s) for s in scales)


def _sliding(model: nn.Module, x: Tensor, window: Sequence[int], stride: Sequence[int], num_classes: int) -> Tensor:
    """Average the logits of overlapping windows (for images larger than the model should see at once)."""
    b, _, h, w = x.shape
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = stride
    out = x.new_zeros(b, num_classes, h, w)
    count = x.new_zeros(1, 1, h, w)
    tops = list(range(0, max(h - wh, 0) + 1, sh))
    lefts = list(range(0, max(w - ww, 0) + 1, sw))
    if tops[-1] + wh < h:
        tops.append(h - wh)
    if lefts[-1] + ww < w:
        lefts.append(w - ww)
    for top in tops:
        for left in lefts:
            out[..., top : top + wh, left : left + ww] += model(x[..., top : top + wh, left : left + ww])
            count[..., top : top + wh, left : left + ww] += 1
    return out / count


def limited_size(size: Sequence[int], max_size: Optional[int]) -> tuple[int, int]:
    """The (H, W) an image of ``size`` is segmented at when its longer side may be at most
    ``max_size`` (``None``: no limit), as :class:`~hyperseg.infer.predictor.Predictor` does."""
    h, w = int(size[0]), int(size[1])
    if max_size is None or max(h, w) <= max_size:
        return h, w
    factor = max_size / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def predict_logits(model: nn.Module, x: Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,),
                   window: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
                   out_size: Optional[Sequence[int]] = None) -> Tensor:
    """Class scores (B, C, H, W) for a normalised batch: the logits of a single pass, or the mean
    softmax over scales and flips when several passes are combined (argmax is what callers use).

    The batch is first resized by the model's :func:`input_scale`; ``scales`` are relative to that
    size, and the logits come back at the batch's own size. A caller that already resized the
    batch to :func:`model_input_size` gives the size the logits should come back at as ``out_size``.
    ``window``/``stride`` (H, W) switch on sliding-window inference at every scale.

    Running out of memory raises :class:`~hyperseg.errors.ResourceError` naming the batch's size.
    """
    return run_guarded(lambda batch: _predict_logits(model, batch, flip=flip, scales=scales, window=window,
                                                     stride=stride, out_size=out_size), x)


def predict_labels(model: nn.Module, x: Tensor, *, flip: bool = False, scales: Sequence[float] = (1.0,),
                   window: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
                   out_size: Optional[Sequence[int]] = None) -> Tensor:
    """(B, H, W) labels: the argmax of :func:`predict_logits`, with the same arguments. A single pass
    never materialises the resized logits: a runtime computes its labels itself
    (:meth:`~hyperseg.runtime.Runtime.labels`), a module's go through
    :func:`~hyperseg.runtime.labels.resized_labels`."""
    if flip or tuple(scales) != (1.0,) or window is not None:
        return predict_logits(model, x, flip=flip, scales=scales, window=window, stride=stride,
                              out_size=out_size).max(1).indices  # max().indices: argmax's labels, faster on NCHW
    x, size = _to_seen_size(model, x, out_size)
    if isinstance(model, Runtime):
        return run_guarded(lambda batch: model.labels(batch, size), x)
    return run_guarded(lambda batch: resized_labels(model(batch), size), x)


def _to_seen_size(model: nn.Module, x: Tensor, out_size: Optional[Sequence[int]]) -> tuple[Tensor, tuple[int, int]]:
    """The batch at the size the model sees it, and the size its output comes back at."""
    if out_size is not None:
        return x, (int(out_size[0]), int(out_size[1]))  # the caller resized it already
    return to_seen_size(model, x), (int(x.shape[-2]), int(x.shape[-1]))


def _predict_logits(model: nn.Module, x: Tensor, *, flip: bool, scales: Sequence[float],
                    window: Optional[Sequence[int]], stride: Optional[Sequence[int]],
                    out_size: Optional[Sequence[int]]) -> Tensor:
    x, (h, w) = _to_seen_size(model, x, out_size)
    num_classes = model.num_classes if hasattr(model, "num_classes") else model.module.num_classes
    total: Optional[Tensor] = None
    runs = 0
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        inputs = [xs, xs.flip(-1)] if flip else [xs]
        for i, inp in enumerate(inputs):
            if window is not None:
                logits = _sliding(model, inp, window, stride or [max(1, v * 2 // 3) for v in window], num_classes)
            else:
                logits = model(inp)
            if i == 1:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            logits = logits.float().softmax(1) if len(scales) > 1 or flip else logits.float()
            total = logits if total is None else total + logits
            runs += 1
    assert total is not None
    return total / runs
