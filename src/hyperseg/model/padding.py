"""Any input size for a network that needs multiples of some size: pad, run, crop."""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

__all__ = ["run_padded"]


def run_padded(forward: Callable[[Tensor], Tensor], x: Tensor, multiple: tuple[int, int], *,
               always: bool = False) -> Tensor:
    """``forward`` on ``x`` padded on the right and bottom (edge replication) to the next multiple
    of ``multiple`` = (mh, mw), with its output cropped back to ``x``'s height and width.

    ``always`` pads even by zero rows: no branch on the size, so that an exporter tracing a
    symbolic size keeps the padding symbolic instead of fixing it to the example's."""
    h, w = x.shape[-2:]
    mh, mw = multiple
    pad_h, pad_w = -h % mh, -w % mw
    if always or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return forward(x)[..., :h, :w]
