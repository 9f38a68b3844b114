"""A registered architecture name builds random weights: refused wherever weights are used to segment,
score or teach, allowed (and said) where only speed or size is measured."""
import numpy as np
import pytest
import torch
from PIL import Image

from hyperseg.cli import main as cli_main
from hyperseg.classes import CAMVID_CLASSES
from hyperseg.bench.harness import benchmark, format_report
from hyperseg.train.distill import Teacher
from hyperseg.infer.predictor import Predictor
from hyperseg.errors import HypersegError
from hyperseg.model import list_models
from hyperseg.hub.weights import is_weights_name
from hyperseg.runtime import load_runtime, resolve_model

ARCH = "hyperseg_s_camvid"
TEACHER = "hyperseg_m_cityscapes"
TINY = [
    "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
    "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=camvid", "data.crop_size=[64,96]",
    "data.batch_size=2", "data.workers=0", "data.val_split=null", "optim.max_iters=1",
    "train.tensorboard=false", "train.progress=false",
]


def test_the_names_are_architectures_without_weights():
    for name in (ARCH, TEACHER):  # what the tests below rely on
        assert name in list_models() and not is_weights_name(name)


def _refusal(text, name):
    assert name in text and "without weights" in text and "camvid" in text, text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text


@pytest.mark.parametrize("make", [lambda: resolve_model(ARCH), lambda: load_runtime(ARCH, runtime="torch"),
                                  lambda: Predictor(ARCH, runtime="torch")], ids=["resolve", "load_runtime", "Predictor"])
def test_the_resolver_refuses_an_architecture_name(make):
    with pytest.raises(HypersegError) as info:
        make()
    _refusal(str(info.value), ARCH)


def test_the_opt_in_builds_the_untrained_network():
    from hyperseg.model import model_cfg

    model = resolve_model(ARCH, allow_untrained=True)
    assert not model.training and model.num_classes == len(model_cfg(ARCH)["class_names"])


def test_predict_refuses_an_architecture(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(image)
    code = cli_main(["predict", str(image), "-m", ARCH, "--runtime", "torch", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    _refusal(err, ARCH)
    assert not list(tmp_path.glob("out/*.png"))


def test_eval_refuses_an_architecture(tiny_camvid, capsys):
    code = cli_main(["eval", ARCH, "--data", str(tiny_camvid), "--workers", "0", "--runtime", "torch"])
    err = capsys.readouterr().err
    assert code == 2 and "mIoU" not in capsys.readouterr().out
    _refusal(err, ARCH)


def test_a_teacher_must_have_weights(tiny_camvid, tmp_path, capsys):
    with pytest.raises(HypersegError) as info:
        Teacher(TEACHER, class_names=list(CAMVID_CLASSES), mean=[0.5] * 3, std=[0.5] * 3, device=torch.device("cpu"))
    _refusal(str(info.value), TEACHER)
    code = cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                     f"distill.teacher={TEACHER}"])
    err = capsys.readouterr().err
    assert code == 2
    _refusal(err, TEACHER)


def test_bench_times_an_architecture_and_says_its_weights_are_random(capsys):
    result = benchmark(ARCH, size=(64, 96), candidates=[("torch", "fp32")], rounds=1, warmup=0)
    assert result["untrained"] is True and [e["runtime"] for e in result["entries"]] == ["torch"]
    assert "random weights" in format_report(result)
    code = cli_main(["bench", ARCH, "--size", "64x96", "--runtime", "torch", "--rounds", "1", "--warmup", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"{ARCH} is an architecture without weights" in captured.out and "random weights" in captured.out
    trained = benchmark("camvid", size=(64, 96), candidates=[("torch", "fp32")], rounds=1, warmup=0)
    assert trained["untrained"] is False and "random weights" not in format_report(trained)


def test_profile_still_takes_an_architecture(capsys):
    import json

    assert cli_main(["profile", ARCH, "--height", "64", "--width", "96"]) == 0  # counting needs no trained weights
    assert json.loads(capsys.readouterr().out)["params"] == sum(
        p.numel() for p in resolve_model(ARCH, allow_untrained=True).parameters())


def test_serve_refuses_an_architecture_before_listening():
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from hyperseg.serve.app import create_app

    app = create_app(ARCH, runtime="torch")
    with pytest.raises(HypersegError) as info:
        app.state.pool.load()  # what `hyperseg serve` does before it listens
    _refusal(str(info.value), ARCH)
