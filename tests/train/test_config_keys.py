"""Training config keys on tiny runs (2 steps of a small HyperSeg on tiny_camvid, in process), each
checked against what it must change: the weights of two runs compared bit for bit, the calls made to
torch, the shapes the network is run on in validation (``hyperseg.HyperSeg.forward`` counted), the
checkpoint's metadata read back, and the TensorBoard event files read back.
"""
import json

import pytest
import torch

import hyperseg
from hyperseg.cli import main as cli_main

TINY = [
    "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
    "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=camvid", "data.crop_size=[64,96]",
    "data.batch_size=2", "data.workers=0", "optim.lr=0.001", "train.log_interval=1", "train.progress=false",
    "optim.max_iters=2",
]


def _train(root, out, *extra) -> int:
    return cli_main(["train", *TINY, f"data.root={root}", f"train.out_dir={out}", *extra])


@pytest.fixture
def forwards(monkeypatch):
    """(training?, input shape) of every HyperSeg forward pass."""
    seen = []
    forward = hyperseg.HyperSeg.forward

    def spy(self, x, *args, **kwargs):
        seen.append((self.training, tuple(x.shape)))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(hyperseg.HyperSeg, "forward", spy)
    return seen


def _read(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deterministic_turns_on_deterministic_algorithms_and_two_runs_agree_bit_for_bit(tiny_camvid, tmp_path,
                                                                                       monkeypatch):
    calls = []
    use = torch.use_deterministic_algorithms

    def spy(mode, **kwargs):
        calls.append(mode)
        use(mode, **kwargs)

    monkeypatch.setattr(torch, "use_deterministic_algorithms", spy)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for name in ("a", "b"):
            assert _train(tiny_camvid, tmp_path / name, "train.deterministic=true", "data.val_split=null",
                          "train.tensorboard=false") == 0
    finally:
        use(before)
    assert calls == [True, True]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_amp_fp16_on_the_cpu_is_refused_in_one_line(tiny_camvid, tmp_path, capsys):
    assert _train(tiny_camvid, tmp_path / "run", "train.amp=fp16", "train.device=cpu", "data.val_split=null",
                  "train.tensorboard=false") == 2
    err = capsys.readouterr().err.strip()
    assert err == "hyperseg train: error: train.amp=fp16 needs a CUDA device; use bf16 on the CPU"
    assert not (tmp_path / "run" / "last.pt").exists()


def test_compile_wraps_the_training_model_once(tiny_camvid, tmp_path, monkeypatch):
    """torch.compile itself takes minutes on a CPU: it is counted here and returns the model as is
    (tests marked slow may run the real one)."""
    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    assert _train(tiny_camvid, tmp_path / "on", "train.compile=true", "data.val_split=null",
                  "train.tensorboard=false") == 0
    assert len(compiled) == 1 and isinstance(compiled[0], hyperseg.HyperSeg)
    assert torch.load(tmp_path / "on" / "last.pt", weights_only=True)["train_state"]["step"] == 2


@pytest.mark.slow
def test_compile_really_compiles_and_trains(tiny_camvid, tmp_path):
    assert _train(tiny_camvid, tmp_path / "run", "train.compile=true", "data.val_split=null",
                  "train.tensorboard=false") == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_state"]["step"] == 2


def test_val_resize_val_batch_size_and_tensorboard(tiny_camvid, tmp_path, forwards):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert _train(tiny_camvid, out, "data.val_split=val", "train.val_interval=2", "data.val_resize=[32,48]",
                  "data.val_batch_size=2", "train.tensorboard=true") == 0
    validation = [shape for training, shape in forwards if not training]
    # the two 64x96 val images, resized to 32x48, in one batch of two
    assert validation == [(2, 3, 32, 48)]
    assert all(shape[-2:] == (64, 96) for training, shape in forwards if training)  # the crops
    logged = _read(out / "metrics.jsonl")
    events = list((out / "tensorboard").rglob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    for record in logged:
        for key, value in record.items():
            if key in ("step", "kind") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            tag = f"{record['kind']}/{key}"
            assert tag in scalars, tag
            points = {e.step: e.value for e in acc.Scalars(tag)}
            assert points[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-6), tag
    assert "val/miou" in scalars and "train/loss" in scalars


def test_tensorboard_false_writes_no_events(tiny_camvid, tmp_path):
    assert _train(tiny_camvid, tmp_path / "run", "data.val_split=null", "train.tensorboard=false") == 0
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def test_input_scale_is_recorded_and_eval_runs_the_model_at_it(tiny_camvid, tmp_path, forwards):
    out = tmp_path / "run"
    assert _train(tiny_camvid, out, "model.input_scale=0.5", "data.val_split=null", "train.tensorboard=false") == 0
    assert hyperseg.load_model(out / "last.pt").meta["input_scale"] == 0.5
    forwards.clear()
    assert cli_main(["eval", str(out / "last.pt"), "--data", str(tiny_camvid), "--split", "val", "--workers", "0",
                     "--runtime", "eager", "--precision", "fp32"]) == 0
    # 64x96 images seen at half their size
    assert [shape for training, shape in forwards if not training] == [(1, 3, 32, 48), (1, 3, 32, 48)]
