"""A model that runs on images resized by ``input_scale``: inference, training transform, checkpoint."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import hyperseg
from hyperseg.data.transforms import TrainTransform
from hyperseg.runtime.inference import predict_logits
from hyperseg.infer.predictor import Predictor


class Recorder(nn.Module):
    """Logits that depend on position, recording the sizes it was run at."""

    num_classes = 2

    def __init__(self, scale):
        super().__init__()
        self.meta = {"input_scale": scale, "mean": [0.5] * 3, "std": [0.5] * 3, "class_names": ["a", "b"]}
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return torch.cat([x[:, :1], -x[:, :1]], 1)


def test_predict_logits_runs_the_model_at_its_scale_and_returns_full_size():
    x = torch.randn(1, 3, 64, 96)
    model = Recorder(0.75)
    got = predict_logits(model, x)
    assert model.sizes == [(48, 72)] and got.shape[-2:] == (64, 96)
    small = F.interpolate(x, size=(48, 72), mode="bilinear", align_corners=False, antialias=True)
    expected = F.interpolate(torch.cat([small[:, :1], -small[:, :1]], 1), size=(64, 96), mode="bilinear",
                             align_corners=False)
    torch.testing.assert_close(got, expected)
    model.sizes.clear()
    predict_logits(model, x, scales=(1.0, 2.0))  # test-time scales are relative to the model's own
    assert model.sizes == [(48, 72), (96, 144)]
    plain = Recorder(1.0)
    predict_logits(plain, x)
    assert plain.sizes == [(64, 96)]


def test_train_transform_resizes_by_the_base_scale_first():
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    label = torch.randint(0, 3, (64, 96))
    t = TrainTransform(mean=[0.5] * 3, std=[0.5] * 3, scale_prob=0.0, hflip=0.0, base_scale=0.5)
    img, lbl = t(image, label, torch.Generator().manual_seed(0))
    assert img.shape == (3, 32, 48) and lbl.shape == (32, 48)
    assert torch.equal(lbl, label[::2, ::2])  # nearest: every other pixel
    same = TrainTransform(mean=[0.5] * 3, std=[0.5] * 3, scale_range=(0.5, 1.0), scale_prob=1.0, hflip=0.0)
    scaled = TrainTransform(mean=[0.5] * 3, std=[0.5] * 3, scale_range=(0.5, 1.0), scale_prob=1.0, hflip=0.0,
                            base_scale=0.5)
    a = same(image, label, torch.Generator().manual_seed(3))[0].shape[-2:]
    b = scaled(image, label, torch.Generator().manual_seed(3))[0].shape[-2:]
    assert abs(b[0] - a[0] / 2) <= 1 and abs(b[1] - a[1] / 2) <= 1  # the same random factor, on top


def test_the_scale_travels_with_the_checkpoint(tmp_path):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    model.meta.update(input_scale=0.5, class_names=["a", "b", "c"])
    hyperseg.save_model(model, tmp_path / "m.pt")
    predictor = Predictor(str(tmp_path / "m.pt"), runtime="torch")
    assert predictor.runtime.meta["input_scale"] == 0.5
    labels = predictor(np.zeros((64, 96, 3), np.uint8))
    assert labels.shape == (64, 96)


def test_export_defaults_to_the_size_the_network_sees(tmp_path, monkeypatch, capsys):
    """A weights record with input_scale 0.8 (like camvid_fast's): the default export size is the size
    the torch path feeds the network for an image of the record's input size, and the file computes
    what that path computes."""
    import pytest

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from hyperseg import pretrained
    from hyperseg.cli import main as cli_main
    from hyperseg.runtime import load_runtime

    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    hyperseg.save_model(model, tmp_path / "m.pt")
    record = pretrained.Weights(name="tiny_scaled", architecture="hyperseg", file=str(tmp_path / "m.pt"),
                                class_names=("a", "b", "c"), palette=((0, 0, 0), (255, 0, 0), (0, 255, 0)),
                                input_size=(120, 160), input_scale=0.8)
    monkeypatch.setitem(pretrained._REGISTRY, record.name, record)
    # the oracle: what the torch runtime's network is given for an image of the record's size
    predictor = Predictor("tiny_scaled", runtime="torch")
    seen = []
    predictor.runtime.model.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    predictor(image)
    assert seen == [(1, 3, 96, 128)]  # 0.8 of 120x160

    assert cli_main(["export", "tiny_scaled", "--out", str(tmp_path / "m.onnx")]) == 0, capsys.readouterr().err
    assert "input 1x3x96x128" in capsys.readouterr().out
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert tuple(d.dim_value for d in dims) == seen[0]

    x = predictor.preprocess(image)
    reference = predict_logits(load_runtime("tiny_scaled", runtime="eager"), x)
    exported = predict_logits(load_runtime(str(tmp_path / "m.onnx"), runtime="onnxruntime"), x)
    torch.testing.assert_close(exported, reference, rtol=1e-4, atol=1e-4)
