"""Optional plots (matplotlib, behind the ``viz`` extra)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..hub.checkpoint import atomic_write

__all__ = ["save_confusion_image"]


def save_confusion_image(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Union[str, Path]) -> Path:
    """A row-normalised confusion matrix as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("saving the confusion matrix image needs matplotlib: pip install 'hyperseg[viz]'") from None
    m = np.asarray(matrix, dtype=np.float64)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.5 * n + 3, 0.5 * n + 2.5))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    try:
        return atomic_write(Path(path), lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)
