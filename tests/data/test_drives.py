"""Drive filters: leave-one-drive-out folds in train, eval and check-data, on a tiny folder dataset."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from hyperseg.cli import main as cli_main
from hyperseg.data import DataError, build_dataset, drive_counts

PATTERN = r"^(drive[A-Z])-"
DRIVES = {"driveA": 3, "driveB": 2, "driveC": 2}


@pytest.fixture(scope="module")
def drives_root(tmp_path_factory):
    """A folder dataset of 7 frames from three drives (``driveA-000.png`` ...), 64x96, 3 classes."""
    root = tmp_path_factory.mktemp("drives")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for drive, n in DRIVES.items():
        for i in range(n):
            label = rng.integers(0, 3, size=(4, 6)).repeat(16, 0).repeat(16, 1).astype(np.uint8)
            image = np.stack([label * 80, 255 - label * 80, label * 40], -1).astype(np.uint8)
            Image.fromarray(image).save(root / "images" / f"{drive}-{i:03d}.png")
            Image.fromarray(label).save(root / "masks" / f"{drive}-{i:03d}.png")
    (root / "classes.yaml").write_text("- bg\n- road\n- car\n")
    return root


def test_drive_counts_and_selection(drives_root):
    ds = build_dataset("folder", drives_root, None)
    assert dict(drive_counts(ds, PATTERN)) == DRIVES
    fold = build_dataset("folder", drives_root, None, drives=["driveA", "driveC"], drive_pattern=PATTERN)
    assert sorted(p.name for p, _ in fold.samples) == sorted(p.name for p, _ in ds.samples if not p.name.startswith("driveB"))


def test_a_drive_the_split_lacks_names_filter_split_and_drives(drives_root):
    with pytest.raises(DataError) as err:
        build_dataset("folder", drives_root, None, drives=["driveZ"], drive_pattern=PATTERN)
    text = str(err.value)
    assert "['driveZ']" in text and "split None" in text and "driveA (3), driveB (2), driveC (2)" in text


def test_folder_datasets_need_a_pattern(drives_root):
    with pytest.raises(Exception, match="drive pattern"):
        build_dataset("folder", drives_root, None, drives=["driveA"])


def test_camvid_drive_is_the_prefix(tmp_path):
    for split, names in (("train", ["0001TP_1", "0006R0_2", "0016E5_3"]), ("val", ["0016E5_9"])):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for name in names:
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / split / f"{name}.png")
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / f"{split}annot" / f"{name}.png")
    ds = build_dataset("camvid", tmp_path, "train+val", drives=["0001TP", "0016E5"])
    assert sorted(p.stem for p, _ in ds.samples) == ["0001TP_1", "0016E5_3", "0016E5_9"]


def test_check_data_lists_drives_and_filters(drives_root, capsys):
    args = ["check-data", "--dataset", "folder", "--data", str(drives_root), "--splits", "all",
            "--drive-pattern", PATTERN]
    assert cli_main(args) == 0
    assert "drives: driveA (3), driveB (2), driveC (2)" in capsys.readouterr().out
    assert cli_main(args + ["--drives", "driveB"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs read" in out and "drives: driveB (2)" in out
    assert cli_main(args + ["--drives", "driveQ"]) == 2
    err = capsys.readouterr().err
    assert "driveQ" in err and "driveA (3)" in err and len(err.strip().splitlines()) == 1


def _train(root, out, *extra):
    return cli_main(["train", "model.name=hyperseg", "model.options.encoder_name=tf_efficientnet_lite0",
                     "model.options.weight_groups=[16,16,8,8,4]", "data.dataset=folder", f"data.root={root}",
                     "data.train_split=all", "data.val_split=all", f"data.drive_pattern={PATTERN}",
                     "data.crop_size=[64,96]", "data.batch_size=2", "data.workers=0", "optim.max_iters=2",
                     "train.val_interval=2", "train.tensorboard=false", "train.progress=false",
                     f"train.out_dir={out}", *extra])


def test_leave_one_drive_out_trains_on_some_and_validates_on_the_other(drives_root, tmp_path, capsys):
    """Validation sees exactly the held-out drive: its pixel count is that drive's, and `eval --drives`
    on the run's weights equals eval on a copy of the dataset that holds only that drive."""
    out = tmp_path / "fold"
    assert _train(drives_root, out, "data.train_drives=[driveA,driveB]", "data.val_drives=[driveC]") == 0
    val = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in l][-1]
    assert val["pixels"] == DRIVES["driveC"] * 64 * 96

    only_c = tmp_path / "only_c"
    (only_c / "images").mkdir(parents=True)
    (only_c / "masks").mkdir()
    shutil.copy(drives_root / "classes.yaml", only_c)
    for sub in ("images", "masks"):
        for f in (drives_root / sub).glob("driveC-*"):
            shutil.copy(f, only_c / sub)
    results = {}
    for name, data, extra in (("fold", drives_root, ["--drives", "driveC", "--drive-pattern", PATTERN]),
                              ("copy", only_c, [])):
        results[name] = tmp_path / f"{name}.json"
        assert cli_main(["eval", str(out / "last.pt"), "--dataset", "folder", "--data", str(data), "--split", "all",
                         "--workers", "0", "--runtime", "torch", "--out", str(results[name]), *extra]) == 0
    fold, copy = (json.loads(results[k].read_text()) for k in ("fold", "copy"))
    assert fold["confusion_matrix"] == copy["confusion_matrix"]


def test_a_filter_that_empties_a_split_fails_before_training(drives_root, tmp_path, capsys):
    out = tmp_path / "bad"
    assert _train(drives_root, out, "data.val_drives=[driveX]") == 2
    err = capsys.readouterr().err
    assert "driveX" in err and "driveC (2)" in err and "Traceback" not in err
    assert not out.exists()


@pytest.fixture(scope="module")
def three_class_model(tmp_path_factory):
    import hyperseg

    path = tmp_path_factory.mktemp("model") / "m.pt"
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    model.meta.update(class_names=["bg", "road", "car"])
    hyperseg.save_model(model, path)
    return path


@pytest.mark.parametrize("args, named", [
    (["check-data", "--splits", "+"], "--splits='+'"),
    (["check-data", "--splits", "all,all+"], "--splits='all+'"),
    (["check-data", "--splits", ""], "--splits=''"),
    (["check-data", "--splits", " , "], "--splits=' , '"),
    (["check-data", "--splits", "all", "--drive-pattern", "("], "--drive-pattern='('"),
    (["check-data", "--splits", "all", "--drive-pattern", "drive"], "--drive-pattern='drive'"),
    (["eval", "--split", "+"], "--split='+'"),
    (["eval", "--split", "all+"], "--split='all+'"),
    (["eval", "--split", "all", "--drive-pattern", "("], "--drive-pattern='('"),
], ids=["splits-plus", "splits-trailing-plus", "splits-empty", "splits-commas", "check-pattern", "check-no-group",
        "eval-plus", "eval-trailing-plus", "eval-pattern"])
def test_bad_split_or_pattern_options_are_one_line_before_any_work(drives_root, three_class_model, capsys, args,
                                                                   named):
    """An empty split name, an empty split list, or a drive pattern that is no regular expression (used by a
    drive filter or not): exit 2 and one line naming the option and its value, with nothing reported before."""
    model = ["--model", str(three_class_model), "--workers", "0"] if args[0] == "eval" else []
    capsys.readouterr()
    code = cli_main([*args, *model, "--dataset", "folder", "--data", str(drives_root)])
    out, err = capsys.readouterr()
    assert code == 2 and named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""  # refused before anything was checked or scored


@pytest.mark.parametrize("override, named", [("data.train_split=+", "data.train_split='+'"),
                                             ("data.val_split=all+", "data.val_split='all+'"),
                                             ("data.drive_pattern=(", "data.drive_pattern='('")])
def test_bad_split_or_pattern_in_the_config_is_one_line(drives_root, tmp_path, capsys, override, named):
    out = tmp_path / "run"
    assert _train(drives_root, out, override) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()
