from pathlib import Path

import pytest
from PIL import Image

import hyperseg

from .oracle import SAMPLE, naive_confusion


@pytest.fixture(scope="module")
def eager():
    return hyperseg.load_model("camvid_fast").eval()


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    """The bundled street scene at 80x64: several classes, segmented in a moment."""
    path = tmp_path_factory.mktemp("street") / "street.png"
    Image.open(SAMPLE).convert("RGB").resize((80, 64), Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def plain_confusion(eager, tiny_camvid):
    """The oracle's confusion matrix on tiny_camvid's val split without test-time augmentation."""
    return naive_confusion(eager, tiny_camvid)
