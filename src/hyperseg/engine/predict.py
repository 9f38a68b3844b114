"""Prediction on images, folders, globs and videos: palette label PNGs and colour overlays."""
from __future__ import annotations

import contextlib
import glob as globlib
import os
import queue
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..checkpoint import atomic_write, refuse_replacing_inputs
from ..classes import default_palette
from ..data.io import IMAGE_EXTENSIONS, DataError, read_image
from ..errors import HypersegError, require
from ..runtime import Runtime, load_runtime
from ..model.hyperseg import MIN_INPUT_SIZE
from ..pretrained import DEFAULT_MODEL
from .inference import check_test_time_options, model_input_size, predict_logits

__all__ = ["Predictor", "collect_inputs", "output_names", "VIDEO_EXTENSIONS", "DEFAULT_MODEL", "DEFAULT_MAX_SIZE"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def collect_inputs(source: Union[str, Path]) -> list[Path]:
    """An image or video file, a folder of images, or a glob pattern -> sorted files."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return files
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            raise DataError(f"{path}: not an image or video file (by its extension)")
        return [path]
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(text), recursive=True)
                       if Path(p).suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        if not files:
            raise DataError(f"{text}: the pattern matches no images")
        return files
    raise DataError(f"{path}: file not found")


def output_names(files: Sequence[Path]) -> list[str]:
    """One unique output name per input: its stem, then ``<stem>_<ext>`` where stems repeat
    (``scene.png`` and ``scene.jpg``), then a counter where even those repeat (same name in two folders)."""
    stems = Counter(p.stem for p in files)  # counted once: linear in the number of files
    names = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems[p.stem] > 1 else p.stem for p in files]
    totals, seen = Counter(names), Counter()
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if totals[name] == 1 else f"{name}_{seen[name]}")
    return unique


def _save_atomic(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda f: img.save(f, format="PNG" if path.suffix.lower() == ".png" else "JPEG"))


# Longest image side segmented at full size by default. Measured peak memory of `hyperseg predict`
# (built-in model, torch runtime): 1.8 GB for a 2048x1536 image, 2.9 GB for 8000x6000.
DEFAULT_MAX_SIZE = 2048


def check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise HypersegError(f"alpha {alpha!r}: expected the overlay opacity as a number in [0, 1]")


class Predictor:
    """Segments RGB images with a model in the fastest available runtime; returns label maps, draws overlays.

    Args:
        model: built-in weights name (default ``"camvid"``), registered model, checkpoint, authors'
            ``.pth``, ``.onnx`` file, model or :class:`~hyperseg.runtime.Runtime`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        runtime: ``"auto"`` (fastest installed), ``"torch"``, ``"onnxruntime"``, ``"openvino"``, ``"eager"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"`` (default: fp32, or what an ONNX file holds).
        flip / scales / window: test-time augmentation, see ``engine.inference.predict_logits``.
        calibration: image folder for int8 conversion of a PyTorch model.
        meta: class names / mean / std for an ONNX file without our metadata.
        max_size: images whose longer side exceeds it are segmented at that size and the labels
            scaled back up (nearest), which bounds memory; ``None`` segments every image at full size.
    """

    def __init__(self, model: Union[nn.Module, Runtime, str, Path] = DEFAULT_MODEL, *, device: str = "auto",
                 runtime: str = "auto", precision: Optional[str] = None, flip: bool = False,
                 scales: Sequence[float] = (1.0,), window: Optional[Sequence[int]] = None,
                 calibration: Optional[str] = None, meta: Optional[dict[str, Any]] = None,
                 max_size: Optional[int] = DEFAULT_MAX_SIZE) -> None:
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 32):
            raise HypersegError(f"max_size {max_size!r}: expected a whole number of pixels >= 32, or None")
        self.max_size = max_size
        self.runtime = load_runtime(model, runtime=runtime, precision=precision, device=device,
                                    calibration=calibration, meta=meta)
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
        array = self._as_array(image)
        size = array.shape[:2]
        out = size  # the labels' size before any nearest-neighbour scaling back
        if self.max_size is not None and max(size) > self.max_size:
            factor = self.max_size / max(size)
            out = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
        # the image goes to the size the model sees in one resize: max_size and the model's input scale
        x = self._normalised(array, model_input_size(self.runtime, out))
        try:
            logits = predict_logits(self.runtime, x.to(self.device), flip=self.flip, scales=self.scales,
                                    window=self.window, out_size=out)
        except HypersegError as exc:
            if isinstance(image, (str, Path)):
                raise HypersegError(f"{image}: {exc}") from None
            raise
        # max().indices rather than argmax(): same labels, ~10x faster over the class dim of NCHW on CPU
        labels = logits.max(1).indices[0].to(torch.uint8).cpu().numpy()
        if labels.shape != size:  # segmented smaller: labels back to the image's size
            labels = np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.NEAREST))
        return labels

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return self.palette[np.clip(labels, 0, len(self.palette) - 1)]

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        check_alpha(alpha)
        blended = image.astype(np.float32) * (1 - alpha) + self.colorize(labels).astype(np.float32) * alpha
        return blended.round().astype(np.uint8)

    def with_legend(self, overlay: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """``overlay`` with a panel on its right: a swatch, the name and the pixel share of each class
        present in ``labels``, largest first."""
        from PIL import ImageDraw, ImageFont

        counts = np.bincount(labels.reshape(-1), minlength=len(self.class_names))[: len(self.class_names)]
        present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
        row, font = 18, ImageFont.load_default()
        width = 12 + 16 + 8 + max((len(self.class_names[c]) for c in present), default=0) * 7 + 60
        height = max(overlay.shape[0], 8 + row * len(present))
        panel = Image.new("RGB", (width, height), (255, 255, 255))
        draw = ImageDraw.Draw(panel)
        for i, c in enumerate(present):
            top = 6 + i * row
            draw.rectangle([12, top, 12 + 14, top + 14], fill=tuple(int(v) for v in self.palette[c]), outline=(0, 0, 0))
            share = 100 * counts[c] / labels.size
            draw.text((12 + 16 + 8, top + 1), f"{self.class_names[c]}  {share:.1f}%", fill=(0, 0, 0), font=font)
        canvas = np.full((height, overlay.shape[1] + width, 3), 255, np.uint8)
        canvas[: overlay.shape[0], : overlay.shape[1]] = overlay
        canvas[:, overlay.shape[1]:] = np.asarray(panel)
        return canvas

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """A palette-mode PNG: pixel values are class indices, colours come from the palette."""
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        flat = self.palette.reshape(-1).tolist()
        img.putpalette(flat + [0] * (768 - len(flat)))
        return img

    def predict_files(self, files: Iterable[Path], out_dir: Union[str, Path], *, alpha: float = 0.5,
                      progress: bool = True, video_labels: bool = False, legend: Optional[bool] = None,
                      failures: Optional[list[tuple[Path, str]]] = None) -> list[Path]:
        """Write ``<name>.png`` (labels) and ``<name>_overlay.jpg`` per image, or an overlay video per video.

        ``<name>`` is the input's stem, made unique when stems repeat (see :func:`output_names`).
        Refuses before writing anything if an output would replace one of the inputs. With a
        ``failures`` list, an input that cannot be read or segmented is recorded there as
        ``(path, message)`` and the others are still processed; without one, it raises. ``legend``
        adds a colour legend beside image overlays (default: only when there is a single input).
        """
        check_alpha(alpha)
        from tqdm import tqdm

        out = Path(out_dir)
        files = list(files)
        names = dict(zip(files, output_names(files)))
        plan = {path: [out / f"{name}_overlay.mp4"] if path.suffix.lower() in VIDEO_EXTENSIONS
                else [out / f"{name}.png", out / f"{name}_overlay.jpg"] for path, name in names.items()}
        refuse_replacing_inputs([p for paths in plan.values() for p in paths], files, f"--out {out}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for path in tqdm(files, desc="predict", disable=not progress or len(files) < 2):
            targets = plan[path]
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                labels_dir = out / f"{names[path]}_labels" if video_labels else None
                written.append(self.predict_video(path, targets[0], alpha=alpha, labels_dir=labels_dir,
                                                  progress=progress))
                continue
            try:
                image = read_image(path)
                labels = self(image)
            except HypersegError as exc:
                if failures is None:
                    raise
                message = str(exc)
                failures.append((path, message if str(path) in message else f"{path}: {message}"))
                continue
            _save_atomic(self.label_image(labels), targets[0])
            overlay = self.overlay(image, labels, alpha)
            if legend or (legend is None and len(files) == 1):
                overlay = self.with_legend(overlay, labels)
            _save_atomic(Image.fromarray(overlay), targets[1])
            written += targets
        return written

    def predict_video(self, path: Path, out_path: Path, *, alpha: float = 0.5, labels_dir: Optional[Path] = None,
                      progress: bool = True) -> Path:
        """Overlay video (and optionally per-frame label PNGs): decoding, inference and encoding overlap."""
        cv2 = require("cv2", "video", "video prediction")
        from tqdm import tqdm

        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"{path}: cannot open the video")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        tmp = out_path.with_name(f".{out_path.stem}.tmp.mp4")
        if labels_dir is not None:
            labels_dir.mkdir(parents=True, exist_ok=True)

        def frames() -> Iterator[np.ndarray]:
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        return
                    yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            finally:
                cap.release()

        writer: list[Any] = []

        def write(item: tuple[int, np.ndarray, np.ndarray]) -> None:
            index, rgb, labels = item
            if not writer:
                h, w = rgb.shape[:2]
                writer.append(cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h)))
            writer[0].write(cv2.cvtColor(self.overlay(rgb, labels, alpha), cv2.COLOR_RGB2BGR))
            if labels_dir is not None:
                _save_atomic(self.label_image(labels), labels_dir / f"{index:06d}.png")

        bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
        try:
            with _Background(write) as sink:
                for index, rgb in enumerate(_prefetch(frames())):
                    sink.put((index, rgb, self(rgb)))
                    bar.update(1)
        finally:
            bar.close()
            if writer:
                writer[0].release()
        if not writer:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise DataError(f"{path}: the video has no readable frames")
        os.replace(tmp, out_path)
        return out_path


def _prefetch(items: Iterator[Any], depth: int = 4) -> Iterator[Any]:
    """Yield ``items`` produced by a reader thread up to ``depth`` ahead (decoding overlaps inference)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    failure: list[BaseException] = []

    def reader() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(done)

    threading.Thread(target=reader, daemon=True, name="hyperseg-reader").start()
    while (item := q.get()) is not done:
        yield item
    if failure:
        raise failure[0]


class _Background:
    """Runs ``fn`` on queued items in a writer thread; leaving the block waits for it and re-raises its error."""

    def __init__(self, fn: Callable[[Any], None], depth: int = 4) -> None:
        self.fn, self.q = fn, queue.Queue(maxsize=depth)
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="hyperseg-writer")

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if not self.failure:
                try:
                    self.fn(item)
                except BaseException as exc:
                    self.failure.append(exc)

    def put(self, item: Any) -> None:
        if self.failure:
            raise self.failure[0]
        self.q.put(item)

    def __enter__(self) -> "_Background":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.q.put(None)
        self.thread.join()
        if self.failure and exc[0] is None:
            raise self.failure[0]

