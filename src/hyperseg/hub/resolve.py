"""Model sources -> a PyTorch HyperSeg: registered architecture, built-in weights, our checkpoint, authors' .pth."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from .checkpoint import CHECKPOINT_FORMAT, load_model
from ..errors import HypersegError
from ..model import create_model, list_models
from .official import from_official
from .weights import DEFAULT_MODEL, is_weights_name, list_weights

__all__ = ["resolve_model", "is_untrained_architecture", "untrained_message"]


def _is_our_checkpoint(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False  # not a readable torch file: load_model names the problem
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def is_untrained_architecture(source: Any) -> bool:
    """Whether ``source`` names a registered architecture rather than weights: building it gives a
    network with random weights (weights names win over architecture names, as in :func:`resolve_model`)."""
    return isinstance(source, (str, Path)) and not is_weights_name(str(source)) and str(source) in list_models()


def untrained_message(name: str) -> str:
    """The one sentence that refuses an architecture name where trained weights are needed."""
    return (f"{name} is a registered architecture without weights, so it would run with random weights; give "
            f"weights instead: a checkpoint file, an authors' .pth checkpoint or "
            f"built-in weights such as {DEFAULT_MODEL} (`hyperseg list` shows them)")


def resolve_model(source: Union[str, Path, nn.Module], *, allow_untrained: bool = False) -> nn.Module:
    """A model in eval mode from any PyTorch source; ``.onnx`` files go to :func:`load_runtime` instead.

    A registered architecture name builds a network with random weights, which is only useful to
    train from scratch or to time; it is refused unless ``allow_untrained`` is set, so that nothing
    segments, scores or teaches with random weights by mistake.
    """
    if isinstance(source, nn.Module):
        return source.eval()
    if source is None:
        raise HypersegError("no model given; expected a built-in weights name, a registered model or a file")
    text = str(source)
    if is_weights_name(text):
        return load_model(text)
    if text in list_models():
        if not allow_untrained:
            raise HypersegError(untrained_message(text))
        return create_model(text).eval()
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx":
        raise HypersegError(f"{path} is an ONNX file; run it with an ONNX runtime (onnxruntime or openvino), not torch")
    if not path.is_file():
        raise HypersegError(f"{text}: no such file, registered weights ({', '.join(list_weights()) or 'none'}) "
                            f"or registered model (see `hyperseg list`)")
    return load_model(path) if _is_our_checkpoint(path) else from_official(path)
