"""Several predictors timed side by side on one image, in one process, for scripts that compare models.

``hyperseg bench`` compares the runtimes of one model; comparing architectures (each in the same
runtime) or trained runs needs the same protocol over many models: every predictor warmed up first
(conversion, compilation, first allocations), then timed in interleaved rounds whose order
alternates, end to end (uint8 image -> label map) and, optionally, the model alone on the
normalised batch its predictor would feed it.
"""
from __future__ import annotations

from typing import Callable, Hashable, Mapping, TypeVar

import numpy as np
import torch

from ..infer.predictor import Predictor
from .harness import model_input, interleaved

__all__ = ["time_predictors"]

K = TypeVar("K", bound=Hashable)


def _timed(fns: list[Callable[[], object]], rounds: int, warmup: int, sync: Callable[[], None]) -> list[list[float]]:
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    return [[t * 1e3 for t in times] for times in interleaved(fns, rounds, sync)]


def time_predictors(predictors: Mapping[K, Predictor], image: np.ndarray, *, rounds: int, warmup: int = 3,
                    model_only: bool = True) -> dict[K, dict[str, list[float]]]:
    """Milliseconds per call of every predictor: ``end_to_end_ms`` and, with ``model_only``, ``model_ms``."""
    chosen = list(predictors.values())
    sync = torch.cuda.synchronize if any(p.device.type == "cuda" for p in chosen) else (lambda: None)
    kinds = {"end_to_end_ms": [lambda p=p: p(image) for p in chosen]}
    if model_only:
        inputs = [model_input(p, image) for p in chosen]
        kinds["model_ms"] = [lambda p=p, x=x: p.runtime(x) for p, x in zip(chosen, inputs)]
    result: dict[K, dict[str, list[float]]] = {key: {} for key in predictors}
    for kind, fns in kinds.items():
        for key, times in zip(predictors, _timed(fns, rounds, warmup, sync)):
            result[key][kind] = times
    return result
