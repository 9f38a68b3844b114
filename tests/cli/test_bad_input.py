"""Hostile input, grouped by command: exit code 2, one sentence naming the culprit, no traceback,
and input files byte-identical afterwards wherever data could be lost."""
import errno
import importlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hyperseg.hub.checkpoint import atomic_write, save_model
from hyperseg.cli import main as cli_main
from hyperseg.data.io import DataError, read_image
from hyperseg.infer.predictor import Predictor
from hyperseg.errors import HypersegError

TINY = [
    "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
    "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=camvid", "data.crop_size=[64,96]",
    "data.batch_size=2", "data.workers=0", "data.val_split=null", "train.log_interval=1",
    "train.tensorboard=false", "train.progress=false", "train.ckpt_interval=1",
]


def _run(argv, capfd):
    """Exit code and stderr of one CLI call; any traceback fails the test."""
    code = cli_main([str(a) for a in argv])
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size it does not hold (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------- train

@pytest.fixture(scope="module")
def trained_run(tiny_camvid, tmp_path_factory):
    """A finished two-step run whose folder the resume tests copy."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli_main(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={out}", "optim.max_iters=2"]) == 0
    return out


def test_train_refuses_a_folder_holding_user_files(tiny_camvid, tmp_path, capfd):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own settings\n")
    (mine / ".draft.tmp").write_text("half-written by another program")
    (mine / "metrics.jsonl").write_text("my numbers\n")
    before = _snapshot(mine)
    code, err = _run(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={mine}", "optim.max_iters=1"], capfd)
    assert code == 2 and str(mine) in _error_line(err) and "not empty" in err
    assert _snapshot(mine) == before


def test_resume_refuses_another_model_and_records_schedule_changes(trained_run, tiny_camvid, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = (run / "config.yaml").read_bytes()
    args = ["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={run}", "--resume"]
    code, err = _run([*args, "optim.max_iters=2", "model.options.weight_groups=[8,8,8,8,4]"], capfd)
    assert code == 2 and "model.options" in _error_line(err)
    code, err = _run([*args, "optim.max_iters=3"], capfd)
    assert code == 0, err
    assert (run / "config.yaml").read_bytes() == config  # the run's original recipe stays
    record = [line for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert len(record) == 1 and '"optim.max_iters": [2, 3]' in record[0] and '"step": 2' in record[0]
    steps = [line for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [int(s.split('"step": ')[1].split(",")[0]) for s in steps] == [1, 2, 3]


def test_resume_applies_a_longer_schedule(trained_run, tiny_camvid, tmp_path, capfd):
    """A resume with more iterations trains on the new poly schedule in closed form, not at the old
    schedule's final rate of 0, and says what changed in resumes.jsonl."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    code, err = _run(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={run}", "--resume",
                      "optim.max_iters=4", "optim.lr=0.002"], capfd)
    assert code == 0, err
    logged = {r["step"]: r["lr"] for r in map(__import__("json").loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert logged[3] == pytest.approx(0.002 * (1 - 3 / 4) ** 0.9, rel=1e-9)
    assert logged[4] == 0.0
    after = torch.load(run / "last.pt", weights_only=True)
    assert after["train_state"]["step"] == 4
    assert not torch.equal(after["state_dict"]["backbone.encoder.conv_stem.weight"],
                           before["backbone.encoder.conv_stem.weight"])
    assert '"optim.lr": [0.001, 0.002]' in (run / "resumes.jsonl").read_text()


def test_two_trainers_never_share_a_run_and_a_killed_holder_leaves_no_stale_lock(trained_run, tiny_camvid,
                                                                                 tmp_path, capfd):
    from hyperseg.process.runlock import RunLock

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    args = ["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={run}", "--resume", "optim.max_iters=3"]
    holder = RunLock(run).acquire()  # another trainer (flock conflicts across open files, even in one process)
    before = _snapshot(run)
    code, err = _run(args, capfd)
    assert code == 2 and "being trained by another process" in _error_line(err) and f"pid {os.getpid()}" in err
    assert _snapshot(run) == before
    holder.release()
    # a holder killed with SIGKILL: the kernel drops its lock with the process
    script = f"import sys, time; from hyperseg.process.runlock import RunLock; RunLock({str(run)!r}).acquire(); " \
             f"print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait(timeout=30)
    code, err = _run(args, capfd)
    assert code == 0, err


def test_resume_survives_a_blank_line_in_val_csv(trained_run, tiny_camvid, tmp_path, capfd):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "val.csv").write_text("step,miou,pixel_acc,mean_class_acc\n2,0.1,0.2,0.3\n\n")
    code, err = _run(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={run}", "--resume",
                      "optim.max_iters=3"], capfd)
    assert code == 0, err
    assert (run / "val.csv").read_text().splitlines()[:2] == ["step,miou,pixel_acc,mean_class_acc", "2,0.1,0.2,0.3"]


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("damage", ["truncated", "foreign", "malicious", "random"])
def test_resume_refuses_a_bad_last_pt(trained_run, tiny_camvid, tmp_path, capfd, damage, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    last = run / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "foreign":
        save_model(hyperseg.create_model("hyperseg_s_camvid"), last)
    elif damage == "malicious":
        torch.save({"format": "hyperseg", "payload": _Payload()}, last)
    else:
        last.write_bytes(np.random.default_rng(0).bytes(4096))
    monkeypatch.chdir(tmp_path)
    code, err = _run(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={run}", "optim.max_iters=3",
                      "--resume"], capfd)
    assert code == 2 and str(last) in _error_line(err)
    assert "weights_only=False" not in err and not (tmp_path / "PWNED").exists()


# -------------------------------------------------------------------------------------------- convert

def test_convert_never_replaces_its_input(tmp_path, capfd):
    pth = tmp_path / "a.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "arch": "hyperseg_efficientnet"}, pth)
    before = pth.read_bytes()
    for extra in ([], ["--overwrite"]):
        code, err = _run(["convert", pth, pth, *extra], capfd)
        assert code == 2 and "is the input" in _error_line(err)
    assert pth.read_bytes() == before


def test_convert_refuses_an_existing_output(tmp_path, capfd):
    pth, out = tmp_path / "a.pth", tmp_path / "mine.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, pth)
    out.write_bytes(b"the user's file")
    code, err = _run(["convert", pth, out], capfd)
    assert code == 2 and "--overwrite" in _error_line(err) and out.read_bytes() == b"the user's file"


@pytest.mark.parametrize("content", ["random", "int_keys", "empty"])
def test_convert_bad_checkpoints(tmp_path, capfd, content):
    pth = tmp_path / "bad.pth"
    if content == "random":
        pth.write_bytes(np.random.default_rng(1).bytes(1000))
    elif content == "int_keys":
        torch.save({"state_dict": {1: torch.zeros(1), 2: torch.ones(1)}}, pth)
    else:
        torch.save({}, pth)
    code, err = _run(["convert", pth, tmp_path / "out.pt"], capfd)
    assert code == 2 and str(pth) in _error_line(err) and not (tmp_path / "out.pt").exists()


# ---------------------------------------------------------------------------------- outputs and files

def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def fill_disk(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(HypersegError, match="metrics.json.*No space left"):
        atomic_write(target, fill_disk)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_torch_save_failing_on_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    """torch.save's zip writer raises RuntimeError (not OSError) when a write fails."""
    from hyperseg.hub.checkpoint import atomic_save

    target = tmp_path / "last.pt"
    target.write_bytes(b"previous checkpoint")

    def full_disk(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(HypersegError, match=r"last\.pt: cannot write it \(torch\.save failed: .*file write failed"):
        atomic_save({"a": 1}, target)
    assert target.read_bytes() == b"previous checkpoint" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_long_legal_file_name_is_segmented(tmp_path):
    """A 240-character name: the outputs (up to 248 characters) are written through short temporary names."""
    stem = "d" * 236
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(tmp_path / f"{stem}.png")
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    written = Predictor(model, runtime="eager").predict_files([tmp_path / f"{stem}.png"], tmp_path / "out",
                                                              progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    assert (tmp_path / "out" / f"{stem}_overlay.jpg").is_file()


def test_output_names_for_many_files_are_unique_and_do_not_hang():
    """40,000 inputs whose stems repeat across folders: unique names, within a guard time (the
    quadratic version took ~90 s)."""
    script = ("from pathlib import Path; from hyperseg.infer.predictor import output_names; "
              "files = [Path(f'/data/drive{i % 7}/frame_{i // 7:05d}.png') for i in range(40_000)]; "
              "names = output_names(files); assert len(set(names)) == len(files); "
              "assert names[:2] == ['frame_00000_png_1', 'frame_00000_png_2'] and names[7] == 'frame_00001_png_1'")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=180)


def test_unwritable_output_locations_name_the_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(HypersegError, match="a_file"):
        atomic_write(blocker / "out.json", lambda f: f.write(b"{}"))
    with pytest.raises(HypersegError, match="is a folder"):
        atomic_write(tmp_path, lambda f: f.write(b"{}"))


@pytest.mark.parametrize("command", ["eval", "bench", "export"])
def test_out_that_is_a_folder(tmp_path, capfd, command):
    folder = tmp_path / "results.onnx"
    folder.mkdir()
    code, err = _run([command, "--out", folder, "--overwrite"], capfd)
    assert code == 2 and f"{folder} is a folder" in _error_line(err)


@pytest.mark.parametrize("argv, culprit", [
    (["eval", "--workers", "-1"], "--workers"),
    (["eval", "--workers", "two"], "--workers"),
    (["check-data", "--limit", "-1"], "--limit"),
    (["check-data", "--limit", "0"], "--limit"),
])
def test_negative_counts_are_refused_before_work(tiny_camvid, argv, culprit, capfd):
    with pytest.raises(SystemExit) as exit:  # argparse refuses them, with its usage line and one error line
        cli_main([*argv, "--data", str(tiny_camvid)])
    err = capfd.readouterr().err
    assert exit.value.code == 2 and culprit in _error_line(err) and "Traceback" not in err


@pytest.mark.parametrize("option", ["--max-upload-mb", "--max-megapixels"])
@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_serve_limits_must_be_finite(option, value, capfd):
    pytest.importorskip("fastapi")
    code, err = _run(["serve", "--port", "0", option, value], capfd)
    assert code == 2 and option in _error_line(err) and "finite" in err


def test_confusion_image_without_the_viz_extra_fails_before_evaluating(tiny_camvid, tmp_path, capfd, monkeypatch):
    # the module, not the package attribute: the package re-exports a function of that name
    evaluate_module = importlib.import_module("hyperseg.train.evaluate")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the extra were not installed
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: pytest.fail("evaluated before the check"))
    code, err = _run(["eval", "--data", tiny_camvid, "--confusion-image", tmp_path / "cm.png", "--workers", "0"], capfd)
    assert code == 2 and "pip install 'hyperseg[viz]'" in _error_line(err)
    assert not (tmp_path / "cm.png").exists()


@pytest.mark.parametrize("option", ["--out", "--confusion-image"])
def test_eval_never_writes_over_a_dataset_file_even_with_overwrite(tiny_camvid, tmp_path, capfd, option):
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    before = _snapshot(root)
    code, err = _run(["eval", "--data", root, "--split", "val", "--workers", "0", "--runtime", "eager",
                      option, root / "valannot" / "000.png", "--overwrite"], capfd)
    assert code == 2 and "would replace the input" in _error_line(err)
    assert _snapshot(root) == before


def test_an_error_in_a_dataloader_worker_ends_training_with_one_line(tiny_camvid, tmp_path):
    """The worker's error reaches the main process, which must then exit (it used to wait forever for
    workers that ignore SIGTERM). Run as a process: the hang was at interpreter exit."""
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    (root / "train" / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    argv = [sys.executable, "-m", "hyperseg", "train", *TINY, f"data.root={root}", f"train.out_dir={tmp_path / 'run'}",
            "data.workers=1", "optim.max_iters=20"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("training did not exit after a DataLoader worker failed")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "003.png" in _error_line(done.stderr)


def test_eval_refuses_to_replace_an_existing_out(tmp_path, capfd):
    out = tmp_path / "metrics.json"
    out.write_text("the user's file")
    code, err = _run(["eval", "--out", out, "--data", tmp_path], capfd)
    assert code == 2 and "--overwrite" in _error_line(err) and out.read_text() == "the user's file"


# ------------------------------------------------------------------------------------- reading images

def test_fifo_in_an_image_folder_is_named(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="pipe.png is not a regular file"):
        read_image(fifo)


@pytest.mark.parametrize("side", [10_000, 100_000])  # just over the pixel limit, and far over it
def test_decompression_bomb_is_refused_before_decoding(tmp_path, side):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(side, side))
    with pytest.raises(DataError, match="bomb.png: .*decompression bomb"):
        read_image(bomb)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((90, 120, 3), np.uint8)
    stored[:, :10] = 255  # a white stripe on the left of the stored pixels
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (120, 90, 3)
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the stripe is now on top


def test_dataloader_worker_errors_are_one_line(tiny_camvid, tmp_path, capfd):
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    (root / "val" / "001.png").write_bytes(b"not a png")
    code, err = _run(["eval", "--data", root, "--split", "val", "--workers", "2", "--runtime", "eager"], capfd)
    assert code == 2 and "001.png" in _error_line(err) and "Original Traceback" not in err


# ----------------------------------------------------------------------------------------- train config

@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=0", "data.batch_size=0 is out of range"),
    ("data.batch_size=-2", "data.batch_size=-2 is out of range"),
    ("optim.max_iters=0", "optim.max_iters=0 is out of range"),
    ("optim.max_iters=-5", "optim.max_iters=-5 is out of range"),
    ("optim.accum_steps=0", "optim.accum_steps=0 is out of range"),
    ("optim.lr=0", "optim.lr=0.0 is out of range"),
    ("optim.lr=abc", "optim.lr='abc' has the wrong type; expected a finite number"),
    ("data.crop_size=[16,16]", "data.crop_size=[16, 16] is out of range"),
    ("train.amp=fp8", "train.amp='fp8' is out of range"),
])
def test_train_config_values_are_checked_before_anything_is_created(tmp_path, capfd, override, expected):
    out = tmp_path / "run"
    code, err = _run(["train", *TINY, f"train.out_dir={out}", override], capfd)
    assert code == 2 and expected in _error_line(err) and not out.exists()


def test_sync_bn_on_cpu_is_refused(tiny_camvid, tmp_path, capfd):
    code, err = _run(["train", *TINY, f"data.root={tiny_camvid}", f"train.out_dir={tmp_path / 'run'}",
                      "train.sync_bn=true", "train.device=cpu"], capfd)
    assert code == 2 and "train.sync_bn" in _error_line(err)


def test_yaml_numbers_written_as_text_are_read_as_numbers(tmp_path):
    from hyperseg.train.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-3\n  max_iters: 2.0\ntrain:\n  amp: off\n")  # PyYAML: '1e-3' text, off false
    cfg = load_config(recipe)
    assert cfg.optim.lr == 0.001 and cfg.optim.max_iters == 2 and cfg.train.amp == "off"


def test_yaml_alias_bomb_is_refused_quickly(tmp_path, capfd):
    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")  # about 10**9 values once expanded, 600 bytes on disk
    code, err = _run(["train", "--config", bomb, "train.out_dir=" + str(tmp_path / "run")], capfd)
    assert code == 2 and "bomb.yaml" in _error_line(err) and "YAML bomb" in err


# ------------------------------------------------------------------------------------ eval and predict

@pytest.mark.parametrize("option, message", [
    (["--scales", "0"], "scale 0.0 is out of range; expected numbers in (0, 8]"),
    (["--scales", "-1"], "scale -1.0 is out of range; expected numbers in (0, 8]"),
    (["--scales", "abc"], "--scales 'abc': expected comma-separated numbers, e.g. 0.5,0.5,0.5"),
    (["--window", "axb"], "--window 'axb': expected HxW in pixels, each side 1 to 8192, e.g. 360x480"),
    (["--window", "8x8"], "window [8, 8] is not valid; expected [height, width], each at least 32 px"),
    (["--batch-size", "0"], "batch size 0: expected a whole number >= 1"),
])
def test_eval_bad_test_time_options(tiny_camvid, capfd, option, message):
    code, err = _run(["eval", "--data", tiny_camvid, "--split", "val", "--runtime", "eager", *option], capfd)
    assert code == 2 and _error_line(err) == f"hyperseg eval: error: {message}"


def test_eval_batch_of_mixed_sizes_is_refused(tiny_camvid, tmp_path, capfd):
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    for folder in ("val", "valannot"):
        img = Image.open(root / folder / "001.png")
        img.resize((128, 64), Image.NEAREST).save(root / folder / "001.png")
    code, err = _run(["eval", "--data", root, "--split", "val", "--runtime", "eager", "--batch-size", "2"], capfd)
    assert code == 2 and "different sizes" in _error_line(err) and "batch size 1" in err


@pytest.mark.parametrize("alpha", ["2", "-0.1", "nan"])
def test_predict_alpha_outside_0_1(tmp_path, capfd, alpha):
    code, err = _run(["predict", "--out", tmp_path / "o", "--alpha", alpha, "--runtime", "eager"], capfd)
    assert code == 2 and "alpha" in _error_line(err) and not (tmp_path / "o").exists()


def test_predict_folder_goes_on_past_bad_images(tmp_path, capfd):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(photos / "a_good.png")
    (photos / "b_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(photos / "c_tiny.png")
    Image.fromarray(np.full((64, 96, 3), 60, np.uint8)).save(photos / "d_good.png")
    before = _snapshot(photos)
    code = cli_main(["predict", str(photos), "--out", str(tmp_path / "out"), "--runtime", "eager"])
    err = capfd.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "b_broken.png" in err and "c_tiny.png" in err and "2 of 4 inputs failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [  # the outputs, and the job's manifest
        ".hyperseg-predict", "a_good.png", "a_good_overlay.jpg", "d_good.png", "d_good_overlay.jpg",
        "hyperseg-predict.json"]
    assert _snapshot(photos) == before


def test_max_size_segments_large_images_smaller_and_scales_labels_back(tmp_path):
    rng = np.random.default_rng(0)
    image = np.kron(rng.integers(0, 255, (10, 15, 3)), np.ones((20, 20, 1))).astype(np.uint8)  # 200x300
    small = Predictor("camvid", runtime="eager", max_size=150)
    labels = small(image)
    assert labels.shape == (200, 300)
    # oracle: the same model on the image resized to 100x150 (as a uint8 image, antialiased), labels
    # upscaled by pixel repetition
    full = Predictor("camvid", runtime="eager", max_size=None)
    resized = torch.nn.functional.interpolate(torch.from_numpy(image).permute(2, 0, 1)[None], size=(100, 150),
                                              mode="bilinear", align_corners=False, antialias=True)
    x = full.preprocess(resized[0].permute(1, 2, 0).numpy())
    expected = full.runtime(x).max(1).indices[0].numpy().astype(np.uint8).repeat(2, 0).repeat(2, 1)
    assert (labels == expected).mean() > 0.999


def test_device_cuda_without_a_gpu(tmp_path, capfd):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, err = _run(["predict", "--out", tmp_path / "o", "--device", "cuda"], capfd)
    assert code == 2 and "cuda" in _error_line(err)
    with pytest.raises(HypersegError, match="CUDA is not available"):
        Predictor("camvid", device="cuda")


# --------------------------------------------------------------------------------------------- profile

def test_profile_bad_and_huge_sizes(capfd):
    code, err = _run(["profile", "camvid", "--height", "-5"], capfd)
    assert code == 2 and "-5" in _error_line(err)
    # counted on the meta device: a size that could never be allocated is counted in a moment
    assert cli_main(["profile", "camvid", "--height", "40000", "--width", "60000"]) == 0
    assert '"gmacs"' in capfd.readouterr().out


# ------------------------------------------------------------------------------------------------- API

def test_api_casts_float64_and_float16_input():
    model = hyperseg.load_model("camvid")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        got64 = model(x.double())
        got16 = model(x.half())
    assert got64.dtype == torch.float32 and torch.equal(got64, expected)
    assert got16.dtype == torch.float32 and (got16 - expected).abs().max() < 0.05 * expected.abs().max()


@pytest.mark.parametrize("call, match", [
    (lambda: hyperseg.load_model("camvid")(torch.zeros(0, 3, 64, 64)), "empty"),
    (lambda: hyperseg.load_model(None), "load_model expects"),
    (lambda: hyperseg.from_official(123), "from_official expects"),
    (lambda: Predictor("camvid", runtime="eager", scales=()), "scales is empty"),
    (lambda: Predictor("camvid", runtime="eager", scales=(0.0,)), "scale 0.0"),
    (lambda: hyperseg.create_model("hyperseg_s_camvid", in_channels=-1), "in_channels"),
    (lambda: hyperseg.create_model("hyperseg_s_camvid", num_classes=0), "num_classes"),
])
def test_api_bad_arguments_raise_our_error(call, match):
    with pytest.raises(HypersegError, match=match):
        call()


# ------------------------------------------------------------------------------------------- catch-all

def test_debug_shows_the_traceback_and_bugs_are_never_hidden(tiny_camvid, monkeypatch, capfd):
    args = ["eval", "--data", tiny_camvid, "--split", "val", "--runtime", "eager", "--scales", "0"]
    assert _run(args, capfd)[0] == 2
    with pytest.raises(HypersegError, match="scale 0.0"):
        cli_main(["--debug", *map(str, args)])
    with pytest.raises(HypersegError, match="scale 0.0"):
        cli_main([*map(str, args), "--debug"])

    def bug(*_, **__):
        raise ZeroDivisionError("a bug in hyperseg")

    monkeypatch.setattr(sys.modules["hyperseg.train.evaluate"], "evaluate", bug)
    with pytest.raises(ZeroDivisionError):  # not our error class: not turned into a one-liner
        cli_main([str(a) for a in args[:-2]])


# ------------------------------------------------------------------------------------------ check-data

def test_check_data_reads_every_pair_and_names_bad_ones(tiny_camvid, tmp_path, capfd):
    assert _run(["check-data", "--data", tiny_camvid], capfd)[0] == 0
    root = tmp_path / "camvid"
    shutil.copytree(tiny_camvid, root)
    Image.fromarray(np.full((64, 96), 40, np.uint8)).save(root / "trainannot" / "002.png")  # class 40 of 11
    (root / "val" / "000.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    before = _snapshot(root)
    code = cli_main(["check-data", "--data", str(root)])
    out, err = capfd.readouterr()
    assert code == 2 and "Traceback" not in err
    assert "trainannot/002.png: label values [40]" in err and "val/000.png" in err
    assert "train: 5 pairs read, 1 bad" in out and "val: 1 pairs read, 1 bad" in out
    assert _snapshot(root) == before


def test_a_folder_named_hyperseg_in_the_working_directory_does_not_shadow_the_package(tmp_path):
    # A clone is a folder called hyperseg/ without __init__.py; Python started next to it must
    # still import the installed package (the src/ layout), not an empty namespace package.
    (tmp_path / "hyperseg" / "tests").mkdir(parents=True)
    out = subprocess.run([sys.executable, "-c", "import hyperseg; print(hyperseg.__file__, hyperseg.__version__)"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path, version = out.stdout.split()
    assert path.endswith("__init__.py") and Path(path).parent != tmp_path / "hyperseg" and version


def test_every_option_has_help_and_shows_its_default():
    import argparse

    from hyperseg.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"list", "convert", "train", "eval", "predict", "export", "bench", "check-data", "profile"} <= set(commands)
    for name, command in commands.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"hyperseg {name} {action.dest}: no help text"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                own, where = " ".join(action.help.split()), f"hyperseg {name} {action.option_strings[0]}"
                if "default" in own:  # the help states its default itself: shown as written, not twice
                    assert own in text and f"{own} (default:" not in text, where
                else:
                    assert f"{own} (default: {action.default})" in text, f"{where}: default not shown"
    # what a reader sees, spelled out
    help_text = {name: " ".join(command.format_help().split()) for name, command in commands.items()}
    assert "--batch-size BATCH_SIZE images per forward pass (same-size images only) (default: 1)" in help_text["eval"]
    assert "--opset OPSET ONNX opset version, 18 or newer (default: 18)" in help_text["export"]
    assert "--max-upload-mb MAX_UPLOAD_MB largest accepted upload, in MB (default: 20.0)" in help_text["serve"]


# ------------------------------------------------------------------------------- ONNX files that do not fit

def _onnx_file(path, *, meta, in_shape=(1, 3, 64, 64), out_shape=None, second_input=False, nan=False):
    """A hand-made graph: logits = image * factor (factor NaN with ``nan``), so its channels are the input's."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from hyperseg.runtime.onnx_export import write_onnx_meta

    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(in_shape))]
    nodes = [helper.make_node("Mul", ["image", "factor"], ["logits"])]
    if second_input:
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, list(in_shape)))
        nodes = [helper.make_node("Add", ["image", "extra"], ["sum"]), helper.make_node("Mul", ["sum", "factor"], ["logits"])]
    factor = helper.make_tensor("factor", TensorProto.FLOAT, [], [float("nan") if nan else 1.0])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(out_shape or in_shape))
    proto = helper.make_model(helper.make_graph(nodes, "g", inputs, [out], [factor]),
                              opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    write_onnx_meta(proto, {"mean": [0.5] * 3, "std": [0.5] * 3, **meta})
    onnx.save(proto, str(path))
    return path


THREE = {"class_names": ["a", "b", "c"]}


@pytest.mark.parametrize("case, make, expected", [
    ("five classes, three channels", dict(meta={"class_names": list("abcde")}), "expected logits (N, 5, H, W)"),
    ("second input", dict(meta=THREE, second_input=True), "takes 2 inputs"),
    ("rank 3 input", dict(meta=THREE, in_shape=(3, 64, 64)), "expected (N, 3, H, W)"),
    ("one channel", dict(meta=THREE, in_shape=(1, 1, 64, 64)), "expected (N, 3, H, W)"),
    ("huge input", dict(meta=THREE, in_shape=(1, 3, 100000, 100000)), "32..8192"),
    ("std 0", dict(meta={**THREE, "std": [0.0, 0.5, 0.5]}), "metadata std"),
    ("classes not a list", dict(meta={"class_names": 3}), "metadata class_names"),
    ("huge input_size", dict(meta={**THREE, "input_size": [100000, 100000]}), "metadata input_size"),
    ("mean of text", dict(meta={**THREE, "mean": ["a", "b", "c"]}), "metadata mean"),
    ("num_classes disagrees", dict(meta={**THREE, "num_classes": 7}), "num_classes=7 disagrees with class_names; expected 3"),
])
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_files_that_do_not_fit_are_refused_on_load(tmp_path, capfd, case, make, expected, runtime):
    pytest.importorskip(runtime)
    model = _onnx_file(tmp_path / "m.onnx", **make)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    before = _snapshot(tmp_path)
    code, err = _run(["predict", tmp_path / "x.png", "--model", model, "--runtime", runtime, "--out", tmp_path / "o"],
                     capfd)
    assert code == 2 and expected in _error_line(err) and "m.onnx" in err
    assert _snapshot(tmp_path) == before and not (tmp_path / "o").exists()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_outputs_are_checked_when_the_graph_cannot_tell(tmp_path, capfd, runtime):
    pytest.importorskip(runtime)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "x.png")
    nan = _onnx_file(tmp_path / "nan.onnx", meta=THREE, nan=True)
    code, err = _run(["predict", tmp_path / "x.png", "--model", nan, "--runtime", runtime, "--out", tmp_path / "o"],
                     capfd)
    assert code == 2 and "NaN or infinite logits" in _error_line(err)
    dynamic = _onnx_file(tmp_path / "dyn.onnx", meta={"class_names": list("abcde")}, in_shape=(1, 3, "h", "w"),
                         out_shape=("n", "c", "h", "w"))
    code, err = _run(["predict", tmp_path / "x.png", "--model", dynamic, "--runtime", runtime, "--out",
                      tmp_path / "o2"], capfd)
    assert code == 2 and "expected logits (1, 5, H, W)" in _error_line(err)


def test_more_classes_than_a_label_png_holds_is_refused(tmp_path):
    model = _onnx_file(tmp_path / "m.onnx", meta={"class_names": [f"c{i}" for i in range(300)]},
                       in_shape=(1, 3, "h", "w"), out_shape=("n", "c", "h", "w"))
    with pytest.raises(HypersegError, match="predicts 300 classes.*at most 256"):
        Predictor(str(model), runtime="onnxruntime")


# ---------------------------------------------------------------------- checkpoints and arch strings

@pytest.mark.parametrize("field, value, expected", [
    ("config", {"num_classes": "11"}, "num_classes='11' has the wrong type; expected an integer"),
    ("config", {"decoder_channels": 64}, "decoder_channels=64 has the wrong type"),
    ("config", {"encoder_reductions": ["a"] * 5}, "encoder_reductions"),
    ("config", [1, 2], "lacks a config"),
    ("meta", {"class_names": "sky"}, "metadata class_names"),
    ("meta", {"std": [0, 0, 0]}, "metadata std"),
    ("meta", ["not", "a", "dict"], "metadata=['not', 'a', 'dict'] has the wrong type"),
])
def test_checkpoint_fields_of_the_wrong_type_are_one_line(tmp_path, capfd, field, value, expected):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    save_model(model, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt[field] = {**ckpt[field], **value} if isinstance(value, dict) and field == "config" else value
    torch.save(ckpt, tmp_path / "bad.pt")
    code, err = _run(["profile", tmp_path / "bad.pt"], capfd)
    assert code == 2 and expected in _error_line(err) and "bad.pt" in err


def test_checkpoint_asking_for_huge_layers_is_refused_before_allocating(tmp_path, capfd):
    """The stored config is checked against the stored tensors on the meta device: 10^6-channel
    decoder levels would need gigabytes; the refusal needs none (a guard time, not a benchmark)."""
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    save_model(model, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["config"]["decoder_channels"] = [1_000_000, 500_000, 16, 16, 16]
    torch.save(ckpt, tmp_path / "huge.pt")
    script = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
              f"from hyperseg.cli import main; sys.exit(main(['profile', {str(tmp_path / 'huge.pt')!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "do not fit the stored config" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("arch, expected", [
    ("hyperseg_efficientnet('efficientnet-b1', num_classes='x', level_channels=[64, 32, 16, 16, 16])", "wrong type"),
    ("hyperseg_efficientnet('efficientnet-b1', level_channels=5)", "wrong type"),
    ("hyperseg_efficientnet('efficientnet-b1')", "lacks the argument 'level_channels'"),
    ("hyperseg_efficientnet('efficientnet-b1', level_channels=['a', 'b', 'c', 'd', 'e'])", "has the wrong type"),
    ("hyperseg_efficientnet('efficientnet-b1', weight_groups='x', level_channels=[64, 32, 16, 16, 16])", "weight_groups"),
])
def test_authors_arch_strings_of_the_wrong_shape_are_one_line(tmp_path, capfd, arch, expected):
    pth = tmp_path / "a.pth"
    torch.save({"arch": f"models.hyperseg_v1_0.{arch}", "state_dict": {"w": torch.zeros(1)}}, pth)
    code, err = _run(["convert", pth, tmp_path / "out.pt"], capfd)
    assert code == 2 and expected in _error_line(err) and not (tmp_path / "out.pt").exists()
