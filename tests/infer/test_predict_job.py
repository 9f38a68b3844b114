"""Many images: predict and eval sharded over torchrun (gloo on CPU), and predict --resume."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main
from hyperseg.process.distributed import Process, shard
from hyperseg.infer.predictor import Predictor
from hyperseg.infer.manifest import MANIFEST_NAME, read_done

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model = hyperseg.create_model("hyperseg", num_classes=11, encoder_name="tf_efficientnet_lite0",
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    return hyperseg.save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def _images(folder: Path, count: int, size=(64, 96), seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"frame_{i:03d}.png")
    return folder


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _outputs(folder: Path) -> dict[str, str]:
    """The label PNGs and overlays, without the manifest and the done logs."""
    return {k: v for k, v in _hashes(folder).items() if not k.startswith(".") and k != MANIFEST_NAME}


def _predict(args, capfd=None):
    code = cli_main(["predict", *[str(a) for a in args]])
    err = capfd.readouterr().err if capfd else ""
    assert "Traceback" not in err, err
    return code, err


def test_shards_are_disjoint_balanced_and_cover_the_list():
    items = list(range(11))
    shares = [shard(items, Process(device=None, rank=r, world=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == items and [len(s) for s in shares] == [4, 4, 3]


def test_two_processes_write_the_same_bytes_as_one(tiny_model, tmp_path):
    inputs = _images(tmp_path / "in", 7)
    one = subprocess.run([sys.executable, "-m", "hyperseg", "predict", inputs, "--out", tmp_path / "one",
                          "--model", tiny_model, "--runtime", "torch"], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*TORCHRUN, "-m", "hyperseg", "predict", inputs, "--out", tmp_path / "two",
                          "--model", tiny_model, "--runtime", "torch"], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two") and len(_outputs(tmp_path / "one")) == 14
    summaries = [line for line in two.stderr.splitlines() if "inputs segmented" in line]
    assert len(summaries) == 1 and "7 inputs segmented" in summaries[0] and "over 2 processes" in summaries[0]
    logs = sorted((tmp_path / "two" / ".hyperseg-predict").glob("done-*.txt"))
    assert [len(p.read_text().splitlines()) for p in logs] == [4, 3]  # each rank did its own share


@pytest.mark.slow  # two ranks; the two-rank prediction test runs the same sharding by default
def test_two_process_eval_equals_one_process(tiny_model, tiny_camvid, tmp_path):
    common = ["eval", str(tiny_model), "--data", str(tiny_camvid), "--split", "train", "--workers", "0",
              "--runtime", "torch"]
    one = subprocess.run([sys.executable, "-m", "hyperseg", *common, "--out", str(tmp_path / "one.json")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*TORCHRUN, "-m", "hyperseg", *common, "--out", str(tmp_path / "two.json")],
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert a["confusion_matrix"] == b["confusion_matrix"] and sum(map(sum, a["confusion_matrix"])) > 0
    assert a == b
    assert two.stdout.count("mIoU") == 1  # rank 0 alone reports


def _rank_pid(parent: int, rank: int):
    """The pid of the torchrun worker with RANK=rank among ``parent``'s descendants."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" in b"\0".join(env) and ppid != 1:
            # a worker is torchrun's grandchild or child; check that torchrun is an ancestor
            pid = int(proc.name)
            ancestor = ppid
            for _ in range(4):
                if ancestor == parent:
                    return pid
                try:
                    ancestor = int(next(line.split()[1] for line in (Path("/proc") / str(ancestor) / "status")
                                        .read_text().splitlines() if line.startswith("PPid:")))
                except (OSError, StopIteration):
                    break
    return None


@pytest.mark.slow  # two ranks, one killed, then a resume: half a minute on two cores
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_kill_9_of_one_rank_then_resume_completes_without_redoing(tiny_model, tmp_path):
    inputs = _images(tmp_path / "in", 24, size=(384, 512))
    reference = subprocess.run([sys.executable, "-m", "hyperseg", "predict", inputs, "--out", tmp_path / "ref",
                                "--model", tiny_model, "--runtime", "torch"], env=_env(), capture_output=True,
                               text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "out"
    argv = [*TORCHRUN, "-m", "hyperseg", "predict", inputs, "--out", out, "--model", tiny_model, "--runtime", "torch"]
    job = subprocess.Popen([str(a) for a in argv], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    log = out / ".hyperseg-predict" / "done-1.txt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    victim = _rank_pid(job.pid, 1)
    assert victim is not None and job.poll() is None, "rank 1 finished before it could be killed"
    os.kill(victim, signal.SIGKILL)
    job.communicate(timeout=300)
    assert job.returncode != 0
    finished_before = set(read_done(out))
    assert 0 < len(finished_before) < 24
    resumed = subprocess.run([str(a) for a in argv + ["--resume"]], env=_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _outputs(out) == _outputs(tmp_path / "ref")  # every output, byte for byte
    done = read_done(out)
    assert len(done) == len(set(done)), "an input was segmented twice"
    assert set(done) >= finished_before
    summary = next(line for line in resumed.stderr.splitlines() if "inputs segmented" in line)
    skipped = int(summary.split("segmented, ")[1].split(" already done")[0])
    assert skipped >= len(finished_before)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the killed rank's temporaries are gone


def test_a_used_out_is_refused_without_resume_and_resume_refuses_other_options(tiny_model, tmp_path, capfd):
    inputs = _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    base = [inputs, "--out", out, "--model", tiny_model, "--runtime", "torch"]
    assert _predict(base, capfd)[0] == 0
    before = _hashes(out)
    for extra, words in (([], "--resume"), (["--resume", "--flip"], "flip"), (["--resume", "--alpha", "0.3"], "alpha"),
                         (["--resume", "--runtime", "eager"], "runtime"), (["--resume", "--overwrite"], "exclude")):
        code, err = _predict([*base, *extra] if "--runtime" not in extra else
                             [inputs, "--out", out, "--model", tiny_model, *extra], capfd)
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and words in lines[0], err
        assert _hashes(out) == before
    other_inputs = _images(tmp_path / "more", 4, seed=1)
    code, err = _predict([other_inputs, "--out", out, "--model", tiny_model, "--runtime", "torch", "--resume"], capfd)
    assert code == 2 and "inputs differ" in err and _hashes(out) == before
    code, err = _predict([*base, "--resume"], capfd)
    assert code == 0 and "0 inputs segmented, 3 already done" in err and _hashes(out) == before


def test_files_predict_did_not_write_are_never_replaced_without_overwrite(tiny_model, tmp_path, capfd):
    inputs = _images(tmp_path / "in", 2)
    out = tmp_path / "results"
    out.mkdir()
    (out / "frame_000.png").write_bytes(b"the user's own picture")
    (out / "notes.txt").write_text("unrelated")
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch"], capfd)
    assert code == 2 and "--overwrite" in err and (out / "frame_000.png").read_bytes() == b"the user's own picture"
    assert sorted(p.name for p in out.iterdir()) == ["frame_000.png", "notes.txt"]  # nothing written at all
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch", "--overwrite"], capfd)
    assert code == 0 and Image.open(out / "frame_000.png").mode == "P" and (out / "notes.txt").read_text() == "unrelated"


def test_resume_removes_only_its_own_stale_temporaries(tiny_model, tmp_path, capfd):
    inputs = _images(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch"], capfd)[0] == 0
    (out / "frame_001_overlay.jpg").unlink()  # as if killed between the two files
    (out / ".frame_001_overlay.jpg.k3x9q_1a.tmp").write_bytes(b"half")
    (out / ".someone_else.jpg.abc.tmp").write_bytes(b"not ours")
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch", "--resume"], capfd)
    assert code == 0 and "1 inputs segmented, 1 already done" in err
    assert (out / "frame_001_overlay.jpg").is_file() and not (out / ".frame_001_overlay.jpg.k3x9q_1a.tmp").exists()
    assert (out / ".someone_else.jpg.abc.tmp").read_bytes() == b"not ours"


@pytest.mark.parametrize("overlap", [True, False])
def test_batches_and_overlap_give_the_labels_of_single_images(tiny_model, tmp_path, overlap):
    inputs = _images(tmp_path / "in", 5, seed=3)
    (tmp_path / "in" / "odd.png").write_bytes(b"not a png")  # a failure in the middle of the batch stream
    _images(tmp_path / "in2", 1, size=(96, 64), seed=4).joinpath("frame_000.png").rename(inputs / "frame_002b.png")
    predictor = Predictor(str(tiny_model), runtime="torch")
    files = sorted(inputs.iterdir())
    failures = []
    written = predictor.predict_files(files, tmp_path / "out", batch_size=3, overlap=overlap, failures=failures,
                                      progress=False)
    assert [p.name for p, _ in failures] == ["odd.png"]
    assert len(written) == 2 * 6
    for path in files:
        if path.name == "odd.png":
            continue
        expected = predictor(np.asarray(Image.open(path).convert("RGB")))  # the oracle: one image at a time
        got = np.asarray(Image.open(tmp_path / "out" / f"{path.stem}.png"))
        np.testing.assert_array_equal(got, expected)


def test_bad_batch_size_is_one_line(capfd):
    with pytest.raises(SystemExit) as exit:  # argparse refuses it, with its usage line and one error line
        cli_main(["predict", "--batch-size", "0"])
    err = capfd.readouterr().err
    assert exit.value.code == 2 and "--batch-size: 0 is out of range" in err and "Traceback" not in err


# --- outputs: unique names, links, damaged manifests, videos, the machine's own failures ---

def _one_error(err: str) -> str:
    """The single error sentence predict printed (its info lines aside)."""
    errors = [line for line in err.splitlines() if line.startswith("hyperseg predict: error")]
    assert len(errors) == 1, err
    return errors[0]


def test_output_names_are_unique_ignoring_case_and_never_take_another_inputs_name():
    from hyperseg.infer.predictor import output_names

    for files in ([Path("a.PNG"), Path("a.png"), Path("a_png_1.png")],
                  [Path("d1/x.png"), Path("d2/x.png"), Path("d3/x_png_1.png")],
                  [Path("A.png"), Path("a.png")]):
        names = output_names(files)
        assert len({n.casefold() for n in names}) == len(files), names
    # an input whose own stem is unique keeps it; the repeated ones count past it
    assert output_names([Path("d1/x.png"), Path("d2/x.png"), Path("d3/x_png_1.png")]) == ["x_png_2", "x_png_3", "x_png_1"]


def test_a_250_byte_input_name_gives_short_unique_outputs_and_resume_works(tiny_model, tmp_path, capfd):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    stems = ["a" * 246, "a" * 245 + "b"]  # 250 bytes with ".png"; equal for their first 245 bytes
    for stem in stems:
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    out = tmp_path / "out"
    code, err = _predict([folder, "--out", out, "--model", tiny_model, "--runtime", "torch"], capfd)
    assert code == 0, err
    labels = sorted(p.name for p in out.glob("*.png"))
    assert len(labels) == 2 and all(len(n.encode()) - len(".png") <= 255 - len("._overlay.tmp.mp4") for n in labels)
    code, err = _predict([folder, "--out", out, "--model", tiny_model, "--runtime", "torch", "--resume"], capfd)
    assert code == 0 and "2 already done" in err, err


@pytest.mark.parametrize("link", [".hyperseg-predict", ".hyperseg-predict/done-0.txt"])
def test_a_link_where_predict_keeps_its_records_is_refused_and_its_target_untouched(tiny_model, tmp_path, capfd, link):
    inputs = _images(tmp_path / "in", 2, size=(40, 56))
    out = tmp_path / "out"
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch"], capfd)
    assert code == 0, err
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "done-0.txt").write_text("someone else's\n")
    (victim / "notes.txt").write_text("keep\n")
    before = _hashes(victim)
    path = out / link
    if link.endswith(".txt"):
        path.unlink()
        path.symlink_to(victim / "notes.txt")
    else:
        import shutil

        shutil.rmtree(path)
        path.symlink_to(victim, target_is_directory=True)
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch", "--resume"], capfd)
    assert code == 2 and "symbolic link" in _one_error(err), err
    # --overwrite forgets the old logs: a link inside the folder goes with it, never what it points at
    code, err = _predict([inputs, "--out", out, "--model", tiny_model, "--runtime", "torch", "--overwrite"], capfd)
    assert (code, "symbolic link" in err) == ((0, False) if link.endswith(".txt") else (2, True)), err
    assert _hashes(victim) == before


@pytest.mark.parametrize("inputs", [[1, 2], None, {"count": "2"}])
def test_a_manifest_with_damaged_inputs_is_one_line(tiny_model, tmp_path, capfd, inputs):
    images = _images(tmp_path / "in", 2, size=(40, 56))
    out = tmp_path / "out"
    assert _predict([images, "--out", out, "--model", tiny_model, "--runtime", "torch"], capfd)[0] == 0
    record = json.loads((out / MANIFEST_NAME).read_text())
    record["inputs"] = inputs
    (out / MANIFEST_NAME).write_text(json.dumps(record))
    code, err = _predict([images, "--out", out, "--model", tiny_model, "--runtime", "torch", "--resume"], capfd)
    assert code == 2 and MANIFEST_NAME in _one_error(err), err


def test_bad_videos_are_skipped_and_listed_like_bad_images(tiny_model, tmp_path, capfd):
    cv2 = pytest.importorskip("cv2")
    folder = _images(tmp_path / "in", 1, size=(40, 56))
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 10)
    writer = cv2.VideoWriter(str(folder / "tiny.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (16, 16))
    for _ in range(3):
        writer.write(np.zeros((16, 16, 3), np.uint8))
    writer.release()
    out = tmp_path / "out"
    files = [folder / "broken.mp4", folder / "tiny.mp4", folder / "frame_000.png"]  # the image comes last
    code, err = _predict([*[str(f) for f in files[:0]], str(folder / "*"), "--out", out, "--model", tiny_model,
                          "--runtime", "torch"], capfd)
    assert code == 1, err
    assert (out / "frame_000.png").is_file() and (out / "frame_000_overlay.jpg").is_file()
    assert "broken.mp4" in err and "tiny.mp4" in err and "2 of 3 inputs failed" in err
    assert not any(p.name.endswith(".tmp.mp4") or p.suffix == ".mp4" for p in out.iterdir())


def test_the_machines_own_failure_stops_the_job_at_the_first_input(tiny_model, tmp_path, capfd, monkeypatch):
    from hyperseg.errors import ResourceError

    calls = []

    def no_cache(self, images):
        calls.append(len(images))
        raise ResourceError("the cache folder /nowhere is read-only")

    monkeypatch.setattr(Predictor, "segment", no_cache)
    inputs = _images(tmp_path / "in", 6, size=(40, 56))
    code, err = _predict([inputs, "--out", tmp_path / "out", "--model", tiny_model, "--runtime", "torch"], capfd)
    assert code == 2 and "read-only" in _one_error(err), err
    assert calls == [1]
