"""Channel division (SPEC section 4) and positional encoding (paper formula)."""
import copy

import pytest
import timm
import torch

from hyperseg.model.backbone import Backbone
from hyperseg.model.channel_division import divide_channels
from hyperseg.model.decoder.positional_encoding import PositionalEncoding, coordinate_grid

SLIDE = (1280, [7298, 4070, 760, 270, 156], 16)


@pytest.mark.parametrize("channels,weights,unit,expected", [
    (1280, [5248, 3008, 704, 2352, 4216], 32, [416, 224, 128, 192, 320]),  # Cityscapes M
    (1280, [4160, 992, 208, 3676], 32, [576, 128, 64, 512]),  # Cityscapes S (unify)
    (1280, [5248, 3008, 704, 2352, 1892], 64, [448, 256, 256, 192, 128]),  # CamVid S
    (1280, [5248, 3008, 704, 2352, 2068, 1764], 64, [384, 192, 256, 192, 128, 128]),  # CamVid L
    (1536, [9408, 4488, 6624, 1716, 992, 902], 16, [592, 272, 416, 96, 48, 112]),  # VOC L
])
def test_released_configs(channels, weights, unit, expected):
    assert divide_channels(channels, weights, unit, "released") == expected
    assert divide_channels(channels, weights, unit, "paper") == expected


def test_slide_example_code_vs_algorithm_1():
    assert divide_channels(*SLIDE, "released") == [736, 400, 64, 16, 64]
    assert divide_channels(*SLIDE, "paper") == [736, 400, 64, 64, 16]


def test_division_errors():
    with pytest.raises(ValueError, match="multiple of the unit"):
        divide_channels(1000, [1, 2], 64)
    with pytest.raises(ValueError, match="fewer than"):
        divide_channels(64, [1, 2, 3], 32)
    with pytest.raises(ValueError, match="rule"):
        divide_channels(64, [1, 2], 32, "mine")


def test_coordinates_follow_paper_formula():
    h, w = 5, 8
    grid = coordinate_grid(h, w, dtype=torch.float64, device=torch.device("cpu"))
    for j in range(w):
        assert grid[0, 0, 2, j].item() == pytest.approx((2 * j - w + 1) / (w - 1), abs=1e-6)
    for i in range(h):
        assert grid[0, 1, i, 3].item() == pytest.approx((2 * i - h + 1) / (h - 1), abs=1e-6)


def test_coordinates_are_torch_linspace_bit_for_bit():
    """The authors' models use torch.linspace; ours is written to trace with symbolic sizes, and must equal it."""
    for n in range(1, 700):
        got = coordinate_grid(1, n, dtype=torch.float32, device=torch.device("cpu"))[0, 0, 0]
        assert torch.equal(got, torch.linspace(-1.0, 1.0, n)), n


@pytest.mark.parametrize("encoder", ["tf_efficientnet_lite0", "tf_mixnet_s"])
def test_frozen_padding_is_exact_on_multiples_of_32(encoder):
    torch.manual_seed(0)
    backbone = Backbone(encoder).eval()
    frozen = copy.deepcopy(backbone)
    frozen.freeze_padding()
    assert not any(isinstance(m, timm.layers.Conv2dSame) for m in frozen.modules())
    for size in [(64, 96), (160, 32), (224, 288)]:
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            (feats, head), (frozen_feats, frozen_head) = backbone(x), frozen(x)
        assert torch.equal(head, frozen_head) and all(torch.equal(a, b) for a, b in zip(feats, frozen_feats))


def test_positional_encoding_prepends_two_channels():
    x = torch.randn(2, 3, 4, 6)
    y = PositionalEncoding()(x)
    assert y.shape == (2, 5, 4, 6)
    torch.testing.assert_close(y[:, 2:], x)
    torch.testing.assert_close(y[1, :2], y[0, :2])
