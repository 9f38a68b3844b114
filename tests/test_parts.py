"""Channel division (SPEC section 4) and positional encoding (paper formula)."""
import pytest
import torch

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


def test_positional_encoding_prepends_two_channels():
    x = torch.randn(2, 3, 4, 6)
    y = PositionalEncoding()(x)
    assert y.shape == (2, 5, 4, 6)
    torch.testing.assert_close(y[:, 2:], x)
    torch.testing.assert_close(y[1, :2], y[0, :2])
