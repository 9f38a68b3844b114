"""The shipped CamVid model: loads offline, predicts the bundled sample, reproduces its val mIoU."""
import json

import numpy as np
import pytest
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main


BUILTIN = [name for name in hyperseg.list_weights() if hyperseg.get_weights(name).builtin]


def test_the_default_and_the_train_only_model_ship():
    assert {"camvid", "camvid_train", "camvid_fast", "camvid_fast_train"} <= set(BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_model_metadata(name):
    model = hyperseg.load_model(name)
    record = hyperseg.get_weights(name)
    assert not model.training and model.num_classes == 11
    meta = model.meta
    assert meta["class_names"][0] == "sky" and len(meta["palette"]) == 11
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["val_miou"] >= 0.66
    # the file's own recipe agrees with the record, and a split it trained on is flagged
    train_splits = meta["recipe"]["data"]["train_split"].split("+")
    assert meta["recipe"]["data"]["train_split"] == record.recipe["train_split"]
    assert meta["recipe"]["optim"]["max_iters"] == record.recipe["iterations"]
    assert meta["val_in_training"] == ("val" in train_splits)
    assert record.recipe["command"].startswith("hyperseg train")


def test_default_predict_writes_label_png_and_overlay(tmp_path, capsys):
    assert cli_main(["predict", "--out", str(tmp_path)]) == 0
    label = Image.open(tmp_path / "camvid_sample_1.png")
    assert label.mode == "P" and label.size == (480, 360)
    classes = np.unique(np.asarray(label))
    assert classes.max() <= 10 and {0, 1, 3}.issubset(set(classes.tolist()))  # sky, building, road
    overlay = Image.open(tmp_path / "camvid_sample_1_overlay.jpg")
    assert overlay.size[1] == 360 and overlay.size[0] > 480  # a single image gets a colour legend on the right
    panel = np.asarray(overlay.convert("RGB"))[:, 480:].reshape(-1, 3).astype(int)
    palette = hyperseg.load_model("camvid").meta["palette"]
    for c in classes:  # every class in the label map has its swatch (JPEG: colours within a small distance)
        assert (np.abs(panel - np.array(palette[c])).sum(1) < 30).sum() >= 50, c  # of 225 swatch pixels


# The train-only models' numbers are the honest ones (val unseen) and run by default; those of the
# models trained on val too (a fit) are the same code path for a minute more each, so they run with -m slow.
def _trained_on_val(name: str) -> bool:
    return hyperseg.get_weights(name).metrics["val_in_training"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if _trained_on_val(n) else [])
                                  for n in BUILTIN])
def test_eval_reproduces_shipped_val_miou(name, camvid_root, tmp_path):
    out = tmp_path / "metrics.json"
    assert cli_main(["eval", "-m", name, "--data", str(camvid_root), "--split", "val", "--out", str(out),
                     "--workers", "0", "--runtime", "eager"]) == 0  # the shipped number was measured on the eager model
    metrics = json.loads(out.read_text())
    shipped = hyperseg.load_model(name).meta
    # a few boundary pixels may flip with the thread count (summation order), hence not exact
    assert metrics["unit"] == "percent"  # as the console prints them
    assert metrics["miou"] == pytest.approx(shipped["val_miou"] * 100, abs=1e-3)
    for name, iou in shipped["val_per_class_iou"].items():
        assert metrics["per_class_iou"][name] == pytest.approx(iou * 100, abs=1e-2)


def test_a_record_without_palette_keeps_the_models_own(tmp_path, monkeypatch):
    """A record may name classes without colours: the model keeps the palette it has, and its
    metadata stays valid (an empty palette for three classes would make every exported file unreadable)."""
    from hyperseg import pretrained
    from hyperseg.meta_schema import check_model_meta

    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    model.meta.update(class_names=["x", "y", "z"], palette=[[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    hyperseg.save_model(model, tmp_path / "m.pt")
    record = pretrained.Weights(name="no_palette", architecture="hyperseg", file=str(tmp_path / "m.pt"),
                                class_names=("a", "b", "c"))
    assert "palette" not in record.meta()
    monkeypatch.setitem(pretrained._REGISTRY, record.name, record)
    loaded = hyperseg.load_model("no_palette")
    assert loaded.meta["class_names"] == ["a", "b", "c"] and loaded.meta["palette"] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    check_model_meta(loaded.meta, "no_palette")
