"""Command-line options that change results, each checked against an independent oracle: a naive
computation by hand with the eager model, a closed form, or the file read back.

The fast built-in weights run with ``--runtime torch --precision fp32``: no conversion, and fp32 is
the eager model's arithmetic, so the hand-made oracle agrees with the command up to float rounding
(a few pixels at most); each test also shows that the option's effect is larger than that tolerance.
"""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hub.official_format import assert_loads_as, authors_checkpoint
from hyperseg.cli import main as cli_main

from .oracle import MISMATCH, SAMPLE, naive_confusion, naive_labels, read_labels, read_rgb, run_eval, run_predict



# ---------------------------------------------------------------------------------------------- predict

@pytest.mark.parametrize("option, tta", [
    (["--flip"], dict(flip=True)),
    (["--scales", "0.75,1.25"], dict(scales=(0.75, 1.25))),
])
def test_predict_test_time_augmentation_equals_a_naive_computation(eager, street, tmp_path, option, tta):
    run_predict([street, *option], tmp_path / "out")
    got = read_labels(tmp_path / "out" / "street.png")
    image = read_rgb(street)
    expected, plain = naive_labels(eager, image, **tta), naive_labels(eager, image)
    assert (got != expected).mean() <= MISMATCH
    assert (plain != expected).mean() > 5 * MISMATCH  # the option changes more than the tolerance hides


def test_predict_max_size_segments_smaller_and_scales_the_labels_back(eager, tmp_path):
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((96, 64), Image.BILINEAR))
    Image.fromarray(image).save(tmp_path / "wide.png")
    run_predict([tmp_path / "wide.png", "--max-size", "48"], tmp_path / "out")
    got = read_labels(tmp_path / "out" / "wide.png")
    assert got.shape == (64, 96)
    # closed form: segmented at 32x48, then scaled back by pixel repetition, so every 2x2 block is one class
    np.testing.assert_array_equal(got, got[::2, ::2].repeat(2, 0).repeat(2, 1))
    small = np.asarray(Image.fromarray(image).resize((48, 32), Image.BILINEAR, reducing_gap=None))
    expected = naive_labels(eager, small)
    # the image was shrunk by another resize than PIL's: at 48x32 that moves class boundaries by a pixel
    assert (got[::2, ::2] != expected).mean() <= 0.06
    full = naive_labels(eager, image)
    assert (full != full[::2, ::2].repeat(2, 0).repeat(2, 1)).any()  # at full size the labels are not blocky


@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_predict_alpha_blends_image_and_palette_as_stated(street, tmp_path, alpha):
    run_predict([street, "--alpha", alpha, "--no-legend"], tmp_path / "out")
    labels = read_labels(tmp_path / "out" / "street.png")
    overlay = read_rgb(tmp_path / "out" / "street_overlay.jpg").astype(float)
    image = read_rgb(street).astype(float)
    palette = np.asarray(hyperseg.get_weights("camvid_fast").meta()["palette"], float)

    def blend(a):
        return (image * (1 - a) + palette[labels] * a).round()

    assert overlay.shape == image.shape  # --no-legend: a single input gets no legend panel
    error = np.abs(overlay - blend(alpha)).mean()
    assert error < 6  # JPEG, most of it along class boundaries
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
    run_predict([folder, "--legend"], tmp_path / "legend")  # two inputs: no legend unless asked for
    for name in ("a", "b"):
        labels = read_labels(tmp_path / "legend" / f"{name}.png")
        overlay = read_rgb(tmp_path / "legend" / f"{name}_overlay.jpg")
        present = np.unique(labels)
        assert overlay.shape[1] > 80 and overlay.shape[0] == max(64, 8 + 18 * len(present))
        panel = overlay[:, 80:]
        for c in present:  # a swatch per class in the label map (14x14 inside its outline)
            assert _swatches(panel, palette[c]) >= 100, c
        for c in set(range(len(palette))) - set(present.tolist()):
            assert _swatches(panel, palette[c]) < 20, c
    # --no-legend: test_predict_alpha_blends_image_and_palette_as_stated, whose single input would get one


def test_predict_batch_size_groups_same_size_images_and_keeps_theirread_labels(eager, street, tmp_path, monkeypatch):
    from hyperseg.infer.predictor import Predictor

    folder = tmp_path / "in"
    folder.mkdir()
    image = read_rgb(street)
    for i, picture in enumerate([image, image[:, ::-1], image[::-1], image[:48]]):  # the last one smaller
        Image.fromarray(np.ascontiguousarray(picture)).save(folder / f"{i}.png")
    batches = []
    segment = Predictor.segment

    def spy(self, images):
        batches.append([a.shape for a in images])
        return segment(self, images)

    monkeypatch.setattr(Predictor, "segment", spy)
    run_predict([folder, "--batch-size", "2", "--no-overlap"], tmp_path / "out")
    assert [len(b) for b in batches] == [2, 1, 1]  # 0+1, then 2 alone (the batch is full), 3 (another size)
    for i in range(4):
        picture = read_rgb(folder / f"{i}.png")
        got = read_labels(tmp_path / "out" / f"{i}.png")
        assert (got != naive_labels(eager, picture)).mean() <= MISMATCH


# ------------------------------------------------------------------------------------------------- eval

@pytest.mark.parametrize("option, tta, batches", [
    (["--flip"], dict(flip=True), [1, 1]),
    (["--scales", "0.75,1.25"], dict(scales=(0.75, 1.25)), [1, 1]),
    (["--batch-size", "2"], {}, [2]),
])
def test_eval_options_give_the_confusion_matrix_of_a_naive_computation(eager, tiny_camvid, plain_confusion, tmp_path,
                                                                       monkeypatch, option, tta, batches):
    import importlib

    evaluate_module = importlib.import_module("hyperseg.train.evaluate")
    seen, predict_labels = [], evaluate_module.predict_labels

    def spy(model, image, **kwargs):
        seen.append(image.shape[0])
        return predict_labels(model, image, **kwargs)

    monkeypatch.setattr(evaluate_module, "predict_labels", spy)
    got = np.asarray(run_eval(["--data", tiny_camvid, "--split", "val", *option], tmp_path / "m.json")["confusion_matrix"])
    expected = naive_confusion(eager, tiny_camvid, **tta) if tta else plain_confusion
    pixels = expected.sum()
    assert got.sum() == pixels and seen == batches
    assert np.abs(got - expected).sum() <= 2 * MISMATCH * pixels
    if tta:  # the option changes more than the tolerance hides
        assert np.abs(plain_confusion - expected).sum() > 10 * MISMATCH * pixels


def test_eval_precision_fp32_is_the_eager_models_arithmetic_and_bf16_another(tiny_camvid, plain_confusion, tmp_path,
                                                                            capsys):
    from hyperseg.runtime.torch_runtime import bf16_supported

    args = ["--data", tiny_camvid, "--split", "val", "--model", "camvid_fast", "--runtime", "torch"]
    fp32 = np.asarray(run_eval([*args, "--precision", "fp32"], tmp_path / "fp32.json", model=[])["confusion_matrix"])
    assert "model: torch fp32" in capsys.readouterr().err
    np.testing.assert_array_equal(fp32, plain_confusion)
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    bf16 = np.asarray(run_eval([*args, "--precision", "bf16"], tmp_path / "bf16.json", model=[])["confusion_matrix"])
    assert "model: torch bf16" in capsys.readouterr().err
    assert bf16.sum() == fp32.sum() and not np.array_equal(bf16, fp32)  # bf16 arithmetic moves some boundaries


def _folder_dataset(tiny_camvid, root: Path) -> Path:
    """tiny_camvid's val split in the folder layout (index masks, void as 255), with a classes.yaml
    of names that no option should show."""
    for sub in ("images", "masks"):
        (root / "val" / sub).mkdir(parents=True)
    for path in sorted((tiny_camvid / "val").glob("*.png")):
        shutil.copy(path, root / "val" / "images" / path.name)
        label = read_labels(tiny_camvid / "valannot" / path.name).copy()
        label[label == 11] = 255
        Image.fromarray(label).save(root / "val" / "masks" / path.name)
    (root / "classes.yaml").write_text("\n".join(f"- default{i}" for i in range(11)) + "\n")
    return root


NAMES = [f"mine{i}" for i in range(11)]


def test_eval_classes_file_names_the_classes_of_a_folder_dataset(tiny_camvid, plain_confusion, tmp_path):
    root = _folder_dataset(tiny_camvid, tmp_path / "data")
    (tmp_path / "mine.yaml").write_text("classes: [" + ", ".join(NAMES) + "]\n")
    got = run_eval(["--data", root, "--dataset", "folder", "--split", "val", "--classes-file", tmp_path / "mine.yaml"],
                tmp_path / "m.json")
    assert list(got["per_class_iou"]) == NAMES  # the file's names, in its order
    m = plain_confusion
    union = m.sum(0) + m.sum(1) - np.diag(m)
    for name, tp, u in zip(NAMES, np.diag(m), union):
        assert got["per_class_iou"][name] == (None if u == 0 else pytest.approx(100 * tp / u, abs=2.0)), name


def test_eval_confusion_image_draws_the_row_normalised_matrix(tiny_camvid, tmp_path):
    cm = tmp_path / "cm.png"
    got = run_eval(["--data", tiny_camvid, "--split", "val", "--confusion-image", cm], tmp_path / "m.json")
    plt = pytest.importorskip("matplotlib.pyplot")
    picture = np.asarray(Image.open(cm).convert("RGB")).astype(int)
    n = 11
    assert picture.shape[:2] == (round((0.5 * n + 2.5) * 120), round((0.5 * n + 3) * 120))  # the figure's inches at 120 dpi
    matrix = np.asarray(got["confusion_matrix"], float)
    normalised = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    colours = {tuple(np.round(np.asarray(plt.get_cmap("Blues")(v)[:3]) * 255).astype(int)) for v in normalised.ravel()}
    cell = picture.shape[0] * picture.shape[1] / (4 * n * n)  # a cell covers far more pixels than this

    def count(colour):
        return int((np.abs(picture - np.asarray(colour)).sum(-1) <= 3).sum())

    for colour in colours:  # each value's colour fills a cell (several cells share the colour of 0)
        assert count(colour) >= cell, colour
    assert len(colours) >= 3


# ------------------------------------------------------------------------------------------- check-data

def _pixel_shares(names, labels) -> str:
    """check-data's pixel line, computed by hand from the masks."""
    values = np.concatenate([label.reshape(-1) for label in labels])
    total = values.size
    shares = "  ".join(f"{name} {100 * (values == c).sum() / total:.1f}%" for c, name in enumerate(names))
    return f"  pixels: {shares}  ignored {100 * (values == 255).sum() / total:.1f}%"


def test_check_data_classes_file(tiny_camvid, tmp_path, capsys):
    root = _folder_dataset(tiny_camvid, tmp_path / "data")
    masks = [read_labels(p) for p in sorted((root / "val" / "masks").glob("*.png"))]
    (tmp_path / "mine.yaml").write_text("\n".join(f"- {n}" for n in NAMES) + "\n")
    args = ["check-data", "--data", str(root), "--dataset", "folder", "--splits", "val", "--classes-file"]
    assert cli_main([*args, str(tmp_path / "mine.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"val: {len(masks)} pairs read, 0 bad" in out and _pixel_shares(NAMES, masks) in out.splitlines()
    (tmp_path / "three.yaml").write_text("[a, b, c]\n")  # every mask holds classes above 2
    assert all(np.unique(m[m != 255]).max() > 2 for m in masks)
    assert cli_main([*args, str(tmp_path / "three.yaml")]) == 2
    out, err = capsys.readouterr()
    assert f"val: 0 pairs read, {len(masks)} bad" in out and err.count("outside 0..2") == len(masks)


def test_check_data_limit_reads_only_the_first_pairs(tiny_camvid, tmp_path, capsys):
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    (root / "train" / "003.png").write_bytes(b"not a png")  # the fourth pair in sorted order
    labels = [read_labels(root / "trainannot" / f"{i:03d}.png").copy() for i in range(3)]
    for label in labels:
        label[label == 11] = 255
    names = hyperseg.get_weights("camvid").class_names
    args = ["check-data", "--data", str(root), "--splits", "train", "--limit"]
    assert cli_main([*args, "3"]) == 0
    out = capsys.readouterr().out
    assert "train: 3 pairs read, 0 bad" in out and _pixel_shares(names, labels) in out.splitlines()
    assert cli_main([*args, "4"]) == 2
    out, err = capsys.readouterr()
    assert "train: 3 pairs read, 1 bad" in out and "003.png" in err


# ---------------------------------------------------------------------------- export, convert, --version

def test_export_opset_and_calibration_count(tmp_path, file_opens):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    files = [calibration / f"{i}.png" for i in range(5)]
    for path in files:
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    out = tmp_path / "m.onnx"
    with file_opens.watch():
        assert cli_main(["export", "-m", "camvid_fast", "--out", str(out), "--size", "64x64", "--precision", "int8",
                         "--calibration", str(calibration), "--calibration-count", "3", "--opset", "19"]) == 0
    opened = {Path(p).name for p in file_opens.paths() if isinstance(p, (str, Path)) and Path(p).parent == calibration}
    assert opened == {"0.png", "2.png", "4.png"}  # 3 of 5 spread evenly: the first, the middle, the last
    versions = {o.domain: o.version for o in onnx.load(str(out)).opset_import}
    assert versions[""] == 19


def test_convert_overwrite_replaces_an_existing_output(tmp_path, capsys):
    source, ckpt = authors_checkpoint("hyperseg_s_camvid")
    torch.save(ckpt, tmp_path / "authors.pth")
    out = tmp_path / "ours.pt"
    out.write_bytes(b"an older conversion")
    assert cli_main(["convert", str(tmp_path / "authors.pth"), str(out), "--overwrite"]) == 0
    assert str(out) in capsys.readouterr().out
    assert_loads_as(hyperseg.load_model(out), source)


def test_version_is_the_projects(capsys):
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    with pytest.raises(SystemExit) as exit:
        cli_main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"hyperseg {project['version']}"
