"""Overlay videos: frames decoded in a reader thread, segmented, and encoded in a writer thread."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..data.io import DataError
from ..errors import HypersegError, OutputExistsError, ResourceError, require
from .files import save_atomic
from .overlap import Background, prefetch

__all__ = ["predict_video"]


def _check_labels_dir(labels_dir: Path) -> None:
    if os.path.islink(labels_dir) or (labels_dir.exists() and not labels_dir.is_dir()):
        raise OutputExistsError(f"{labels_dir}: a symbolic link or a file where the video's label folder goes; "
                                f"remove it, or choose another --out")


def predict_video(predictor: Any, path: Path, out_path: Path, *, alpha: float = 0.5,
                  labels_dir: Optional[Path] = None, progress: bool = True) -> Path:
    """:meth:`Predictor.predict_video <hyperseg.infer.predictor.Predictor.predict_video>` for ``predictor``."""
    cv2 = require("cv2", "video", "video prediction")
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open the video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    tmp = out_path.with_name(f".{out_path.stem}.tmp.mp4")
    if labels_dir is not None:
        try:
            _check_labels_dir(labels_dir)
        except OutputExistsError:
            cap.release()
            raise
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
        writer[0].write(cv2.cvtColor(predictor.overlay(rgb, labels, alpha), cv2.COLOR_RGB2BGR))
        if labels_dir is not None:
            save_atomic(predictor.label_image(labels), labels_dir / f"{index:06d}.png")

    bar = tqdm(total=total, desc=path.name, unit="frame", disable=not progress)
    finished = False
    try:
        with Background(write) as sink:
            for index, rgb in enumerate(prefetch(frames())):
                sink.put((index, rgb, _segment_frame(predictor, rgb, path, index)))
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


def _segment_frame(predictor: Any, rgb: np.ndarray, path: Path, index: int) -> np.ndarray:
    try:
        return predictor(rgb)
    except HypersegError as exc:
        if isinstance(exc, ResourceError):
            raise
        raise DataError(f"{path}: frame {index}: {exc}") from None
