"""Command-line options that change results, each checked against an independent oracle: a naive
computation by hand with the eager model, a closed form, or the file read back.

The fast built-in weights run with ``--runtime torch --precision fp32``: no conversion, and fp32 is
the eager model's arithmetic, so the hand-made oracle agrees with the command up to float rounding
(a few pixels at most); each test also shows that the option's effect is larger than that tolerance.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

MODEL = ["--model", "camvid_fast", "--runtime", "torch", "--precision", "fp32"]
SAMPLE = Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png"
MISMATCH = 0.003  # share of pixels the command and the hand-made oracle may disagree on (float rounding)


@pytest.fixture(scope="module")
def eager():
    return hyperseg.load_model("camvid_fast").eval()


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    """The bundled street scene at 80x64: several classes, segmented in a moment."""
    path = tmp_path_factory.mktemp("street") / "street.png"
    Image.open(SAMPLE).convert("RGB").resize((80, 64), Image.BILINEAR).save(path)
    return path


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _labels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@torch.no_grad()
def naive_labels(model, image: np.ndarray, *, flip=False, scales=(1.0,), resize_uint8=True) -> np.ndarray:
    """The oracle: resize to the size the model sees (its input scale; predict resizes the uint8
    image, eval the normalised one), normalise, run each scale (and its mirror image), average the
    softmax at the image's size, argmax."""
    h, w = image.shape[:2]
    s0 = model.meta.get("input_scale", 1.0)
    seen = (max(min(h, 32), round(h * s0)), max(min(w, 32), round(w * s0)))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    if resize_uint8:
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    x = (x.float() / 255 - torch.tensor(model.meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(model.meta["std"]).view(1, 3, 1, 1)
    if not resize_uint8:
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    total = 0
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for mirror in ([False, True] if flip else [False]):
            logits = model(xs.flip(-1) if mirror else xs)
            logits = logits.flip(-1) if mirror else logits
            total = total + F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False).softmax(1)
    return total.argmax(1)[0].numpy().astype(np.uint8)


def _predict(args, out: Path, capsys=None) -> None:
    code = cli_main(["predict", *[str(a) for a in args], "--out", str(out), *MODEL])
    assert code == 0, capsys.readouterr().err if capsys else code


# ---------------------------------------------------------------------------------------------- predict

@pytest.mark.parametrize("option, tta", [
    (["--flip"], dict(flip=True)),
    (["--scales", "0.75,1.25"], dict(scales=(0.75, 1.25))),
])
def test_predict_test_time_augmentation_equals_a_naive_computation(eager, street, tmp_path, option, tta):
    _predict([street, *option], tmp_path / "out")
    got = _labels(tmp_path / "out" / "street.png")
    image = _rgb(street)
    expected, plain = naive_labels(eager, image, **tta), naive_labels(eager, image)
    assert (got != expected).mean() <= MISMATCH
    assert (plain != expected).mean() > 5 * MISMATCH  # the option changes more than the tolerance hides


def test_predict_max_size_segments_smaller_and_scales_the_labels_back(eager, tmp_path):
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((96, 64), Image.BILINEAR))
    Image.fromarray(image).save(tmp_path / "wide.png")
    _predict([tmp_path / "wide.png", "--max-size", "48"], tmp_path / "out")
    got = _labels(tmp_path / "out" / "wide.png")
    assert got.shape == (64, 96)
    # closed form: segmented at 32x48, then scaled back by pixel repetition, so every 2x2 block is one class
    np.testing.assert_array_equal(got, got[::2, ::2].repeat(2, 0).repeat(2, 1))
    small = np.asarray(Image.fromarray(image).resize((48, 32), Image.BILINEAR, reducing_gap=None))
    expected = naive_labels(eager, small)
    assert (got[::2, ::2] != expected).mean() <= 0.03  # the image was shrunk by another resize
    full = naive_labels(eager, image)
    assert (full != full[::2, ::2].repeat(2, 0).repeat(2, 1)).any()  # at full size the labels are not blocky


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_predict_alpha_blends_image_and_palette_as_stated(street, tmp_path, alpha):
    _predict([street, "--alpha", alpha, "--no-legend"], tmp_path / "out")
    labels = _labels(tmp_path / "out" / "street.png")
    overlay = _rgb(tmp_path / "out" / "street_overlay.jpg").astype(float)
    image = _rgb(street).astype(float)
    palette = np.asarray(hyperseg.get_weights("camvid_fast").meta()["palette"], float)

    def blend(a):
        return (image * (1 - a) + palette[labels] * a).round()

    assert overlay.shape == image.shape
    error = np.abs(overlay - blend(alpha)).mean()
    assert error < 4  # JPEG
    assert np.abs(overlay - blend(0.5)).mean() > 3 * error  # the default opacity would be far off


def _swatches(panel: np.ndarray, colour) -> int:
    """How many pixels of ``panel`` have ``colour`` (JPEG: within a small distance)."""
    return int((np.abs(panel.astype(int) - np.asarray(colour)).sum(-1) < 30).sum())


def test_predict_legend_and_no_legend(street, tmp_path):
    palette = hyperseg.get_weights("camvid_fast").meta()["palette"]
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(street, folder / name)
    _predict([folder, "--legend"], tmp_path / "legend")  # two inputs: no legend unless asked for
    for name in ("a", "b"):
        labels = _labels(tmp_path / "legend" / f"{name}.png")
        overlay = _rgb(tmp_path / "legend" / f"{name}_overlay.jpg")
        present = np.unique(labels)
        assert overlay.shape[1] > 80 and overlay.shape[0] == max(64, 8 + 18 * len(present))
        panel = overlay[:, 80:]
        for c in present:  # a swatch per class in the label map (14x14 inside its outline)
            assert _swatches(panel, palette[c]) >= 100, c
        for c in set(range(len(palette))) - set(present.tolist()):
            assert _swatches(panel, palette[c]) < 20, c
    _predict([street, "--no-legend"], tmp_path / "none")  # one input: a legend unless refused
    assert _rgb(tmp_path / "none" / "street_overlay.jpg").shape == (64, 80, 3)


def test_predict_batch_size_groups_same_size_images_and_keeps_their_labels(eager, street, tmp_path, monkeypatch):
    from hyperseg.engine.predict import Predictor

    folder = tmp_path / "in"
    folder.mkdir()
    image = _rgb(street)
    for i, picture in enumerate([image, image[:, ::-1], image[::-1], image[:48]]):  # the last one smaller
        Image.fromarray(np.ascontiguousarray(picture)).save(folder / f"{i}.png")
    batches = []
    segment = Predictor.segment

    def spy(self, images):
        batches.append([a.shape for a in images])
        return segment(self, images)

    monkeypatch.setattr(Predictor, "segment", spy)
    _predict([folder, "--batch-size", "2", "--no-overlap"], tmp_path / "out")
    assert [len(b) for b in batches] == [2, 1, 1]  # 0+1, then 2 alone (the batch is full), 3 (another size)
    for i in range(4):
        picture = _rgb(folder / f"{i}.png")
        got = _labels(tmp_path / "out" / f"{i}.png")
        assert (got != naive_labels(eager, picture)).mean() <= MISMATCH
