"""eval and predict options not covered by cli/test_options.py, each on its success path and checked
against an independent oracle: a naive sliding window computed by hand with the eager model, the
model cache's files read back, the calibration images the audit hook saw opened, or a counted call.

Like cli/test_options.py, the fast built-in weights run with ``--runtime torch --precision fp32``
where the option does not need another runtime, so that the eager model is the oracle's arithmetic.
"""
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

from .oracle import MISMATCH, MODEL, SAMPLE, read_labels, read_rgb

WINDOW = (32, 48)


def _naive_window(model, x: torch.Tensor, window) -> torch.Tensor:
    """Sliding-window logits written out pixel by pixel: every window position whose top-left corner
    is a multiple of the stride (2/3 of the window), plus windows flush with the bottom and right
    edges; each pixel's logits are the mean over the windows that cover it."""
    _, _, h, w = x.shape
    wh, ww = min(window[0], h), min(window[1], w)
    sh, sw = max(1, window[0] * 2 // 3), max(1, window[1] * 2 // 3)
    tops = sorted({t for t in range(0, h - wh + 1) if t % sh == 0} | {h - wh})
    lefts = sorted({l for l in range(0, w - ww + 1) if l % sw == 0} | {w - ww})
    total = torch.zeros(1, model.num_classes, h, w)
    hits = torch.zeros(h, w)
    for top in tops:
        for left in lefts:
            total[..., top:top + wh, left:left + ww] += model(x[..., top:top + wh, left:left + ww])
            hits[top:top + wh, left:left + ww] += 1
    assert hits.min() >= 1
    return total / hits


@torch.no_grad()
def naiveread_labels(model, image: np.ndarray, *, window=None, resize_uint8=True, meta=None) -> np.ndarray:
    """Resize to the size the model sees (predict resizes the uint8 image, eval the normalised one),
    normalise, run the model (whole, or window by window), resize the logits back, argmax."""
    meta = meta or model.meta
    h, w = image.shape[:2]
    s0 = meta.get("input_scale", 1.0)
    seen = (max(min(h, 32), round(h * s0)), max(min(w, 32), round(w * s0)))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    if resize_uint8 and seen != (h, w):
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    x = (x.float() / 255 - torch.tensor(meta["mean"]).view(1, 3, 1, 1)) / torch.tensor(meta["std"]).view(1, 3, 1, 1)
    if not resize_uint8 and seen != (h, w):
        x = F.interpolate(x, size=seen, mode="bilinear", align_corners=False, antialias=True)
    logits = _naive_window(model, x, window) if window else model(x)
    logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(1)[0].numpy().astype(np.uint8)


def naive_confusion(model, root: Path, split: str = "val", num_classes: int = 11, **options) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for path in sorted((root / split).glob("*.png")):
        label = read_labels(root / f"{split}annot" / path.name).astype(np.int64)
        prediction = naiveread_labels(model, read_rgb(path), resize_uint8=False, **options).astype(np.int64)
        keep = label < num_classes
        matrix += np.bincount(label[keep] * num_classes + prediction[keep],
                              minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return matrix


@pytest.fixture(scope="module")
def plain_confusion(eager, tiny_camvid) -> np.ndarray:
    return naive_confusion(eager, tiny_camvid)


def _eval(args, out: Path, capsys=None, model=MODEL) -> dict:
    code = cli_main(["eval", *[str(a) for a in args], "--workers", "0", "--out", str(out), *map(str, model)])
    assert code == 0, capsys.readouterr().err if capsys else code
    return json.loads(out.read_text())


def _predict(args, out: Path, capsys=None, model=MODEL) -> None:
    code = cli_main(["predict", *[str(a) for a in args], "--out", str(out), *map(str, model)])
    assert code == 0, capsys.readouterr().err if capsys else code


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
    got = np.asarray(_eval(["--data", tiny_camvid, "--split", "val", "--window", "32x48"], tmp_path / "m.json",
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
    got = _eval(["--data", tiny_camvid, "--split", "val", "--device", "cpu"], tmp_path / "m.json", capsys)
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
    got = _eval(["--data", tiny_camvid, "--split", "val", "--shapes", "dynamic"], tmp_path / "m.json", capsys,
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
        got = _eval(["--data", tiny_camvid, "--split", "val"], tmp_path / "m.json", capsys, model=model)
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
    Image.fromarray(naiveread_labels(eager, image, meta=weights_meta)).save(root / "valannot" / "000.png")
    mean, std = [0.3, 0.45, 0.6], [0.25, 0.5, 0.4]
    args = ["--data", root, "--split", "val"]
    model = ["--model", bare_onnx, "--runtime", "onnxruntime"]
    # without them the file is refused: it cannot be normalised
    assert cli_main(["eval", *map(str, args), "--workers", "0", *map(str, model)]) == 2
    assert "--mean, --std and --classes" in capsys.readouterr().err
    got = _eval([*args, "--mean", ",".join(map(str, mean)), "--std", ",".join(map(str, std)),
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

    def spy(source, **kwargs):  # eval asks load_runtime
        asked.append(dict(kwargs))
        return load_runtime(source, **{**kwargs, "runtime": "torch", "precision": "fp32"})

    def spy_init(self, source, **kwargs):  # predict asks a Predictor
        asked.append(dict(kwargs))
        init(self, source, **{**kwargs, "runtime": "torch", "precision": "fp32"})

    monkeypatch.setattr(runtime_package, "load_runtime", spy)
    monkeypatch.setattr(hyperseg.Predictor, "__init__", spy_init)
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "fp32", "--shapes", shapes]
    if command == "eval":
        _eval(["--data", tiny_camvid, "--split", "val"], tmp_path / "m.json", model=model)
    else:
        _predict([street], tmp_path / "out", model=model)
    assert [(a["runtime"], a["shapes"]) for a in asked] == [("onnxruntime", shapes)]


# ---------------------------------------------------------------------------------------------- predict

def test_predict_window_is_a_naive_sliding_window(eager, street, tmp_path, capsys):
    _predict([street, "--window", "32x48"], tmp_path / "out", capsys)
    got = read_labels(tmp_path / "out" / "street.png")
    image = read_rgb(street)
    expected, plain = naiveread_labels(eager, image, window=WINDOW), naiveread_labels(eager, image)
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
    _predict([folder, "--overlap" if overlap else "--no-overlap"], tmp_path / "out", capsys)
    assert len(threads) == 3
    main = threading.main_thread()
    assert all((t is not main) == overlap for t in threads), [t.name for t in threads]
    for i in range(3):
        got = read_labels(tmp_path / "out" / f"{i}.png")
        assert (got != naiveread_labels(eager, read_rgb(folder / f"{i}.png"))).mean() <= MISMATCH


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
    _predict([folder, "--shapes", "dynamic"], tmp_path / "out", capsys, model=model)
    files = _cached_onnx(cache)
    assert len(files) == 1 and "dynamic-fp32" in files[0], files  # static: one file per padded size
    for name in ("a", "b"):
        got = read_labels(tmp_path / "out" / f"{name}.png")
        assert (got != naiveread_labels(eager, read_rgb(folder / f"{name}.png"))).mean() <= MISMATCH


def test_predict_int8_calibrates_on_the_given_folder(eager, street, tmp_path, monkeypatch, capsys, file_opens):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))
    calibration = tmp_path / "calibration"
    _calibration_folder(calibration)
    model = ["--model", "camvid_fast", "--runtime", "onnxruntime", "--precision", "int8"]
    with file_opens.watch():
        _predict([street, "--calibration", calibration], tmp_path / "out", capsys, model=model)
    assert _opened_in(file_opens, calibration) == {"c0.png", "c1.png", "c2.png"}
    assert "onnxruntime int8" in capsys.readouterr().err
    got = read_labels(tmp_path / "out" / "street.png")
    assert (got == naiveread_labels(eager, read_rgb(street))).mean() > 0.8  # int8: close to fp32
