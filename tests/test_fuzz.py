"""Property-based fuzzing of everything that reads user files: only success or a HypersegError.

Random bytes, truncated PNG/JPEG/TIFF/WebP files of random sizes and modes go to ``read_image``,
the CamVid and folder dataset loaders, and ``Predictor``. Bounded and derandomised, so it runs in CI.
"""
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hyperseg.data import build_dataset
from hyperseg.data.io import read_image
from hyperseg.engine.predict import Predictor
from hyperseg.errors import HypersegError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow reports damaged EXIF as it reads

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# (mode, formats that can store it)
_MODES = [("1", ["PNG", "BMP", "TIFF"]), ("L", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]), ("P", ["PNG", "BMP", "TIFF"]),
          ("RGB", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]), ("RGBA", ["PNG", "TIFF", "WEBP"]), ("LA", ["PNG"]),
          ("I;16", ["PNG", "TIFF"]), ("I", ["TIFF"]), ("F", ["TIFF"]), ("CMYK", ["JPEG", "TIFF"])]


@st.composite
def image_bytes(draw) -> bytes:
    """An encoded image of a random size, mode and format, possibly cut short; or plain random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=512))
    mode, formats = draw(st.sampled_from(_MODES))
    fmt = draw(st.sampled_from(formats))
    h, w = draw(st.integers(1, 72)), draw(st.integers(1, 72))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode in ("I;16", "I"):
        array = rng.integers(0, 2**16 if mode == "I;16" else 2**31 - 1, (h, w)).astype(np.int32)
        img = Image.fromarray(array.astype(np.uint16) if mode == "I;16" else array, mode=None)
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w)).astype(np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    data = buffer.getvalue()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated, as by an interrupted copy
    return data


def _only_our_errors(call):
    try:
        return call()
    except HypersegError:
        return None


@FUZZ
@given(data=image_bytes())
def test_read_image_returns_rgb_or_our_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        image = _only_our_errors(lambda: read_image(path))
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FUZZ
@given(image=image_bytes(), label=image_bytes())
def test_dataset_loaders_return_pairs_or_our_error(image, label):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, data in (("train", image), ("trainannot", label)):
            (root / folder).mkdir()
            (root / folder / "x.png").write_bytes(data)
        dataset = build_dataset("camvid", root, "train")
        pair = _only_our_errors(lambda: dataset.load(0))
        if pair is not None:
            img, lbl = pair
            assert img.shape[0] == 3 and tuple(img.shape[1:]) == tuple(lbl.shape)


@pytest.fixture(scope="module")
def predictor():
    return Predictor("camvid", runtime="eager")


@FUZZ
@given(data=image_bytes())
def test_predictor_segments_or_raises_our_error(predictor, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        labels = _only_our_errors(lambda: predictor(path))
        if labels is not None:
            image = read_image(path)
            assert labels.shape == image.shape[:2] and labels.max() < predictor.runtime.num_classes
