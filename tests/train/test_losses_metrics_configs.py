"""Losses, metrics, transforms, the sample stream and configs, against independent oracles."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hyperseg

from hyperseg.data.sampler import StepSampler
from hyperseg.data.transforms import TrainTransform, sample_generator
from hyperseg.train.config import ConfigError, load_config
from hyperseg.runtime.inference import predict_logits
from hyperseg.train.losses import BootstrappedCrossEntropy, build_loss
from hyperseg.train.metrics import ConfusionMatrix


def _bootstrapped_oracle(logits, target, k, thresh, weight=None):
    losses = []
    for b in range(logits.shape[0]):
        pixel = F.cross_entropy(logits[b : b + 1], target[b : b + 1], weight=weight, ignore_index=255,
                                reduction="none").flatten()
        ranked = sorted(pixel.tolist(), reverse=True)
        chosen = [v for v in ranked if v > thresh] if ranked[k] > thresh else ranked[:k]
        losses.append(sum(chosen) / len(chosen))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("scale", [0.05, 3.0])  # easy images take the top-k branch, hard ones the threshold branch
def test_bootstrapped_ce_matches_per_image_oracle(scale):
    logits = torch.randn(3, 4, 8, 10, dtype=torch.float64) * scale
    target = torch.randint(0, 4, (3, 8, 10))
    target[0, :2] = 255
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    loss = BootstrappedCrossEntropy(k=20, threshold=1.0, class_weights=weight.tolist())(logits, target)
    assert loss.item() == pytest.approx(_bootstrapped_oracle(logits, target, 20, 1.0, weight), rel=1e-9)


def _lovasz_extension_oracle(probas, target):
    """Berman et al.'s definition, with explicit sets: for each class present, sort the pixels by error
    |fg - p| and sum error_i * (J(S_i) - J(S_i-1)), J(M) = |M| / |fg | M| the Jaccard loss of the
    mispredicted set M; then average over the classes present. Void (255) pixels are left out."""
    keep = target.flatten() != 255
    p = probas.permute(0, 2, 3, 1).reshape(-1, probas.shape[1])[keep].tolist()
    y = target.flatten()[keep].tolist()
    per_class = []
    for c in sorted(set(y)):
        fg = {i for i, t in enumerate(y) if t == c}
        err = [abs((i in fg) - p[i][c]) for i in range(len(y))]
        order = sorted(range(len(y)), key=lambda i: -err[i])
        total, taken, prev = 0.0, set(), 0.0
        for i in order:
            taken.add(i)
            jac = len(taken) / len(fg | taken)
            total += err[i] * (jac - prev)
            prev = jac
        per_class.append(total)
    return sum(per_class) / len(per_class)


def test_lovasz_term_matches_the_set_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6) * 2  # float32: the trainer's loss dtype (smp's Lovasz is float32 only)
    target = torch.randint(0, 3, (2, 5, 6))  # class 3 absent: it does not count
    target[1, 0] = 255
    ce = F.cross_entropy(logits, target, ignore_index=255)
    loss = build_loss("ce", lovasz_weight=0.7, lovasz_stride=1)(logits, target)
    oracle = ce.item() + 0.7 * _lovasz_extension_oracle(logits.softmax(1), target)
    assert loss.item() == pytest.approx(oracle, rel=1e-5)
    # stride 2: the Lovasz term on rows and columns 0, 2, 4; cross-entropy still on every pixel
    loss = build_loss("ce", lovasz_weight=0.7, lovasz_stride=2)(logits, target)
    sub = logits.softmax(1)[:, :, [0, 2, 4]][..., [0, 2, 4]], target[:, [0, 2, 4]][..., [0, 2, 4]]
    assert loss.item() == pytest.approx(ce.item() + 0.7 * _lovasz_extension_oracle(*sub), rel=1e-5)


def test_lovasz_term_on_hard_predictions_is_one_minus_the_present_class_iou():
    # on 0/1 probabilities the Lovasz extension equals the Jaccard loss itself: 1 - IoU per class
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, size=(2, 6, 7))
    gt = np.where(rng.random((2, 6, 7)) < 0.7, pred, rng.integers(0, 3, size=(2, 6, 7)))
    gt[0, 0, :3] = 255
    logits = torch.from_numpy(np.eye(3, dtype=np.float32)[pred].transpose(0, 3, 1, 2) * 40.0)  # softmax: one-hot
    target = torch.from_numpy(gt)
    valid = gt != 255
    ious = [np.sum((pred == c) & (gt == c) & valid) / np.sum(((pred == c) | (gt == c)) & valid)
            for c in range(3) if np.any((gt == c) & valid)]
    lovasz = build_loss("ce", lovasz_weight=1.0, lovasz_stride=1)(logits, target) - F.cross_entropy(logits, target, ignore_index=255)
    assert lovasz.item() == pytest.approx(1 - np.mean(ious), abs=1e-6)


def test_cross_entropy_ignores_255():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    full = build_loss("ce")(logits, target)
    target2 = target.clone()
    target2[0, 0, 0] = 255
    keep = target2 != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target2[keep])
    assert build_loss("ce")(logits, target2).item() == pytest.approx(manual.item(), rel=1e-6)
    assert full.item() != pytest.approx(manual.item(), rel=1e-9)


def test_confusion_matrix_against_numpy():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(3, 20, 30))
    gt = rng.integers(0, 5, size=(3, 20, 30))
    gt[gt == 4] = 255  # class 4 never in the ground truth...
    pred[pred == 3] = 0  # ...and class 3 never predicted
    cm = ConfusionMatrix(5)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    out = cm.compute(["a", "b", "c", "d", "e"])
    # independent oracle: per-class IoU from boolean masks
    valid = gt != 255
    ious = {}
    for c in range(5):
        inter = np.sum((pred == c) & (gt == c) & valid)
        union = np.sum(((pred == c) | (gt == c)) & valid)
        ious[c] = inter / union if union else None
    for c, name in enumerate("abcde"):
        assert out["per_class_iou"][name] == (None if ious[c] is None else pytest.approx(ious[c]))
    present = [v for v in ious.values() if v is not None]
    assert out["miou"] == pytest.approx(np.mean(present))
    assert out["miou_all_classes"] == pytest.approx(sum(present) / 5, rel=1e-5)
    assert out["pixel_acc"] == pytest.approx(np.mean(pred[valid] == gt[valid]))
    assert out["pixels"] == valid.sum()


def test_train_transform_keeps_image_and_label_in_sync():
    h, w = 80, 120
    # 20x20 blocks of one class; the image colour encodes the class, so any geometric desync shows up.
    label = torch.randint(0, 5, (h // 20, w // 20)).repeat_interleave(20, 0).repeat_interleave(20, 1)
    image = (label * 50).to(torch.uint8).unsqueeze(0).repeat(3, 1, 1)
    exact = TrainTransform(mean=[0, 0, 0], std=[1, 1, 1], crop_size=[48, 64], scale_prob=0.0, hflip=0.5)
    resized = TrainTransform(mean=[0, 0, 0], std=[1, 1, 1], crop_size=[48, 64], scale_range=[0.5, 2.0],
                             scale_prob=1.0, hflip=0.5)
    for key in range(10):
        img, lbl = exact(image, label, sample_generator(0, key))
        assert img.shape == (3, 48, 64) and lbl.shape == (48, 64) and lbl.dtype == torch.int64
        colour = (img[0] * 255).round().long()
        valid = lbl != 255
        assert torch.equal(colour[valid], lbl[valid] * 50)
        assert (colour[~valid] == 0).all()  # padding: image 0, label 255
        img, lbl = resized(image, label, sample_generator(0, key))
        colour = (img[0] * 255).round().long()
        valid = lbl != 255
        # bicubic image vs nearest label differ only on block borders
        agree = ((colour[valid] - lbl[valid] * 50).abs() < 25).float().mean()
        assert agree > 0.9
    a = resized(image, label, sample_generator(0, 3))
    b = resized(image, label, sample_generator(0, 3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_step_sampler_resumes_and_shards():
    full = list(StepSampler(10, batch_size=2, accum_steps=2, seed=1, max_steps=6))
    resumed = list(StepSampler(10, batch_size=2, accum_steps=2, seed=1, start_step=3, max_steps=6))
    assert resumed == full[3 * 2 :]
    ranks = [list(StepSampler(10, batch_size=1, accum_steps=2, seed=1, max_steps=6, rank=r, world_size=2)) for r in range(2)]
    merged = sorted(k for r in ranks for batch in r for k in batch)
    assert merged == sorted(k for batch in full for k in batch)
    epoch0 = sorted(k for batch in full[:5] for k in batch)  # 5 micro-batches of 2 = one epoch of 10
    assert epoch0 == list(range(10))


def test_config_overrides_and_unknown_keys(tmp_path):
    cfg = load_config(None, ["optim.lr=0.01", "data.crop_size=[64, 96]", "model.options.encoder_name=resnet18"])
    assert cfg.optim.lr == 0.01 and cfg.data.crop_size == [64, 96] and cfg.model.options["encoder_name"] == "resnet18"
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(None, ["optim.learning_rate=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 0.1\n  momentum: 0.9\n")
    with pytest.raises(ConfigError, match="bad.yaml.*optim.momentum"):
        load_config(bad)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["lr=0.1"])


class _Columns(torch.nn.Module):
    """Logits that depend on the pixel column only, not on the input."""

    num_classes = 2

    def forward(self, x):
        col = torch.linspace(-1, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([col, -col], 1) + x[:, :1] * 0


def test_tta_flip_and_sliding_window():
    x = torch.randn(1, 3, 20, 30)
    pointwise = torch.nn.Conv2d(3, 4, 1)
    pointwise.num_classes = 4
    with torch.no_grad():
        # a pointwise model commutes with flips: flip-TTA gives its own softmax
        torch.testing.assert_close(predict_logits(pointwise, x, flip=True), pointwise(x).softmax(1))
        plain = _Columns()(x)
        expected = (plain.softmax(1) + plain.flip(-1).softmax(1)) / 2
        torch.testing.assert_close(predict_logits(_Columns(), x, flip=True), expected)
        # windows of a pointwise model tile back to the full-image result
        torch.testing.assert_close(predict_logits(pointwise, x, window=[8, 12], stride=[5, 7]), pointwise(x))
        # a pointwise model commutes with resizing (bilinear weights sum to 1, so the bias passes too):
        # the half-scale pass is the model on the input taken down to 10x15 and back up
        down_up = F.interpolate(F.interpolate(x, size=(10, 15), mode="bilinear", align_corners=False),
                                size=(20, 30), mode="bilinear", align_corners=False)
        assert (down_up - x).abs().max() > 0.5  # the half scale is seen: its pass differs from the full one
        expected = (pointwise(x).softmax(1) + pointwise(down_up).softmax(1)) / 2
        torch.testing.assert_close(predict_logits(pointwise, x, scales=[1.0, 0.5]), expected)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")))
def test_recipes_load_and_build(recipe):
    import hyperseg
    from hyperseg.data.transforms import TrainTransform

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / recipe)
    if cfg.model.name.startswith("smp:"):
        pytest.importorskip("segmentation_models_pytorch", reason="the smp extra is not installed")
    else:
        assert cfg.model.name in hyperseg.list_models()
    model = hyperseg.create_model(cfg.model.name, num_classes=3, **cfg.model.options)  # every option is accepted
    assert model.num_classes == 3
    tf = TrainTransform(mean=[0.5] * 3, std=[0.5] * 3, crop_size=cfg.data.crop_size, scale_range=cfg.data.scale_range,
                        scale_prob=cfg.data.scale_prob, hflip=cfg.data.hflip, color_jitter=cfg.data.color_jitter,
                        rotation=cfg.data.rotation, pad_only=cfg.data.pad_only)
    img, lbl = tf(torch.zeros(3, 100, 140, dtype=torch.uint8), torch.zeros(100, 140, dtype=torch.long),
                  sample_generator(0, 0))
    if cfg.data.crop_size and not cfg.data.pad_only:
        assert tuple(img.shape[-2:]) == tuple(cfg.data.crop_size) == tuple(lbl.shape)


def test_predict_never_replaces_an_input(tmp_path, capsys):
    from hyperseg.cli import main as cli_main

    photos = tmp_path / "photos"
    photos.mkdir()
    sample = sorted((Path(hyperseg.__file__).parent / "assets").glob("*.png"))[0]
    original = sample.read_bytes()
    (photos / "photo.png").write_bytes(original)
    assert cli_main(["predict", str(photos), "--out", str(photos), "--runtime", "torch"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    assert (photos / "photo.png").read_bytes() == original and sorted(p.name for p in photos.iterdir()) == ["photo.png"]


def test_same_stem_inputs_get_distinct_outputs(tmp_path):
    from hyperseg.cli import main as cli_main
    from hyperseg.infer.predictor import output_names

    assert output_names([Path("a/x.png"), Path("a/x.jpg"), Path("b/x.png"), Path("y.png")]) == \
        ["x_png_1", "x_jpg", "x_png_2", "y"]
    photos = tmp_path / "photos"
    photos.mkdir()
    sample = sorted((Path(hyperseg.__file__).parent / "assets").glob("*.png"))
    Image.open(sample[0]).save(photos / "scene.png")
    Image.open(sample[1]).convert("RGB").save(photos / "scene.jpg", quality=95)
    out = tmp_path / "out"
    assert cli_main(["predict", str(photos), "--out", str(out), "--runtime", "torch"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name not in ("hyperseg-predict.json", ".hyperseg-predict")) == [
        "scene_jpg.png", "scene_jpg_overlay.jpg",
                                                     "scene_png.png", "scene_png_overlay.jpg"]
    assert not np.array_equal(np.asarray(Image.open(out / "scene_png.png")), np.asarray(Image.open(out / "scene_jpg.png")))
