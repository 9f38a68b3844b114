"""What the option tests of this folder share: the model arguments that make the eager model the
oracle's arithmetic, the bundled sample, the tolerated disagreement, and reading results back."""
from pathlib import Path

import numpy as np
from PIL import Image

import hyperseg

MODEL = ["--model", "camvid_fast", "--runtime", "torch", "--precision", "fp32"]
SAMPLE = Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png"
MISMATCH = 0.003  # share of pixels the command and the hand-made oracle may disagree on (float rounding)


def read_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def read_labels(path) -> np.ndarray:
    return np.asarray(Image.open(path))
