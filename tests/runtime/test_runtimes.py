"""The fast paths: prepared torch model, ONNX export and int8, onnxruntime/OpenVINO, bench, video.

Oracles: the eager PyTorch model (float64 for the prepared model, float32 for ONNX), naive
padding/cropping, and frames decoded back from the video the test wrote.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import hyperseg
from hyperseg.cli import main as cli_main
from hyperseg.infer.predictor import Predictor
from hyperseg.errors import HypersegError, MissingExtraError
from hyperseg.runtime import (bf16_supported, export_onnx, load_runtime, prepare_for_inference, quantize_onnx,
                              read_onnx_meta)

SAMPLES = sorted((Path(hyperseg.__file__).parent / "assets").glob("camvid_sample_*.png"))
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install '.[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install '.[onnx]'")


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _image(size=(360, 480), index=0) -> np.ndarray:
    img = Image.open(SAMPLES[index]).convert("RGB")
    return np.asarray(img.resize((size[1], size[0]), Image.BILINEAR)) if img.size != (size[1], size[0]) else np.asarray(img)


def _normalised(img: np.ndarray, meta) -> torch.Tensor:
    x = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
    return ((x - torch.tensor(meta["mean"]).view(3, 1, 1)) / torch.tensor(meta["std"]).view(3, 1, 1)).unsqueeze(0)


@pytest.fixture(scope="module")
def camvid_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "camvid.onnx"
    export_onnx(hyperseg.load_model("camvid"), path)
    return path


@pytest.mark.parametrize("name", ["hyperseg_s_camvid",
                                  pytest.param("hyperseg_l_voc", marks=pytest.mark.slow)])  # ~1 min in float64
def test_prepared_model_equals_eager_in_float64(name):
    model = _randomise_bn(hyperseg.create_model(name)).double()
    prepared = prepare_for_inference(model, torch.device("cpu"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    x = torch.randn(1, 3, 200, 264, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = prepared(x.contiguous(memory_format=torch.channels_last))
    assert (got - expected).abs().max() / expected.abs().max() < 1e-8  # rounding only (fuse_bn alone: ~1e-9)


def test_torch_runtime_matches_model_and_rejects_int8():
    model = hyperseg.load_model("camvid")
    runtime = load_runtime(model, runtime="torch", precision="fp32")
    x = _normalised(_image(), runtime.meta)
    with torch.no_grad():
        expected = model(x)
    got = runtime(x)
    assert got.dtype == torch.float32 and (got - expected).abs().max() / expected.abs().max() < 1e-4
    with pytest.raises(HypersegError, match="int8"):
        load_runtime(model, runtime="torch", precision="int8")


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no native bfloat16")
def test_bf16_labels_agree_with_fp32():
    fp32 = Predictor("camvid", runtime="torch", precision="fp32")
    bf16 = Predictor("camvid", runtime="torch", precision="bf16")
    img = _image()
    assert (fp32(img) == bf16(img)).mean() > 0.98


def test_export_round_trip_with_metadata(camvid_onnx):
    onnx.checker.check_model(onnx.load(str(camvid_onnx)), full_check=True)
    meta = read_onnx_meta(camvid_onnx)
    model = hyperseg.load_model("camvid")
    assert meta["class_names"] == model.meta["class_names"] and meta["palette"] == model.meta["palette"]
    assert meta["mean"] == [0.5, 0.5, 0.5] and meta["std"] == [0.5, 0.5, 0.5]
    assert meta["input_size"] == [360, 480] and meta["num_classes"] == 11 and meta["precision"] == "fp32"
    opsets = {o.domain: o.version for o in onnx.load(str(camvid_onnx)).opset_import}
    assert opsets[""] >= 18


def _parity(model: nn.Module, path: Path, img: np.ndarray):
    x = _normalised(img, model.meta)
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    rel = np.abs(got - expected).max() / np.abs(expected).max()
    agree = (got.argmax(1) == expected.argmax(1)).mean()
    return rel, agree


def test_onnxruntime_matches_torch_builtin_model(camvid_onnx):
    rel, agree = _parity(hyperseg.load_model("camvid"), camvid_onnx, _image())
    assert rel <= 1e-4 and agree >= 0.9999


@pytest.mark.slow  # a paper model at 256x512; tests/runtime/test_contract.py checks onnxruntime fp32 parity by default
def test_onnxruntime_matches_torch_paper_model(tmp_path):
    model = hyperseg.create_model("hyperseg_m_cityscapes").eval()
    path = export_onnx(model, tmp_path / "m.onnx", size=(256, 512))
    assert read_onnx_meta(path)["class_names"][0] == "road"
    rel, agree = _parity(model, path, _image((256, 512)))
    assert rel <= 1e-4 and agree >= 0.9999


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_onnx_runtimes_fit_other_sizes(camvid_onnx, runtime):
    """Smaller images are padded like the model pads them, larger ones resized; outputs come back at input size."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
    model = hyperseg.load_model("camvid")
    rt = load_runtime(camvid_onnx, runtime=runtime)
    small = _normalised(_image((300, 400)), model.meta)
    padded = torch.nn.functional.pad(small, (0, 80, 0, 60), mode="replicate")
    with torch.no_grad():
        expected = model(padded)[..., :300, :400]
    got = rt(small)
    assert got.shape == (1, 11, 300, 400)
    assert (got - expected).abs().max() / expected.abs().max() < 1e-3
    big = _normalised(_image((720, 960)), model.meta)
    assert rt(big).shape == (1, 11, 720, 960)


def test_predictor_and_eval_accept_onnx(camvid_onnx, camvid_root):
    from hyperseg.data import build_dataset
    from hyperseg.train.evaluate import evaluate

    torch_pred = Predictor("camvid", runtime="torch", precision="fp32")
    onnx_pred = Predictor(str(camvid_onnx), runtime="onnxruntime")
    assert onnx_pred.class_names == torch_pred.class_names
    img = _image()
    assert (onnx_pred(img) == torch_pred(img)).mean() > 0.9999

    class FirstThree:
        def __init__(self, dataset):
            self.dataset, self.classes, self.num_classes = dataset, dataset.classes, dataset.num_classes

        def __len__(self):
            return 3

        def load(self, i):
            return self.dataset.load(i)

    val = FirstThree(build_dataset("camvid", camvid_root, "val"))
    expected = evaluate(hyperseg.load_model("camvid"), val)
    got = evaluate(onnx_pred.runtime, val)
    assert got["miou"] == pytest.approx(expected["miou"], abs=2e-3)


def test_int8_export_is_checked_calibrated_and_close(tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    for s in SAMPLES:
        Image.open(s).resize((160, 128)).save(calib / s.name)
    out = tmp_path / "int8.onnx"
    assert cli_main(["export", "camvid", "--out", str(out), "--size", "128x160", "--precision", "int8",
                     "--calibration", str(calib)]) == 0
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    proto = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    meta = read_onnx_meta(out)
    assert meta["precision"] == "int8" and meta["calibration"]["images"] == len(SAMPLES)
    img = _image((128, 160))
    fp32 = Predictor("camvid", runtime="torch", precision="fp32")(img)
    int8 = Predictor(str(out), runtime="onnxruntime")(img)
    assert (int8 == fp32).mean() > 0.9
    with pytest.raises(HypersegError, match="int8 model"):
        load_runtime(out, runtime="onnxruntime", precision="fp32")


@pytest.fixture(scope="module")
def camvid_dynamic_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "camvid_dynamic.onnx"
    assert cli_main(["export", "camvid", "--dynamic", "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_dynamic_export_takes_any_batch_and_size(camvid_dynamic_onnx, runtime):
    """One file for every size, checked against the float64 model at sizes and batches it was not traced at."""
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
    proto = onnx.load(str(camvid_dynamic_onnx))
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    meta = read_onnx_meta(camvid_dynamic_onnx)
    assert "input_size" not in meta and meta["size_multiple"] == [64, 64]
    model = hyperseg.load_model("camvid").double()
    rt = load_runtime(camvid_dynamic_onnx, runtime=runtime)
    g = torch.Generator().manual_seed(0)
    for batch, size in [(1, (360, 480)), (2, (100, 77)), (1, (64, 704))]:
        x = torch.randn(batch, 3, *size, generator=g)
        with torch.no_grad():
            expected = model(x.double()).float()
        got = rt(x)
        assert got.shape == expected.shape
        assert (got - expected).abs().max() / expected.abs().max() < 1e-4
        assert (got.argmax(1) == expected.argmax(1)).float().mean() > 0.9999


def test_dynamic_int8_calibrates_on_mixed_sizes(camvid_dynamic_onnx, tmp_path, capsys):
    assert cli_main(["export", "camvid", "--dynamic", "--size", "64x64", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "--dynamic" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    calib = tmp_path / "calib"
    calib.mkdir()
    for s, size in zip(SAMPLES, [(160, 128), (192, 96), (200, 150)]):
        Image.open(s).resize(size).save(calib / s.name)
    out = quantize_onnx(camvid_dynamic_onnx, tmp_path / "int8.onnx", calib, count=3)
    assert read_onnx_meta(out)["precision"] == "int8"
    img = _image((150, 200))
    fp32 = Predictor("camvid", runtime="torch", precision="fp32")(img)
    int8 = Predictor(str(out), runtime="onnxruntime")(img)
    assert (int8 == fp32).mean() > 0.9


def test_bench_json_schema(tmp_path):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--runtime", "eager,torch,onnxruntime", "--precision", "fp32,int8", "--size", "64x96",
                     "--rounds", "2", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["size"] == [64, 96] and result["batch"] == 1 and result["rounds"] == 2
    assert {"cpu", "cores", "torch_threads", "versions"} <= set(result["machine"])
    names = [(e["runtime"], e["precision"]) for e in result["entries"]]
    assert names == [("eager", "fp32"), ("torch", "fp32"), ("onnxruntime", "fp32")]
    for e in result["entries"]:
        for key in ("end_to_end_ms", "model_ms"):
            assert e[key]["min"] <= e[key]["median"] <= e[key]["p90"]
        assert e["fps"] == pytest.approx(1e3 / e["end_to_end_ms"]["median"])
        assert 0.99 <= e["label_agreement"] <= 1.0
    assert result["entries"][0]["ratio"] == 1.0
    skipped = {(s["runtime"], s["precision"]) for s in result["skipped"]}
    assert skipped == {("eager", "int8"), ("torch", "int8"), ("onnxruntime", "int8")}  # no calibration folder given


def test_bench_skips_openvino_bf16_on_a_cpu_without_it_before_converting(tmp_path, monkeypatch):
    """Where OpenVINO has no native bf16 (AVX2-only CPUs), `bench --precision fp32,bf16` lists that
    candidate as skipped and times the rest, and no model is converted for a runtime that cannot run it."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install '.[openvino]'")
    import hyperseg.runtime.onnx_runtimes as onnx_runtimes

    def no_native_bf16(core):
        raise HypersegError("precision bf16 needs a CPU with native bfloat16 (AVX-512 bf16 or AMX); use fp32")

    def conversion(*args, **kwargs):  # stands for a conversion that fails on first use
        raise HypersegError("conversion attempted")

    monkeypatch.setattr(onnx_runtimes, "require_openvino_bf16", no_native_bf16)
    monkeypatch.setattr(onnx_runtimes, "cached_onnx", conversion)
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--runtime", "torch,openvino", "--precision", "fp32,bf16", "--size", "64x96",
                     "--rounds", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [(e["runtime"], e["precision"]) for e in result["entries"]] == [("torch", "fp32")] + (
        [("torch", "bf16")] if bf16_supported(torch.device("cpu")) else [])
    reasons = {(s["runtime"], s["precision"]): s["reason"] for s in result["skipped"]}
    assert "native bfloat16" in reasons[("openvino", "bf16")]  # refused before any conversion
    assert reasons[("openvino", "fp32")] == "conversion attempted"  # a first-use failure is a skip, not a crash


def test_video_overlay_and_frame_labels(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="the video extra is not installed: pip install '.[video]'")
    frames = SAMPLES + SAMPLES[:1]  # the bundled CamVid frames, one twice: 4 frames
    assert len(frames) == 4
    video = tmp_path / "drive.mp4"
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (first.shape[1], first.shape[0]))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    out = tmp_path / "out"
    assert cli_main(["predict", str(video), "--out", str(out), "--video-labels", "--runtime", "torch"]) == 0
    overlay = cv2.VideoCapture(str(out / "drive_overlay.mp4"))
    assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    labels = sorted((out / "drive_labels").glob("*.png"))
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(4)]
    predictor = Predictor("camvid", runtime="torch")
    decoded = cv2.VideoCapture(str(video))
    for path in labels:  # the oracle: the same frames, decoded independently, through Predictor
        ok, frame = decoded.read()
        assert ok
        expected = predictor(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)


# --- bad input ---------------------------------------------------------------------------------

def test_onnx_without_metadata_needs_mean_std_classes(camvid_onnx, tmp_path, capsys):
    proto = onnx.load(str(camvid_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert cli_main(["predict", "--model", str(bare), "--out", str(tmp_path / "o"), "--runtime", "onnxruntime"]) == 2
    assert "no hyperseg metadata" in capsys.readouterr().err
    names = ",".join(hyperseg.load_model("camvid").meta["class_names"])
    assert cli_main(["predict", "--model", str(bare), "--out", str(tmp_path / "o"), "--runtime", "onnxruntime",
                     "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5", "--classes", names]) == 0


def test_empty_calibration_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["export", "camvid", "--out", str(tmp_path / "x.onnx"), "--size", "64x64", "--precision", "int8",
                     "--calibration", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "holds no images" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()


def test_missing_runtime_names_the_extra(monkeypatch, camvid_onnx):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail
    with pytest.raises(MissingExtraError, match=r"pip install 'hyperseg\[openvino\]'"):
        load_runtime(camvid_onnx, runtime="openvino")


def test_unexportable_operation_is_named(tmp_path):
    from hyperseg.runtime import ExportError

    class Zeta(nn.Module):
        num_classes = 2

        def forward(self, x):
            return torch.special.zeta(x.abs() + 2, torch.ones_like(x))[:, :2]

    with pytest.raises(ExportError, match="zeta"):
        export_onnx(Zeta(), tmp_path / "z.onnx", size=(32, 32))
    assert not (tmp_path / "z.onnx").exists()


def test_bad_runtime_and_precision_values(capsys):
    assert cli_main(["predict", "--runtime", "tensorrt"]) == 2
    assert "--runtime 'tensorrt'" in capsys.readouterr().err
    assert cli_main(["predict", "--precision", "fp8"]) == 2
    assert "--precision 'fp8'" in capsys.readouterr().err
    assert cli_main(["bench", "--size", "axb"]) == 2
    assert "--size 'axb'" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_val_miou_within_half_a_point(tmp_path, camvid_root):
    """The acceptance check behind the README's int8 row (about 3 minutes)."""
    out = tmp_path / "camvid_int8.onnx"
    assert cli_main(["export", "camvid", "--out", str(out), "--precision", "int8",
                     "--calibration", str(camvid_root / "train")]) == 0
    fp32 = hyperseg.load_model("camvid").meta["val_miou"]
    metrics = tmp_path / "m.json"
    assert cli_main(["eval", str(out), "--data", str(camvid_root), "--runtime", "onnxruntime", "--workers", "0",
                     "--out", str(metrics)]) == 0
    written = json.loads(metrics.read_text())
    assert written["unit"] == "percent" and 0 < fp32 < 1  # the JSON is in percent, the record a fraction
    assert abs(written["miou"] / 100 - fp32) <= 0.005


def test_export_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "mine.onnx"
    out.write_bytes(b"the user's own file")
    assert cli_main(["export", "camvid", "--out", str(out), "--size", "64x64"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"the user's own file"
    assert cli_main(["export", "camvid", "--out", str(out), "--size", "64x64", "--overwrite"]) == 0
    assert read_onnx_meta(out)["input_size"] == [64, 64]


def test_two_openvino_models_freed_in_creation_order_then_ctrl_c_does_not_crash(camvid_onnx):
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack per Core and puts the old one
    back, already unmapped, when Cores go in creation order: the next Ctrl-C was a SIGSEGV.
    Oracle: the process's exit status and the handler's own output."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed: pip install '.[openvino]'")
    script = f"""
import os, signal
from hyperseg.runtime import load_runtime
first = load_runtime({str(camvid_onnx)!r}, runtime="openvino", precision="fp32")
second = load_runtime({str(camvid_onnx)!r}, runtime="openvino", precision="fp32")
del first
del second
signal.signal(signal.SIGINT, lambda *_: print("handled", flush=True))
os.kill(os.getpid(), signal.SIGINT)
print("exited", flush=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout.split()) == (0, ["handled", "exited"]), done.stderr[-2000:]
