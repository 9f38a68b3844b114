"""Predictor: RGB images in, label maps out, in the fastest available runtime.

Drawing (:mod:`.render`), output naming and the threaded file pipeline (:mod:`.files`) and video
encoding (:mod:`.video`) live beside it; its methods of those names hand over to them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..classes import default_palette
from ..data.io import read_image
from ..errors import HypersegError
from ..hub.weights import DEFAULT_MODEL
from ..model.hyperseg import MIN_INPUT_SIZE
from ..runtime import Runtime, load_runtime
from ..runtime.options import RuntimeOptions, as_options
from ..runtime.inference import check_test_time_options, model_input_size, predict_labels
from . import render
from .files import VIDEO_EXTENSIONS, collect_inputs, output_names, output_plan, predict_files
from .render import check_alpha
from .video import predict_video

__all__ = ["Predictor", "collect_inputs", "output_names", "check_alpha", "VIDEO_EXTENSIONS", "DEFAULT_MODEL",
           "DEFAULT_MAX_SIZE"]

# Longest image side segmented at full size by default. Measured peak memory of `hyperseg predict`
# (built-in model, torch runtime): 1.8 GB for a 2048x1536 image, 2.9 GB for 8000x6000.
DEFAULT_MAX_SIZE = 2048


class Predictor:
    """Segments RGB images with a model in the fastest available runtime; returns label maps, draws overlays.

    Args:
        model: built-in or registered weights name (default ``"camvid"``), checkpoint, authors'
            ``.pth``, ``.onnx`` file, model or :class:`~hyperseg.runtime.Runtime`.
        options: how to run it, a :class:`~hyperseg.runtime.options.RuntimeOptions`; or give its
            fields (device, runtime, precision, calibration, shapes) as keywords instead, not both.
        device: ``"auto"`` (the default), ``"cpu"`` or ``"cuda"``.
        runtime: ``"auto"`` (the default: fastest installed), ``"torch"``, ``"onnxruntime"``,
            ``"openvino"``, ``"eager"``.
        precision: ``"auto"`` (the default: the fastest precision on this CPU whose accuracy stays
            within 0.3 mIoU of fp32 for these weights; ``runtime.statement()`` says what it took and
            why), ``"fp32"`` (exact), ``"bf16"`` or ``"int8"``.
        flip: test-time horizontal flip, see :func:`~hyperseg.runtime.inference.predict_logits`.
        scales: test-time scales, relative to the size the model sees.
        window: sliding-window (H, W) for images larger than the model should see at once.
        calibration: image folder for int8 conversion of a PyTorch model.
        meta: class names / mean / std for an ONNX file without our metadata.
        shapes: ``"static"`` (the default) or ``"dynamic"``: how a PyTorch model is converted for
            onnxruntime or OpenVINO, once per input size or once for all (see
            :func:`~hyperseg.runtime.load_runtime`).
        max_size: images whose longer side exceeds it are segmented at that size and the labels
            scaled back up (nearest), which bounds memory; ``None`` segments every image at full size.
    """

    def __init__(self, model: Union[nn.Module, Runtime, str, Path] = DEFAULT_MODEL, *,
                 options: Optional[RuntimeOptions] = None, device: Optional[str] = None,
                 runtime: Optional[str] = None, precision: Optional[str] = None, flip: bool = False,
                 scales: Sequence[float] = (1.0,), window: Optional[Sequence[int]] = None,
                 calibration: Optional[str] = None, meta: Optional[dict[str, Any]] = None,
                 max_size: Optional[int] = DEFAULT_MAX_SIZE, shapes: Optional[str] = None) -> None:
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 32):
            raise HypersegError(f"max_size {max_size!r}: expected a whole number of pixels >= 32, or None")
        self.max_size = max_size
        self.options = as_options(options, device=device, runtime=runtime, precision=precision,
                                  calibration=calibration, shapes=shapes)
        self.runtime = load_runtime(model, options=self.options, meta=meta)
        info = self.runtime.meta
        if self.runtime.num_classes > 256:  # labels are uint8: class 256 would be written as 0
            raise HypersegError(f"the model predicts {self.runtime.num_classes} classes; Predictor's label maps and "
                                f"PNGs hold 8-bit class indices, so at most 256 classes")
        self.mean, self.std = self.runtime.mean, self.runtime.std
        self.class_names = list(info.get("class_names") or [str(i) for i in range(self.runtime.num_classes)])
        palette = info.get("palette") or default_palette(self.runtime.num_classes)
        self.palette = np.array([tuple(c) for c in palette], dtype=np.uint8)
        self.flip, self.window = flip, window
        self.scales = check_test_time_options(scales, window, min_window=MIN_INPUT_SIZE)
        # uint8 -> normalised float in one multiply-add: (x / 255 - mean) / std
        self._scale = (1.0 / (255.0 * torch.tensor(self.std))).view(3, 1, 1)
        self._shift = (-torch.tensor(self.mean) / torch.tensor(self.std)).view(3, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @staticmethod
    def _as_array(image: Union[np.ndarray, Image.Image, str, Path]) -> np.ndarray:
        if isinstance(image, (str, Path)):
            image = read_image(image)
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise HypersegError("expected an RGB uint8 image of shape (H, W, 3)")
        return image

    def _normalised(self, image: np.ndarray, size: Optional[tuple[int, int]] = None) -> Tensor:
        """uint8 (H, W, 3) -> normalised (1, 3, h, w) float32, resized to ``size`` first (in uint8:
        antialiased like the training transform, and on a quarter of the bytes)."""
        x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
        if size is not None and tuple(size) != tuple(x.shape[-2:]):
            x = F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        return torch.addcmul(self._shift, x.float(), self._scale).unsqueeze(0)

    def preprocess(self, image: Union[np.ndarray, Image.Image, str, Path]) -> Tensor:
        """An RGB uint8 image (array, PIL image or file) -> normalised (1, 3, H, W) float32."""
        return self._normalised(self._as_array(image))

    def __call__(self, image: Union[np.ndarray, Image.Image, str, Path]) -> np.ndarray:
        """(H, W) uint8 class indices for an RGB uint8 (H, W, 3) array, PIL image or file."""
        try:
            return self.segment([self._as_array(image)])[0]
        except HypersegError as exc:
            if isinstance(image, (str, Path)) and str(image) not in str(exc):
                raise type(exc)(f"{image}: {exc}") from None  # the same kind: a ResourceError stays one
            raise

    def segment(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps for RGB uint8 (H, W, 3) arrays. Images of one size go through the model as one
        batch (what GPUs and batch-capable runtimes are fast at); mixed sizes go one by one. A batch
        computes the same logits as single images up to float rounding."""
        arrays = [self._as_array(image) for image in images]
        if len({a.shape for a in arrays}) > 1:
            return [label for a in arrays for label in self.segment([a])]
        size = arrays[0].shape[:2]
        out = size  # the labels' size before any nearest-neighbour scaling back
        if self.max_size is not None and max(size) > self.max_size:
            factor = self.max_size / max(size)
            out = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
        # the image goes to the size the model sees in one resize: max_size and the model's input scale
        seen = model_input_size(self.runtime, out)
        x = torch.cat([self._normalised(a, seen) for a in arrays])  # (B, 3, h, w)
        labels = predict_labels(self.runtime, x.to(self.device), flip=self.flip, scales=self.scales,
                                window=self.window, out_size=out).to(torch.uint8).cpu().numpy()  # (B, h, w)
        if labels.shape[1:] != size:  # segmented smaller: labels back to the image's size
            return [np.asarray(Image.fromarray(lab).resize((size[1], size[0]), Image.NEAREST)) for lab in labels]
        return list(labels)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return render.colorize(self.palette, labels)

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return render.overlay(self.palette, image, labels, alpha)

    def with_legend(self, overlay: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``overlay`` with a panel on its right: a swatch, the name and the pixel share of each class
        present in ``labels``, largest first."""
        return render.with_legend(overlay, labels, self.class_names, self.palette)

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """A palette-mode PNG: pixel values are class indices, colours come from the palette."""
        return render.label_image(self.palette, labels)

    def output_plan(self, files: Sequence[Path], out_dir: Union[str, Path]) -> dict[Path, list[Path]]:
        """Each input's output files under ``out_dir``: ``<name>.png`` (labels) and
        ``<name>_overlay.jpg`` for an image, ``<name>_overlay.mp4`` for a video. ``<name>`` is the
        input's stem, made unique over all of ``files`` (see :func:`output_names`)."""
        return output_plan(files, out_dir)

    def predict_files(self, files: Iterable[Path], out_dir: Union[str, Path], *, alpha: float = 0.5,
                      progress: bool = True, video_labels: bool = False, legend: Optional[bool] = None,
                      failures: Optional[list[tuple[Path, str]]] = None, todo: Optional[Iterable[Path]] = None,
                      on_done: Optional[Callable[[Path], None]] = None, batch_size: int = 1,
                      overlap: bool = True) -> list[Path]:
        """Write ``<name>.png`` (labels) and ``<name>_overlay.jpg`` per image, or an overlay video per video.

        Names come from :meth:`output_plan` over all of ``files``; only ``todo`` (default: all of
        them) is segmented, which is how a torchrun rank does its share and a resumed job skips
        finished inputs. Refuses before writing anything if an output would replace one of the
        inputs. With a ``failures`` list, an input that cannot be read or segmented is recorded
        there as ``(path, message)`` and the others are still processed; without one, it raises.
        ``legend`` adds a colour legend beside image overlays (default: only when there is a single
        input). ``on_done(path)`` is called once all of an input's files are in place.

        With ``overlap``, images are decoded in a reader thread and encoded and written in a writer
        thread while the model runs; ``batch_size`` consecutive images of one size are segmented as
        one batch.
        """
        return predict_files(self, files, out_dir, alpha=alpha, progress=progress, video_labels=video_labels,
                             legend=legend, failures=failures, todo=todo, on_done=on_done, batch_size=batch_size,
                             overlap=overlap)

    def predict_video(self, path: Path, out_path: Path, *, alpha: float = 0.5, labels_dir: Optional[Path] = None,
                      progress: bool = True) -> Path:
        """Overlay video (and optionally per-frame label PNGs): decoding, inference and encoding overlap."""
        return predict_video(self, path, out_path, alpha=alpha, labels_dir=labels_dir, progress=progress)
