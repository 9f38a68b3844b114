"""eval and predict options not covered by cli/test_options.py, each on its success path and checked
against an independent oracle: a naive sliding window computed by hand with the eager model, the
model cache's files read back, the calibration images the audit hook saw opened, or a counted call.

Like cli/test_options.py, the fast built-in weights run with ``--runtime torch --precision fp32``
where the option does not need another runtime, so that the eager model is the oracle's arithmetic.
"""
import dataclasses
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

from .oracle import MISMATCH, SAMPLE, naive_confusion, naive_labels, read_labels, read_rgb, run_eval, run_predict

WINDOW = (32, 48)


def _calibration_folder(folder: Path, n: int = 3) -> list:
    folder.mkdir()
    rng = np.random.default_rng(1)
    files = []
    for i in range(n):
        files.append(folder / f"c{i}.png")
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(files[-1])
    return files


def _opened_in(file_opens, folder: Path) -> set:
    return {Path(p).name for p in file_opens.paths() if isinstance(p, (str, Path)) and Path(p).parent == folder}


def _cached_onnx(folder: Path) -> list:
    return sorted(p.name for p in folder.rglob("*.onnx"))


# ------------------------------------------------------------------------------------------------- eval

def test_eval_window_is_a_naive_sliding_window(eager, tiny_camvid, plain_confusion, tmp_path, capsys):
    got = np.asarray(run_eval(["--data", tiny_camvid, "--split", "val", "--window", "32x48"], tmp_path / "m.json",
                           capsys)["confusion_matrix"])
    expected = naive_confusion(eager, tiny_camvid, window=WINDOW)
    pixels = expected.sum()
    assert got.sum() == pixels
    assert np.abs(got - expected).sum() <= 2 * MISMATCH * pixels
    assert np.abs(plain_confusion - expected).sum() > 10 * MISMATCH * pixels  # windows change the labels


def test_eval_device_cpu_runs_on_the_cpu_where_auto_would_take_cuda(tiny_camvid, plain_confusion, tmp_path,
                                                                   monkeypatch, capsys):
    """With a GPU reported present, auto would pick CUDA (and fail here, where there is none behind
    the report); --device cpu must keep everything on the CPU and give the eager model's confusion."""
    import hyperseg.runtime as runtime_package

    built = []
    load_runtime = runtime_package.load_runtime

    def spy(*args, **kwargs):
        made = load_runtime(*args, **kwargs)
        built.append(made)
        return made

    monkeypatch.setattr(runtime_package, "load_runtime", spy)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got = run_eval(["--data", tiny_camvid, "--split", "val", "--device", "cpu"], tmp_path / "m.json", capsys)
    assert [r.device for r in built] == [torch.device("cpu")]
    np.testing.assert_array_equal(np.asarray(got["confusion_matrix"]), plain_confusion)


@pytest.mark.slow  # a dynamic-shape export takes ~35 s here
def test_eval_shapes_dynamic_converts_one_file_for_every_size(tiny_camvid, plain_confusion, tmp_path, monkeypatch,
                                                              capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HYPERSEG_CACHE", str(cache))
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "fp32"]
    got = run_eval(["--data", tiny_camvid, "--split", "val", "--shapes", "dynamic"], tmp_path / "m.json", capsys,
                model=model)
    files = _cached_onnx(cache)
    assert len(files) == 1 and "dynamic-fp32" in files[0], files  # static would name its padded size
    assert "one file for every size" in capsys.readouterr().err
    m = np.asarray(got["confusion_matrix"])
    assert m.sum() == plain_confusion.sum()
    assert np.abs(m - plain_confusion).sum() <= 2 * MISMATCH * m.sum()  # fp32 in another runtime: rounding only


def test_eval_int8_calibrates_on_the_given_folder(tiny_camvid, plain_confusion, tmp_path, monkeypatch, capsys,
                                                  file_opens):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))  # nothing converted before: it must calibrate
    calibration = tmp_path / "calibration"
    _calibration_folder(calibration)
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "int8",
             "--calibration", str(calibration)]
    with file_opens.watch():
        got = run_eval(["--data", tiny_camvid, "--split", "val"], tmp_path / "m.json", capsys, model=model)
    assert _opened_in(file_opens, calibration) == {"c0.png", "c1.png", "c2.png"}
    assert "int8" in capsys.readouterr().err
    assert any("int8" in name for name in _cached_onnx(tmp_path / "cache"))
    m = np.asarray(got["confusion_matrix"])
    assert m.sum() == plain_confusion.sum()
    assert np.trace(m) / m.sum() > np.trace(plain_confusion) / m.sum() - 0.1  # int8: close to fp32, not noise


@pytest.fixture(scope="module")
def bare_onnx(tmp_path_factory) -> Path:
    """camvid_fast exported for 64x96 inputs (tiny_camvid's size), its hyperseg metadata removed."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("bare")
    assert cli_main(["export", "-m", "camvid_fast", "--out", str(folder / "full.onnx"), "--size", "64x96"]) == 0
    proto = onnx.load(str(folder / "full.onnx"))
    keep = [p for p in proto.metadata_props if not p.key.startswith("hyperseg")]
    assert len(keep) < len(proto.metadata_props)
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(folder / "bare.onnx"))
    return folder / "bare.onnx"


def test_eval_mean_std_classes_describe_an_onnx_file_without_metadata(eager, bare_onnx, tmp_path, capsys):
    # a street scene at the file's size; its labels are the weights' own at the native size
    root = tmp_path / "data"
    for sub in ("val", "valannot"):
        (root / sub).mkdir(parents=True)
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((96, 64), Image.BILINEAR))
    Image.fromarray(image).save(root / "val" / "000.png")
    weights_meta = {"mean": eager.meta["mean"], "std": eager.meta["std"]}  # no input scale: the file has none
    Image.fromarray(naive_labels(eager, image, meta=weights_meta)).save(root / "valannot" / "000.png")
    mean, std = [0.3, 0.45, 0.6], [0.25, 0.5, 0.4]
    args = ["--data", root, "--split", "val"]
    model = ["--model", bare_onnx, "--runtime", "onnxruntime"]
    # without them the file is refused: it cannot be normalised
    assert cli_main(["eval", *map(str, args), "--workers", "0", *map(str, model)]) == 2
    assert "--mean, --std and --classes" in capsys.readouterr().err
    got = run_eval([*args, "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
                 "--classes", ",".join(f"k{i}" for i in range(11))], tmp_path / "m.json", capsys, model=model)
    expected = naive_confusion(eager, root, meta={"mean": mean, "std": std})
    weights = naive_confusion(eager, root, meta=weights_meta)
    m = np.asarray(got["confusion_matrix"])
    assert m.sum() == expected.sum()
    assert np.abs(m - expected).sum() <= 2 * MISMATCH * m.sum()
    assert np.abs(weights - expected).sum() > 10 * MISMATCH * m.sum()  # the given normalisation matters


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_shapes_reaches_the_runtime_loader(tiny_camvid, street, tmp_path, monkeypatch, command, shapes):
    """The fast counterpart of the two slow conversions below: --shapes is what load_runtime is
    asked for (the conversion itself is stood in for by the torch runtime, which ignores it)."""
    import hyperseg.runtime as runtime_package

    asked = []
    load_runtime, init = runtime_package.load_runtime, hyperseg.Predictor.__init__

    def torch_fp32(kwargs):
        asked.append(kwargs["options"])
        return {**kwargs, "options": dataclasses.replace(kwargs["options"], runtime="torch", precision="fp32")}

    def spy(source, **kwargs):  # eval asks load_runtime
        return load_runtime(source, **torch_fp32(kwargs))

    def spy_init(self, source, **kwargs):  # predict asks a Predictor
        init(self, source, **torch_fp32(kwargs))

    monkeypatch.setattr(runtime_package, "load_runtime", spy)
    monkeypatch.setattr(hyperseg.Predictor, "__init__", spy_init)
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "fp32", "--shapes", shapes]
    if command == "eval":
        run_eval(["--data", tiny_camvid, "--split", "val"], tmp_path / "m.json", model=model)
    else:
        run_predict([street], tmp_path / "out", model=model)
    assert [(a.runtime, a.shapes) for a in asked] == [("onnxruntime", shapes)]


# ---------------------------------------------------------------------------------------------- predict

def test_predict_window_is_a_naive_sliding_window(eager, street, tmp_path, capsys):
    run_predict([street, "--window", "32x48"], tmp_path / "out", capsys)
    got = read_labels(tmp_path / "out" / "street.png")
    image = read_rgb(street)
    expected, plain = naive_labels(eager, image, window=WINDOW), naive_labels(eager, image)
    assert (got != expected).mean() <= MISMATCH
    assert (plain != expected).mean() > 5 * MISMATCH


@pytest.mark.parametrize("overlap", [True, False])
def test_predict_overlap_encodes_in_a_writer_thread_and_gives_the_same_files(eager, street, tmp_path, monkeypatch,
                                                                            capsys, overlap):
    folder = tmp_path / "in"
    folder.mkdir()
    image = read_rgb(street)
    for i, picture in enumerate([image, image[:, ::-1], image[::-1]]):
        Image.fromarray(np.ascontiguousarray(picture)).save(folder / f"{i}.png")
    threads = []
    label_image = hyperseg.Predictor.label_image

    def spy(self, labels):
        threads.append(threading.current_thread())
        return label_image(self, labels)

    monkeypatch.setattr(hyperseg.Predictor, "label_image", spy)
    run_predict([folder, "--overlap" if overlap else "--no-overlap"], tmp_path / "out", capsys)
    assert len(threads) == 3
    main = threading.main_thread()
    assert all((t is not main) == overlap for t in threads), [t.name for t in threads]
    for i in range(3):
        got = read_labels(tmp_path / "out" / f"{i}.png")
        assert (got != naive_labels(eager, read_rgb(folder / f"{i}.png"))).mean() <= MISMATCH


@pytest.mark.slow  # a dynamic-shape export takes ~35 s here
def test_predict_shapes_dynamic_converts_once_for_two_sizes(eager, street, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HYPERSEG_CACHE", str(cache))
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(street, folder / "a.png")
    Image.open(street).resize((128, 96), Image.BILINEAR).save(folder / "b.png")  # another padded size
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "fp32"]
    run_predict([folder, "--shapes", "dynamic"], tmp_path / "out", capsys, model=model)
    files = _cached_onnx(cache)
    assert len(files) == 1 and "dynamic-fp32" in files[0], files  # static: one file per padded size
    for name in ("a", "b"):
        got = read_labels(tmp_path / "out" / f"{name}.png")
        assert (got != naive_labels(eager, read_rgb(folder / f"{name}.png"))).mean() <= MISMATCH


def test_predict_int8_calibrates_on_the_given_folder(eager, street, tmp_path, monkeypatch, capsys, file_opens):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))
    calibration = tmp_path / "calibration"
    _calibration_folder(calibration)
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "int8"]
    with file_opens.watch():
        run_predict([street, "--calibration", calibration], tmp_path / "out", capsys, model=model)
    assert _opened_in(file_opens, calibration) == {"c0.png", "c1.png", "c2.png"}
    assert "onnxruntime int8" in capsys.readouterr().err
    got = read_labels(tmp_path / "out" / "street.png")
    assert (got == naive_labels(eager, read_rgb(street))).mean() > 0.8  # int8: close to fp32
