"""Prediction over files: which inputs a source names, the output names, and the threaded pipeline that
decodes, segments and writes them (decoding and writing overlap the model)."""
from __future__ import annotations

import glob as globlib
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..data.io import IMAGE_EXTENSIONS, DataError, read_image
from ..errors import HypersegError, ResourceError
from ..hub.checkpoint import atomic_write, refuse_replacing_inputs
from .overlap import Background, Inline, prefetch
from .render import check_alpha

__all__ = ["VIDEO_EXTENSIONS", "collect_inputs", "output_names", "output_plan", "predict_files", "save_atomic"]

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


def output_plan(files: Sequence[Path], out_dir: Union[str, Path]) -> dict[Path, list[Path]]:
    """Each input's output files under ``out_dir``: ``<name>.png`` (labels) and
    ``<name>_overlay.jpg`` for an image, ``<name>_overlay.mp4`` for a video. ``<name>`` is the
    input's stem, made unique over all of ``files`` (see :func:`output_names`)."""
    out = Path(out_dir)
    return {path: [out / f"{name}_overlay.mp4"] if path.suffix.lower() in VIDEO_EXTENSIONS
            else [out / f"{name}.png", out / f"{name}_overlay.jpg"]
            for path, name in zip(files, output_names(files))}


def save_atomic(img: Image.Image, path: Path) -> None:
    atomic_write(path, lambda f: img.save(f, format="PNG" if path.suffix.lower() == ".png" else "JPEG"))


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


def predict_files(predictor: Any, files: Iterable[Path], out_dir: Union[str, Path], *, alpha: float = 0.5,
                  progress: bool = True, video_labels: bool = False, legend: Optional[bool] = None,
                  failures: Optional[list[tuple[Path, str]]] = None, todo: Optional[Iterable[Path]] = None,
                  on_done: Optional[Callable[[Path], None]] = None, batch_size: int = 1,
                  overlap: bool = True) -> list[Path]:
    """:meth:`Predictor.predict_files <hyperseg.infer.predictor.Predictor.predict_files>` for ``predictor``."""
    check_alpha(alpha)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HypersegError(f"batch size {batch_size!r}: expected a whole number >= 1")
    from tqdm import tqdm

    out = Path(out_dir)
    files = list(files)
    plan = predictor.output_plan(files, out)
    work = files if todo is None else list(todo)
    refuse_replacing_inputs([p for path in work for p in plan[path]], files, f"--out {out}")
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(work), desc="predict", disable=not progress or len(work) < 2)
    run = _FileRun(predictor, plan, out, bar, alpha=alpha, legend=legend or (legend is None and len(files) == 1),
                   failures=failures, on_done=on_done, progress=progress, video_labels=video_labels)
    with (Background(run.write) if overlap else Inline(run.write)) as sink:
        run.feed(prefetch(_decode(work)) if overlap else _decode(work), sink, batch_size)
    bar.close()
    return [target for path in work if path in run.completed for target in plan[path]]  # in input order


class _FileRun:
    """One :func:`predict_files` call's state: the inputs waiting for a batch, those finished, the failures."""

    def __init__(self, predictor: Any, plan: dict[Path, list[Path]], out: Path, bar: Any, *, alpha: float,
                 legend: bool, failures: Optional[list[tuple[Path, str]]], on_done: Optional[Callable[[Path], None]],
                 progress: bool, video_labels: bool) -> None:
        self.predictor, self.plan, self.out, self.bar = predictor, plan, out, bar
        self.alpha, self.legend, self.failures, self.on_done = alpha, legend, failures, on_done
        self.progress, self.video_labels = progress, video_labels
        self.completed: set[Path] = set()
        self.pending: list[tuple[Path, np.ndarray]] = []  # decoded images of one size, waiting for a batch

    def _done(self, path: Path) -> None:
        self.completed.add(path)
        if self.on_done is not None:
            self.on_done(path)

    def write(self, item: tuple[Path, np.ndarray, np.ndarray]) -> None:
        path, image, labels = item
        label_png, overlay_jpg = self.plan[path]
        save_atomic(self.predictor.label_image(labels), label_png)
        overlay = self.predictor.overlay(image, labels, self.alpha)
        save_atomic(Image.fromarray(self.predictor.with_legend(overlay, labels) if self.legend else overlay),
                    overlay_jpg)
        self._done(path)

    def failed(self, path: Path, exc: HypersegError) -> None:
        # the machine's fault (a read-only cache, no memory) would fail every later input the same way
        if self.failures is None or isinstance(exc, ResourceError):
            raise exc
        message = str(exc)
        self.failures.append((path, message if str(path) in message else f"{path}: {message}"))

    def flush(self, sink: Any) -> None:
        try:
            labels = self.predictor.segment([image for _, image in self.pending])
        except ResourceError:
            raise
        except HypersegError:
            labels = None
        for i, (path, image) in enumerate(self.pending):
            if labels is None:  # the batch failed: find the image that did, one by one
                try:
                    sink.put((path, image, self.predictor.segment([image])[0]))
                except HypersegError as exc:
                    self.failed(path, exc)
            else:
                sink.put((path, image, labels[i]))
        self.bar.update(len(self.pending))
        self.pending.clear()

    def video(self, path: Path) -> None:
        """A video: decoding, inference and encoding overlap inside :meth:`Predictor.predict_video`."""
        overlay_mp4 = self.plan[path][0]
        labels_dir = self.out / f"{overlay_mp4.stem[: -len('_overlay')]}_labels" if self.video_labels else None
        try:
            self.predictor.predict_video(path, overlay_mp4, alpha=self.alpha, labels_dir=labels_dir,
                                         progress=self.progress)
        except HypersegError as exc:  # like an unreadable image: listed, and the others go on
            self.failed(path, exc)
        else:
            self._done(path)
        self.bar.update(1)

    def feed(self, decoded: Iterable[tuple[Path, Optional[np.ndarray], Optional[HypersegError]]], sink: Any,
             batch_size: int) -> None:
        for path, image, error in decoded:
            pending = self.pending
            if pending and (error is not None or image is None or len(pending) == batch_size
                            or image.shape != pending[0][1].shape):
                self.flush(sink)
            if error is not None:
                self.failed(path, error)
                self.bar.update(1)
            elif image is None:
                self.video(path)
            else:
                pending.append((path, image))
        if self.pending:
            self.flush(sink)
