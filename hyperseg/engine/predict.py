"""Prediction on images, folders, globs and videos: palette label PNGs and colour overlays."""
from __future__ import annotations

import glob as globlib
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..checkpoint import load_model
from ..classes import default_palette
from ..data.io import IMAGE_EXTENSIONS, DataError, read_image
from ..data.transforms import normalize
from ..model import HyperSeg
from .inference import predict_logits

__all__ = ["Predictor", "collect_inputs", "VIDEO_EXTENSIONS", "DEFAULT_MODEL"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_MODEL = "camvid"


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


def _save_atomic(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG" if path.suffix.lower() == ".png" else "JPEG")
    os.replace(tmp, path)


class Predictor:
    """Segments RGB images with a model; returns label maps and draws overlays.

    Args:
        model: a model, a checkpoint path, or a built-in weights name (default ``"camvid"``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        flip / scales / window: test-time augmentation, see ``engine.inference.predict_logits``.
    """

    def __init__(self, model: Union[HyperSeg, str, Path] = DEFAULT_MODEL, *, device: str = "auto", flip: bool = False,
                 scales: Sequence[float] = (1.0,), window: Optional[Sequence[int]] = None) -> None:
        self.model = model if isinstance(model, HyperSeg) else load_model(model)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model.to(self.device).eval()
        meta = self.model.meta
        self.mean, self.std = meta.get("mean", [0.485, 0.456, 0.406]), meta.get("std", [0.229, 0.224, 0.225])
        self.class_names = list(meta.get("class_names") or [str(i) for i in range(self.model.num_classes)])
        palette = meta.get("palette") or default_palette(self.model.num_classes)
        self.palette = np.array([tuple(c) for c in palette], dtype=np.uint8)
        self.flip, self.scales, self.window = flip, tuple(scales), window

    @torch.no_grad()
    def __call__(self, image: Union[np.ndarray, Image.Image, str, Path]) -> np.ndarray:
        """(H, W) uint8 class indices for an RGB uint8 (H, W, 3) array, PIL image or file."""
        if isinstance(image, (str, Path)):
            image = read_image(image)
        elif isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise ValueError("expected an RGB uint8 image of shape (H, W, 3)")
        x = normalize(torch.from_numpy(np.array(image)).permute(2, 0, 1), self.mean, self.std).unsqueeze(0).to(self.device)
        logits = predict_logits(self.model, x, flip=self.flip, scales=self.scales, window=self.window)
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return self.palette[np.clip(labels, 0, len(self.palette) - 1)]

    def overlay(self, image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        blended = image.astype(np.float32) * (1 - alpha) + self.colorize(labels).astype(np.float32) * alpha
        return blended.round().astype(np.uint8)

    def label_image(self, labels: np.ndarray) -> Image.Image:
        """A palette-mode PNG: pixel values are class indices, colours come from the palette."""
        img = Image.fromarray(labels.astype(np.uint8), mode="P")
        flat = self.palette.reshape(-1).tolist()
        img.putpalette(flat + [0] * (768 - len(flat)))
        return img

    def predict_files(self, files: Iterable[Path], out_dir: Union[str, Path], *, alpha: float = 0.5,
                      progress: bool = True) -> list[Path]:
        """Write ``<stem>.png`` (labels) and ``<stem>_overlay.jpg`` per image, or an overlay video per video."""
        from tqdm import tqdm

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        files = list(files)
        for path in tqdm(files, desc="predict", disable=not progress or len(files) < 2):
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                written.append(self.predict_video(path, out / f"{path.stem}_overlay.mp4", alpha=alpha))
                continue
            image = read_image(path)
            labels = self(image)
            _save_atomic(self.label_image(labels), out / f"{path.stem}.png")
            _save_atomic(Image.fromarray(self.overlay(image, labels, alpha)), out / f"{path.stem}_overlay.jpg")
            written += [out / f"{path.stem}.png", out / f"{path.stem}_overlay.jpg"]
        return written

    def predict_video(self, path: Path, out_path: Path, *, alpha: float = 0.5) -> Path:
        try:
            import cv2
        except ImportError:
            raise ImportError("video prediction needs OpenCV: pip install 'hyperseg[video]'") from None
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DataError(f"{path}: cannot open the video")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        tmp = out_path.with_name(f".{out_path.stem}.tmp.mp4")
        writer = None
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                blended = self.overlay(rgb, self(rgb), alpha)
                if writer is None:
                    h, w = rgb.shape[:2]
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if writer is None:
            raise DataError(f"{path}: the video has no readable frames")
        os.replace(tmp, out_path)
        return out_path
