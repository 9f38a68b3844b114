from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hyperseg

from .oracle import SAMPLE, naive_confusion


@pytest.fixture(scope="session")
def tiny_camvid(tmp_path_factory):
    """The layout of the top-level tiny_camvid (6 train and 2 val images, 96x64, blocky random labels),
    with street scenes for images: crops of the bundled CamVid samples, in which the built-in weights
    find several classes, so that options which move class boundaries show in the confusion matrix."""
    root = tmp_path_factory.mktemp("street_camvid")
    rng = np.random.default_rng(0)
    samples = sorted(SAMPLE.parent.glob("camvid_sample_*.png"))
    for split, n in (("train", 6), ("val", 2)):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for i in range(n):
            scene = Image.open(samples[i % len(samples)]).convert("RGB")  # 480x360
            left, top = 40 * (i // len(samples)), 30 * (i // len(samples))
            scene.crop((left, top, left + 360, top + 240)).resize((96, 64), Image.BILINEAR).save(
                root / split / f"{i:03d}.png")
            label = rng.integers(0, 12, size=(4, 6)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
            Image.fromarray(label).save(root / f"{split}annot" / f"{i:03d}.png")
    return root


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
