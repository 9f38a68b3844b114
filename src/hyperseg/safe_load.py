"""Reading torch files without running code, with errors that name the file."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Union

import torch

from .errors import HypersegError

__all__ = ["safe_torch_load"]


def safe_torch_load(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that name ``path`` and never advise unsafe loading."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, which would run any code the file holds
        raise HypersegError(f"{path} holds Python objects other than tensors and plain data; hyperseg does not "
                            f"unpickle those, since a file from an unknown source could run code") from None
    except IsADirectoryError:
        raise HypersegError(f"{path} is a folder; expected a checkpoint file") from None
    except OSError as exc:
        raise HypersegError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except Exception:  # truncated zip, random bytes, an old-style file cut short: torch raises several types
        raise HypersegError(f"{path} is not a readable PyTorch file (truncated, or not a checkpoint)") from None
