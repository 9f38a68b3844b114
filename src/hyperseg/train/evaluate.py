"""Evaluation over a dataset: confusion matrix -> mIoU, per-class IoU, accuracies."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data.io import DataError
from ..data.transforms import EvalTransform
from ..errors import HypersegError
from ..model.hyperseg import MIN_INPUT_SIZE
from ..runtime.inference import check_test_time_options, predict_labels, predict_logits
from .metrics import ConfusionMatrix

__all__ = ["evaluate", "check_classes"]


def check_classes(model: nn.Module, dataset) -> int:
    """How many of the model's outputs to score; refuses a model trained for other classes.

    The authors' CamVid models add a 12th "void" output to the 11 classes; it is dropped.
    """
    names = list(getattr(model, "meta", {}).get("class_names") or [])
    if model.num_classes == dataset.num_classes:
        return dataset.num_classes
    if model.num_classes == dataset.num_classes + 1 and names and names[-1] == "void":
        return dataset.num_classes
    raise HypersegError(f"the model predicts {model.num_classes} classes but the dataset has {dataset.num_classes} "
                     f"({', '.join(dataset.classes[:4])}, ...); use a checkpoint trained for this dataset")


class _Eval:
    def __init__(self, dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.transform(*self.dataset.load(i))


def _collate_same_size(batch: list) -> tuple[Tensor, Tensor]:
    """Stack a batch, refusing images of different sizes (padding them would change what the model sees)."""
    sizes = sorted({tuple(image.shape[-2:]) for image, _ in batch})
    if len(sizes) > 1:
        raise DataError(f"a batch holds images of different sizes ({', '.join(f'{h}x{w}' for h, w in sizes)}); "
                        f"evaluate this dataset with batch size 1, or resize to one size")
    return torch.stack([image for image, _ in batch]), torch.stack([torch.as_tensor(label) for _, label in batch])


@torch.no_grad()
def evaluate(model: nn.Module, dataset, *, mean: Optional[Sequence[float]] = None,
             std: Optional[Sequence[float]] = None, device: Optional[torch.device] = None,
             batch_size: int = 1, workers: int = 0, flip: bool = False, scales: Sequence[float] = (1.0,),
             window: Optional[Sequence[int]] = None, stride: Optional[Sequence[int]] = None,
             progress: bool = False, amp_dtype: Optional[torch.dtype] = None,
             resize: Optional[Sequence[int]] = None) -> dict:
    """Evaluate on every image of ``dataset``; shards across DDP processes.

    The model sees each image at its native size, or resized to ``resize`` = (H, W) (the authors'
    Cityscapes protocol); logits are bilinearly resized to the label's size before the argmax.
    ``model`` is an ``nn.Module`` or a :class:`~hyperseg.runtime.Runtime`; mean/std and device
    default to the model's own.
    """
    meta = getattr(model, "meta", {})
    mean = mean if mean is not None else meta.get("mean")
    std = std if std is not None else meta.get("std")
    if mean is None or std is None:
        raise HypersegError("evaluate needs the normalisation: the model has no mean/std in its meta; pass mean= and std=")
    if device is None:
        device = getattr(model, "device", None) or next(model.parameters()).device
    scored = check_classes(model, dataset)
    scales = check_test_time_options(scales, window, min_window=MIN_INPUT_SIZE)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    indices = list(range(rank, len(dataset), world))
    data = Subset(_Eval(dataset, EvalTransform(mean, std)), indices)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise HypersegError(f"batch size {batch_size!r}: expected a whole number >= 1")
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, shuffle=False, collate_fn=_collate_same_size,
                        generator=torch.Generator())  # leaves the global RNG (training dropout) untouched
    module = model if isinstance(model, nn.Module) else None  # a Runtime only infers: nothing to switch
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    cm = ConfusionMatrix(dataset.num_classes)
    for image, label in tqdm(loader, desc="eval", disable=not progress or rank != 0, leave=False):
        image = image.to(device)
        if resize is not None:
            image = F.interpolate(image, size=tuple(resize), mode="bilinear", align_corners=False)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if resize is None and scored == model.num_classes:  # the labels of predict, by the same path
                prediction = predict_labels(model, image, flip=flip, scales=scales, window=window, stride=stride)
            else:
                logits = predict_logits(model, image, flip=flip, scales=scales, window=window, stride=stride)
                logits = logits[:, :scored]
                if logits.shape[-2:] != label.shape[-2:]:
                    logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
                prediction = logits.max(1).indices  # max().indices: argmax's labels, much faster on NCHW
        cm.update(prediction.cpu(), label)
    cm.all_reduce()
    if module is not None:
        module.train(was_training)
    result = cm.compute(dataset.classes)
    result["confusion_matrix"] = cm.matrix.tolist()
    return result
