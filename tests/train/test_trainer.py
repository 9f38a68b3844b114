"""End-to-end training: kill -9 + --resume equals an uninterrupted run; 2-process gloo DDP; CLI."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

TINY = [
    "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
    "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=camvid", "data.crop_size=[64,96]",
    "data.batch_size=2", "data.workers=0", "data.val_split=val", "optim.lr=0.001", "train.log_interval=1",
    "train.tensorboard=false", "train.progress=false",
]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _train_cmd(root, out, *extra):
    return [sys.executable, "-m", "hyperseg", "train", *TINY, f"data.root={root}", f"train.out_dir={out}", *extra]


def _read_steps(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("distill", [False, pytest.param(True, marks=pytest.mark.slow),
                                     pytest.param("ema", marks=pytest.mark.slow)], ids=["plain", "distilled", "ema"])
def test_kill_9_then_resume_matches_uninterrupted(tiny_camvid, tmp_path, distill):
    common = ["optim.max_iters=8", "train.ckpt_interval=1", "train.val_interval=100"]
    if distill == "ema":
        common += ["train.ema_decay=0.9"]
    elif distill:  # the teacher: another tiny model trained for 2 steps on the same data
        teacher = subprocess.run(_train_cmd(tiny_camvid, tmp_path / "teacher", "optim.max_iters=2",
                                            "data.val_split=null", "train.seed=1"),
                                 env=_env(), capture_output=True, text=True)
        assert teacher.returncode == 0, teacher.stderr[-2000:]
        common += [f"distill.teacher={tmp_path / 'teacher' / 'last.pt'}", "distill.temperature=2",
                   "distill.weight=0.7"]
    ref = subprocess.run(_train_cmd(tiny_camvid, tmp_path / "ref", *common), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen(_train_cmd(tiny_camvid, tmp_path / "cut", *common), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "cut" / "last.pt"
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            step = torch.load(last, weights_only=True)["train_state"]["step"]
            if step >= 3:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None and killed_at < 8, "the run was not killed mid-training"
    cmd = _train_cmd(tiny_camvid, tmp_path / "cut", *common)
    resumed = subprocess.run(cmd[:4] + ["--resume"] + cmd[4:], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["train_state"]["step"] == b["train_state"]["step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    if distill == "ema":  # the moving average resumes exactly too, and ema.pt holds it
        for key, value in a["train_state"]["ema"].items():
            assert torch.equal(value, b["train_state"]["ema"][key]), key
        ema = torch.load(tmp_path / "cut" / "ema.pt", weights_only=True)["state_dict"]
        raw = b["state_dict"]
        assert all(torch.equal(ema[k], b["train_state"]["ema"][f"module.{k}"]) for k in ema)
        assert any(not torch.equal(ema[k], raw[k]) for k in ema if raw[k].is_floating_point())
    assert not list((tmp_path / "cut").glob(".*.tmp"))


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_signal_saves_and_resume_matches_uninterrupted(tiny_camvid, tmp_path, sig):
    """Ctrl-C (to the whole process group, DataLoader worker included) or SIGTERM: step finished, saved, exit 130."""
    common = ["optim.max_iters=8", "train.ckpt_interval=100", "train.val_interval=100", "data.workers=1"]
    ref = subprocess.run(_train_cmd(tiny_camvid, tmp_path / "ref", *common), env=_env(), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen(_train_cmd(tiny_camvid, tmp_path / "cut", *common), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            os.killpg(proc.pid, sig)
            break
        time.sleep(0.02)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    stopped = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["train_state"]["step"]
    assert 2 <= stopped < 8
    cmd = _train_cmd(tiny_camvid, tmp_path / "cut", *common)
    resumed = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert a["train_state"]["step"] == b["train_state"]["step"] == 8
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    steps = [e["step"] for e in map(json.loads, log.read_text().splitlines()) if e["kind"] == "train"]
    assert steps == list(range(1, 9))  # each step logged once across the stop and the resume


def test_two_process_gloo_matches_single_process(tiny_camvid, tmp_path):
    common = ["optim.max_iters=4", "train.val_interval=4", "model.options.encoder_drop_rate=0",
              "model.options.encoder_drop_path_rate=0"]
    # one process accumulating 2 batches of 1 image = 2 processes of 1 image each: the same global
    # batch, and BatchNorm normalises over 1 image in both (no SyncBN on CPU)
    single = subprocess.run(_train_cmd(tiny_camvid, tmp_path / "one", *common, "data.batch_size=1",
                                       "optim.accum_steps=2"), env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hyperseg",
         "train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'two'}", *common,
         "data.batch_size=1"],
        env=_env(), capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    summaries = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["step"] == 4  # rank 0 alone prints the summary
    one = [r["loss"] for r in _read_steps(tmp_path / "one" / "metrics.jsonl") if r["kind"] == "train"]
    two = [r["loss"] for r in _read_steps(tmp_path / "two" / "metrics.jsonl") if r["kind"] == "train"]
    assert len(one) == len(two) == 4
    # The logged loss is averaged over ranks, so it is the global batch's loss
    np.testing.assert_allclose(two, one, rtol=1e-4)  # equal here; summation order may differ elsewhere
    val_one = [r for r in _read_steps(tmp_path / "one" / "metrics.jsonl") if r["kind"] == "val"][-1]
    val_two = [r for r in _read_steps(tmp_path / "two" / "metrics.jsonl") if r["kind"] == "val"][-1]
    assert val_two["pixels"] == val_one["pixels"]  # the confusion matrix is all-reduced over both shards


def test_cli_eval_predict_and_class_mismatch(tiny_camvid, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "optim.max_iters=2",
                     "train.val_interval=2"]) == 0
    metrics = tmp_path / "m.json"
    assert cli_main(["eval", str(out / "best.pt"), "--data", str(tiny_camvid), "--split", "val",
                     "--out", str(metrics), "--workers", "0"]) == 0
    data = json.loads(metrics.read_text())
    assert set(data["per_class_iou"]) == set(hyperseg.load_model(out / "best.pt").meta["class_names"])
    assert data["unit"] == "percent" and 0 <= data["miou"] <= 100 and 0 <= data["pixel_acc"] <= 100
    logged = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in l][-1]
    assert data["miou"] == pytest.approx(logged["miou"] * 100, abs=1e-4)  # the training log keeps fractions

    pred = tmp_path / "pred"
    assert cli_main(["predict", str(tiny_camvid / "val"), "--model", str(out / "best.pt"), "--out", str(pred)]) == 0
    label = Image.open(pred / "000.png")
    assert label.mode == "P" and label.size == (96, 64)
    assert np.asarray(label).max() < 11
    assert (pred / "000_overlay.jpg").is_file() and (pred / "001.png").is_file()
    assert cli_main(["predict", str(tiny_camvid / "val" / "*.png"), "--model", str(out / "best.pt"),
                     "--out", str(tmp_path / "glob")]) == 0
    assert len(list((tmp_path / "glob").glob("*.png"))) == 2

    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=5,
                                  weight_groups=[16, 16, 8, 8, 4])
    hyperseg.save_model(model, tmp_path / "five.pt")
    capsys.readouterr()
    assert cli_main(["eval", str(tmp_path / "five.pt"), "--data", str(tiny_camvid), "--workers", "0"]) == 2
    assert "predicts 5 classes but the dataset has 11" in capsys.readouterr().err
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'ft'}",
                     f"model.name={tmp_path / 'five.pt'}", "optim.max_iters=1"]) == 2
    assert "trained for 5 classes" in capsys.readouterr().err
    # a finished run is never overwritten by a fresh start
    before = (out / "best.pt").read_bytes()
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "optim.max_iters=2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "best.pt").read_bytes() == before


def test_cli_bad_inputs(tmp_path, capsys):
    assert cli_main(["train", "optim.lerning_rate=1"]) == 2
    assert "optim.lerning_rate" in capsys.readouterr().err
    assert cli_main(["predict", str(tmp_path / "nope.png")]) == 2
    assert "nope.png: file not found" in capsys.readouterr().err
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    assert cli_main(["predict", str(tmp_path / "ok.png"), "--model", "missing.pt"]) == 2
    assert "missing.pt" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    hyperseg.save_model(model, tmp_path / "m.pt")
    assert cli_main(["predict", str(tmp_path / "empty"), "--model", str(tmp_path / "m.pt")]) == 2
    assert "holds no images" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    assert cli_main(["predict", str(tmp_path / "bad.png"), "--model", str(tmp_path / "m.pt"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "bad.png: cannot read the image" in capsys.readouterr().err


def test_poly_schedule_follows_the_closed_form():
    """lr_t = lr_0 * (1 - t / T) ** p (SPEC's per-iteration poly), through torch's PolynomialLR."""
    from hyperseg.train.config import load_config
    from hyperseg.train.trainer import build_optimizer

    cfg = load_config(None, ["optim.lr=0.001", "optim.max_iters=50", "optim.poly_power=0.9"])
    state = build_optimizer(cfg, torch.nn.Linear(2, 2))
    for t in range(1, 51):
        state.optimizer.step()
        state.scheduler.step()
        assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.001 * (1 - t / 50) ** 0.9, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_autocast_warns_only_where_it_is_emulated(tiny_camvid, tmp_path, capsys, monkeypatch, native):
    """train.amp=bf16 on a device without native bfloat16 says so (and names the fix) before training;
    where the hardware has it, nothing is said. The capability is the one inference refuses bf16 on."""
    import hyperseg.train.trainer as trainer

    monkeypatch.setattr(trainer, "bf16_supported", lambda device: native)
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                     "optim.max_iters=1", "data.val_split=null", "train.amp=bf16"]) == 0
    err = capsys.readouterr().err
    assert ("no native bfloat16" in err and "add train.amp=off" in err) is not native
    assert (tmp_path / "run" / "last.pt").is_file()  # a warning, not a refusal: the run trained


# -- a run folder holds only files the run wrote: links there are refused, never written through ----------------------

_LINKED = ["data.val_split=null", "train.ckpt_interval=1"]


@pytest.fixture(scope="module")
def one_step_run(tiny_camvid, tmp_path_factory):
    """A finished 1-step run (no validation), copied by each test that tampers with it."""
    out = tmp_path_factory.mktemp("one_step") / "run"
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "optim.max_iters=1",
                     *_LINKED]) == 0
    return out


def _resume_to_2(root, out, *extra):
    return cli_main(["train", "--resume", *TINY, f"data.root={root}", f"train.out_dir={out}", "optim.max_iters=2",
                     *_LINKED, *extra])


@pytest.mark.parametrize("name, dangling", [("train.lock", False), ("train.lock", True), ("metrics.jsonl", True),
                                            ("resumes.jsonl", False), ("resumes.jsonl", True), ("val.csv", True)])
def test_resume_refuses_a_symlink_in_the_run_folder_and_leaves_its_target(one_step_run, tiny_camvid, tmp_path,
                                                                         capsys, name, dangling):
    """A link placed where the run keeps its lock or appends its logs: the resume is refused in one line
    naming it, and the file it points at is neither truncated, nor appended to, nor created."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(one_step_run, out)
    target = tmp_path / "precious.txt"
    if not dangling:
        target.write_bytes(b"keep me\n")
    link = out / name
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert _resume_to_2(tiny_camvid, out) == 2  # max_iters 1 -> 2 is a change, so resumes.jsonl would be appended
    err = capsys.readouterr().err
    assert str(link) in err and "link" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if dangling:
        assert not target.exists()
    else:
        assert target.read_bytes() == b"keep me\n"
    assert link.is_symlink() and (out / "last.pt").read_bytes() == before  # nothing trained or saved


def test_resume_refuses_a_tensorboard_link_and_a_hard_linked_lock(one_step_run, tiny_camvid, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(one_step_run, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "tensorboard").symlink_to(elsewhere, target_is_directory=True)
    capsys.readouterr()
    assert _resume_to_2(tiny_camvid, out, "train.tensorboard=true") == 2
    err = capsys.readouterr().err
    assert str(out / "tensorboard") in err and len(err.strip().splitlines()) == 1
    assert list(elsewhere.iterdir()) == []  # no event file written into the linked folder

    (out / "tensorboard").unlink()
    other = tmp_path / "other.txt"
    other.write_bytes(b"a file of its own\n")
    (out / "train.lock").unlink(missing_ok=True)
    os.link(other, out / "train.lock")  # truncating the lock would truncate this file too
    assert _resume_to_2(tiny_camvid, out) == 2
    err = capsys.readouterr().err
    assert str(out / "train.lock") in err and "hard link" in err and len(err.strip().splitlines()) == 1
    assert other.read_bytes() == b"a file of its own\n"


def test_resume_without_the_moving_average_is_refused(tiny_camvid, tmp_path, capsys):
    """train.ema_decay=0 on a run that averages would leave ema.pt behind at the old step."""
    out = tmp_path / "run"
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "optim.max_iters=1",
                     *_LINKED, "train.ema_decay=0.5"]) == 0
    last, ema = (out / "last.pt").read_bytes(), (out / "ema.pt").read_bytes()
    capsys.readouterr()
    assert _resume_to_2(tiny_camvid, out, "train.ema_decay=0") == 2
    err = capsys.readouterr().err
    assert "train.ema_decay=0.5" in err and str(out / "last.pt") in err and len(err.strip().splitlines()) == 1
    assert (out / "last.pt").read_bytes() == last and (out / "ema.pt").read_bytes() == ema
    assert _resume_to_2(tiny_camvid, out, "train.ema_decay=0.5") == 0  # the same value resumes
    assert torch.load(out / "ema.pt", weights_only=True)["meta"]["step"] == 2


def test_logs_are_never_appended_through_a_link(tmp_path):
    """Past the resume's checks (a link made while the run trains), each append still refuses the link."""
    from hyperseg.train.logs import RunLogger
    from hyperseg.errors import HypersegError

    out, target = tmp_path / "run", tmp_path / "target.txt"
    out.mkdir()
    target.write_bytes(b"keep me\n")
    (out / "metrics.jsonl").symlink_to(target)
    (out / "val.csv").symlink_to(tmp_path / "absent.csv")
    logger = RunLogger(out, tensorboard=False, enabled=True)
    with pytest.raises(HypersegError, match="metrics.jsonl is a symbolic link"):
        logger.log(1, "train", {"loss": 1.0})
    (out / "metrics.jsonl").unlink()
    with pytest.raises(HypersegError, match="val.csv is a symbolic link"):
        logger.log(1, "val", {"miou": 0.5, "pixel_acc": 0.5, "mean_class_acc": 0.5})
    assert target.read_bytes() == b"keep me\n" and not (tmp_path / "absent.csv").exists()
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_run_folder_keeps_its_layout_and_resumes(tiny_camvid, tmp_path):
    """What a run writes, key by key, as runs already on disk hold it (written here by hand, not read
    from the code): a resume reads these keys, so a run folder written by any release with this layout
    resumes. Then the folder resumes, and the lines after its checkpoint are logged once."""
    out = tmp_path / "run"
    run = ["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "train.val_interval=2",
           "train.ema_decay=0.5"]
    assert cli_main([*run, "optim.max_iters=2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "config.yaml", "ema.pt", "last.pt", "metrics.jsonl",
                                                     "train.lock", "val.csv"]
    last = torch.load(out / "last.pt", weights_only=True)
    assert set(last) == {"format", "version", "config", "state_dict", "meta", "train_state"}
    state = last["train_state"]
    assert set(state) == {"step", "best_miou", "optimizer", "scheduler", "rng", "run_config", "ema"}
    assert state["step"] == 2 and set(state["rng"]) == ({"torch", "cuda"} if torch.cuda.is_available() else {"torch"})
    assert set(state["optimizer"]) == {"state", "param_groups"} and state["scheduler"]["last_epoch"] == 2
    assert state["run_config"]["optim"]["max_iters"] == 2 and state["best_miou"] == last["meta"]["val_miou"]
    assert {"train_seconds", "step", "val_miou", "val_per_class_iou", "recipe"} <= set(last["meta"])
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(e["step"], e["kind"]) for e in lines] == [(1, "train"), (2, "train"), (2, "val")]
    assert set(lines[0]) == {"step", "kind", "loss", "lr", "images_per_s"}
    assert (out / "val.csv").read_text().splitlines()[0] == "step,miou,pixel_acc,mean_class_acc"

    assert cli_main(["train", "--resume", *run[1:], "optim.max_iters=3"]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["train_state"]["step"] == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(e["step"], e["kind"]) for e in lines] == [(1, "train"), (2, "train"), (2, "val"), (3, "train"),
                                                       (3, "val")]
    assert json.loads((out / "resumes.jsonl").read_text()) == {"step": 2, "changes": {"optim.max_iters": [2, 3]}}
