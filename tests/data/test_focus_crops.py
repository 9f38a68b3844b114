"""Crops steered to thin or rare classes (data.focus_classes / data.focus_prob)."""
import pytest
import torch

from hyperseg.data.transforms import TrainTransform
from hyperseg.errors import HypersegError

MEAN, STD = [0.5] * 3, [0.5] * 3


def _scene(h=60, w=80):
    """Road (0) everywhere, one pole pixel (class 2) at (50, 70), a sign blob (class 6) at the top left."""
    label = torch.zeros(h, w, dtype=torch.uint8)
    label[50, 70] = 2
    label[2:4, 3:5] = 6
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return image, label


def _crop(transform, seed):
    image, label = _scene()
    return transform(image, label, torch.Generator().manual_seed(seed))[1]


def test_every_focused_crop_holds_a_focus_pixel_and_both_classes_are_drawn():
    t = TrainTransform(MEAN, STD, crop_size=(16, 16), scale_prob=0, hflip=0, focus_classes=[2, 6], focus_prob=1.0)
    crops = [_crop(t, seed) for seed in range(200)]
    assert all(bool(((c == 2) | (c == 6)).any()) for c in crops)
    with_pole = sum(bool((c == 2).any()) for c in crops)
    assert 60 < with_pole < 140  # the class is drawn uniformly among those present, not by pixel count


def test_focused_positions_cover_every_window_that_holds_the_pixel():
    """The oracle: for a pixel at (50, 70) in a 60x80 image and 16x16 crops, top can be 35..44 and left
    55..64; the positions drawn fill that whole range and stay in it."""
    t = TrainTransform(MEAN, STD, crop_size=(16, 16), scale_prob=0, hflip=0, focus_classes=[2], focus_prob=1.0)
    image, label = _scene()
    tops, lefts = set(), set()
    for seed in range(400):
        top, left = t._crop_position(label, (16, 16), torch.Generator().manual_seed(seed))
        tops.add(top)
        lefts.add(left)
    assert tops == set(range(35, 45)) and lefts == set(range(55, 65))


def test_uniform_crops_rarely_find_the_pole_and_prob_zero_keeps_the_random_stream():
    plain = TrainTransform(MEAN, STD, crop_size=(16, 16), scale_prob=0, hflip=0)
    off = TrainTransform(MEAN, STD, crop_size=(16, 16), scale_prob=0, hflip=0, focus_classes=[2], focus_prob=0.0)
    assert sum(bool((_crop(plain, s) == 2).any()) for s in range(200)) < 30  # 256 of 65*45 windows: ~9 %
    for seed in range(20):  # a run without focus crops draws exactly what it drew before the option existed
        assert torch.equal(_crop(plain, seed), _crop(off, seed))


def test_without_a_focus_class_in_the_label_the_crop_is_uniform():
    t = TrainTransform(MEAN, STD, crop_size=(16, 16), scale_prob=0, hflip=0, focus_classes=[9], focus_prob=1.0)
    image, label = _scene()
    positions = {t._crop_position(label, (16, 16), torch.Generator().manual_seed(s)) for s in range(100)}
    assert len(positions) > 50


def test_an_unknown_focus_class_is_one_line_naming_the_classes(tiny_camvid, tmp_path, capfd):
    from hyperseg.cli import main as cli_main

    code = cli_main(["train", "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
                     "model.options.weight_groups=[16,16,8,8,4]", f"data.root={tiny_camvid}", "data.crop_size=[64,96]",
                     "data.batch_size=2", "data.workers=0", "data.val_split=null", "optim.max_iters=1",
                     "data.focus_classes=[pole,lamppost]", "data.focus_prob=0.5", "train.progress=false",
                     "train.tensorboard=false", f"train.out_dir={tmp_path / 'run'}"])
    err = capfd.readouterr().err
    assert code == 2 and "'lamppost' is not a class" in err and "sign/symbol" in err and "Traceback" not in err


def test_focus_prob_out_of_range_is_refused():
    from hyperseg.train.config import load_config

    with pytest.raises(HypersegError, match="data.focus_prob"):
        load_config(None, ["data.focus_prob=1.5"])


def test_focus_prob_without_focus_classes_is_refused_naming_both(tmp_path):
    """A crop focus with no class to focus on would silently give uniform crops."""
    from hyperseg.train.config import ConfigError, RunConfig, load_config
    from hyperseg.train.trainer import Trainer

    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.focus_prob=0.5"])
    text = str(err.value)
    assert "data.focus_prob=0.5" in text and "data.focus_classes" in text and "\n" not in text
    with pytest.raises(ConfigError, match="data.focus_classes"):
        load_config(None, ["data.focus_prob=0.5", "data.focus_classes=[]"])
    assert load_config(None, ["data.focus_prob=0.5", "data.focus_classes=[pole]"]).data.focus_prob == 0.5
    cfg = RunConfig()  # built in Python, handed straight to the trainer
    cfg.data.focus_prob, cfg.train.out_dir = 0.5, str(tmp_path / "run")
    with pytest.raises(ConfigError, match="data.focus_classes"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()
