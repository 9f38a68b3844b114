"""Model sources -> a PyTorch HyperSeg: registered architecture, built-in weights, our checkpoint, authors' .pth."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..checkpoint import CHECKPOINT_FORMAT, load_model
from ..errors import HypersegError
from ..model import create_model, list_models
from ..official import from_official
from ..pretrained import is_weights_name, list_weights

__all__ = ["resolve_model"]


def _is_our_checkpoint(path: Path) -> bool:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False  # not a readable torch file: load_model names the problem
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def resolve_model(source: Union[str, Path, nn.Module]) -> nn.Module:
    """A model in eval mode from any PyTorch source; ``.onnx`` files go to :func:`load_runtime` instead."""
    if isinstance(source, nn.Module):
        return source.eval()
    if source is None:
        raise HypersegError("no model given; expected a built-in weights name, a registered model or a file")
    text = str(source)
    if is_weights_name(text):
        return load_model(text)
    if text in list_models():
        return create_model(text).eval()
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx":
        raise HypersegError(f"{path} is an ONNX file; run it with an ONNX runtime (onnxruntime or openvino), not torch")
    if not path.is_file():
        raise HypersegError(f"{text}: no such file, registered weights ({', '.join(list_weights()) or 'none'}) "
                            f"or registered model (see `hyperseg list`)")
    return load_model(path) if _is_our_checkpoint(path) else from_official(path)
