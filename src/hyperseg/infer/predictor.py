"""Prediction on images, folders, globs and videos: palette label PNGs and colour overlays."""
from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
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

from ..hub.checkpoint import atomic_write, refuse_replacing_inputs
from ..classes import default_palette
from ..data.io import IMAGE_EXTENSIONS, DataError, read_image
from ..errors import HypersegError, OutputExistsError, ResourceError, require
from ..runtime import Runtime, load_runtime
from ..model.hyperseg import MIN_INPUT_SIZE
from ..hub.weights import DEFAULT_MODEL
from ..runtime.inference import check_test_time_options, model_input_size, predict_labels

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


# Bytes of an output name before its suffix: the longest file made from it, a video's temporary
# ".<name>_overlay.tmp.mp4" (17 bytes more), then stays within the 255-byte name limit of common
# file systems.
MAX_NAME_BYTES = 255 - len("._overlay.tmp.mp4")


def _fit(name: str) -> str:
    """``name`` itself, or, when too long for a file name, its start and 8 hex digits of its hash."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: MAX_NAME_BYTES - 9].decode("utf-8", "ignore")  # cut on a character boundary
    return f"{head}~{digest}"


def output_names(files: Sequence[Path]) -> list[str]:
    """One unique output name per input: its stem, then ``<stem>_<ext>`` where stems repeat
    (``scene.png`` and ``scene.jpg``), then a counter where even those repeat (same name in two
    folders). Names are unique ignoring case (``a.PNG`` and ``a.png`` on a case-insensitive disk),
    a counter never lands on another input's name, and long names are shortened to fit."""
    stems = Counter(p.stem.casefold() for p in files)  # counted once: linear in the number of files
    names = [_fit(f"{p.stem}_{p.suffix.lstrip('.').lower()}" if stems[p.stem.casefold()] > 1 else p.stem)
             for p in files]
    totals = Counter(n.casefold() for n in names)
    taken = {n.casefold() for n in names if totals[n.casefold()] == 1}  # kept as they are
    counters: Counter = Counter()
    unique = []
    for name in names:
        key = name.casefold()
        if totals[key] == 1:
            unique.append(name)
            continue
        while True:  # the next free counter; each name's counter only moves forward, so this stays linear
            counters[key] += 1
            candidate = _fit(f"{name}_{counters[key]}")
            if candidate.casefold() not in taken:
                break
        taken.add(candidate.casefold())
        unique.append(candidate)
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
        model: built-in or registered weights name (default ``"camvid"``), checkpoint, authors'
            ``.pth``, ``.onnx`` file, model or :class:`~hyperseg.runtime.Runtime`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        runtime: ``"auto"`` (fastest installed), ``"torch"``, ``"onnxruntime"``, ``"openvino"``, ``"eager"``.
        precision: ``"auto"`` (the fastest precision on this CPU whose accuracy stays within 0.3 mIoU
            of fp32 for these weights; ``runtime.statement()`` says what it took and why),
            ``"fp32"`` (exact), ``"bf16"`` or ``"int8"``.
        flip: test-time horizontal flip, see :func:`~hyperseg.runtime.inference.predict_logits`.
        scales: test-time scales, relative to the size the model sees.
        window: sliding-window (H, W) for images larger than the model should see at once.
        calibration: image folder for int8 conversion of a PyTorch model.
        meta: class names / mean / std for an ONNX file without our metadata.
        shapes: ``"static"`` or ``"dynamic"``: how a PyTorch model is converted for onnxruntime or
            OpenVINO, once per input size or once for all (see :func:`~hyperseg.runtime.load_runtime`).
        max_size: images whose longer side exceeds it are segmented at that size and the labels
            scaled back up (nearest), which bounds memory; ``None`` segments every image at full size.
    """

    def __init__(self, model: Union[nn.Module, Runtime, str, Path] = DEFAULT_MODEL, *, device: str = "auto",
                 runtime: str = "auto", precision: Optional[str] = "auto", flip: bool = False,
                 scales: Sequence[float] = (1.0,), window: Optional[Sequence[int]] = None,
                 calibration: Optional[str] = None, meta: Optional[dict[str, Any]] = None,
                 max_size: Optional[int] = DEFAULT_MAX_SIZE, shapes: str = "static") -> None:
        if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 32):
            raise HypersegError(f"max_size {max_size!r}: expected a whole number of pixels >= 32, or None")
        self.max_size = max_size
        self.runtime = load_runtime(model, runtime=runtime, precision=precision, device=device,
                                    calibration=calibration, meta=meta, shapes=shapes)
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

    def output_plan(self, files: Sequence[Path], out_dir: Union[str, Path]) -> dict[Path, list[Path]]:
        """Each input's output files under ``out_dir``: ``<name>.png`` (labels) and
        ``<name>_overlay.jpg`` for an image, ``<name>_overlay.mp4`` for a video. ``<name>`` is the
        input's stem, made unique over all of ``files`` (see :func:`output_names`)."""
        out = Path(out_dir)
        return {path: [out / f"{name}_overlay.mp4"] if path.suffix.lower() in VIDEO_EXTENSIONS
                else [out / f"{name}.png", out / f"{name}_overlay.jpg"]
                for path, name in zip(files, output_names(files))}

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
        check_alpha(alpha)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HypersegError(f"batch size {batch_size!r}: expected a whole number >= 1")
        from tqdm import tqdm

        out = Path(out_dir)
        files = list(files)
        plan = self.output_plan(files, out)
        work = files if todo is None else list(todo)
        refuse_replacing_inputs([p for path in work for p in plan[path]], files, f"--out {out}")
        out.mkdir(parents=True, exist_ok=True)
        with_legend = legend or (legend is None and len(files) == 1)
        completed: set[Path] = set()

        def write(item: tuple[Path, np.ndarray, np.ndarray]) -> None:
            path, image, labels = item
            label_png, overlay_jpg = plan[path]
            _save_atomic(self.label_image(labels), label_png)
            overlay = self.overlay(image, labels, alpha)
            _save_atomic(Image.fromarray(self.with_legend(overlay, labels) if with_legend else overlay), overlay_jpg)
            completed.add(path)
            if on_done is not None:
                on_done(path)

        def failed(path: Path, exc: HypersegError) -> None:
            # the machine's fault (a read-only cache, no memory) would fail every later input the same way
            if failures is None or isinstance(exc, ResourceError):
                raise exc
            message = str(exc)
            failures.append((path, message if str(path) in message else f"{path}: {message}"))

        bar = tqdm(total=len(work), desc="predict", disable=not progress or len(work) < 2)
        pending: list[tuple[Path, np.ndarray]] = []  # decoded images of one size, waiting for a batch

        def flush(sink: Any) -> None:
            try:
                labels = self.segment([image for _, image in pending])
            except ResourceError:
                raise
            except HypersegError:
                labels = None
            for i, (path, image) in enumerate(pending):
                if labels is None:  # the batch failed: find the image that did, one by one
                    try:
                        sink.put((path, image, self.segment([image])[0]))
                    except HypersegError as exc:
                        failed(path, exc)
                else:
                    sink.put((path, image, labels[i]))
            bar.update(len(pending))
            pending.clear()

        decoded = _decode(work)
        with (_Background(write) if overlap else _Inline(write)) as sink:
            for path, image, error in (_prefetch(decoded) if overlap else decoded):
                if pending and (error is not None or image is None or len(pending) == batch_size
                                or image.shape != pending[0][1].shape):
                    flush(sink)
                if error is not None:
                    failed(path, error)
                    bar.update(1)
                elif image is None:  # a video: decoding, inference and encoding overlap inside
                    labels_dir = out / f"{plan[path][0].stem[: -len('_overlay')]}_labels" if video_labels else None
                    try:
                        self.predict_video(path, plan[path][0], alpha=alpha, labels_dir=labels_dir, progress=progress)
                    except HypersegError as exc:  # like an unreadable image: listed, and the others go on
                        failed(path, exc)
                    else:
                        completed.add(path)
                        if on_done is not None:
                            on_done(path)
                    bar.update(1)
                else:
                    pending.append((path, image))
            if pending:
                flush(sink)
        bar.close()
        return [target for path in work if path in completed for target in plan[path]]  # in input order

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
            if os.path.islink(labels_dir) or (labels_dir.exists() and not labels_dir.is_dir()):
                cap.release()
                raise OutputExistsError(f"{labels_dir}: a symbolic link or a file where the video's label folder goes; "
                                        f"remove it, or choose another --out")
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
        finished = False
        try:
            with _Background(write) as sink:
                for index, rgb in enumerate(_prefetch(frames())):
                    try:
                        labels = self(rgb)
                    except HypersegError as exc:
                        if isinstance(exc, ResourceError):
                            raise
                        raise DataError(f"{path}: frame {index}: {exc}") from None
                    sink.put((index, rgb, labels))
                    bar.update(1)
            if not writer:
                raise DataError(f"{path}: the video has no readable frames")
            writer[0].release()
            os.replace(tmp, out_path)
            finished = True
        finally:
            bar.close()
            if writer:
                writer[0].release()
            if not finished:  # a half-written video is never left behind
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
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


def _decode(paths: Iterable[Path]) -> Iterator[tuple[Path, Optional[np.ndarray], Optional[HypersegError]]]:
    """(path, RGB uint8 image, None) per image, (path, None, error) for one that cannot be read,
    (path, None, None) for a video (decoded later, frame by frame)."""
    for path in paths:
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            yield path, None, None
            continue
        try:
            yield path, read_image(path), None
        except HypersegError as exc:
            yield path, None, exc


class _Inline:
    """:class:`_Background`'s interface without the thread: ``fn`` runs at ``put``."""

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.put = fn

    def __enter__(self) -> "_Inline":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


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

