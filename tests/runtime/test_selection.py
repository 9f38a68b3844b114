"""``installed_runtimes`` and ``--runtime auto``: which runtime is picked, with the importable packages
monkeypatched (``importlib.util.find_spec`` answers None for the ones made "missing").

The rules (src/hyperseg/runtime/__init__.py): OpenVINO, then onnxruntime, then torch; the ONNX runtimes
count only with onnxscript (the exporter) installed; an .onnx file never goes to torch; bf16 skips
onnxruntime; int8 skips torch; a PyTorch model on CUDA takes torch (the ONNX runtimes are CPU builds).
"""
import importlib.util

import pytest
import torch

import hyperseg
from hyperseg.errors import HypersegError
from hyperseg.runtime import installed_runtimes

ONNX_PACKAGES = ("openvino", "onnxruntime", "onnxscript")


@pytest.fixture
def importable(monkeypatch):
    """``importable("onnxruntime", "onnxscript")``: of the three packages, only these can be imported."""
    real = importlib.util.find_spec

    def set_(*present):
        def find_spec(name, *args, **kwargs):
            if name.split(".")[0] in ONNX_PACKAGES and name.split(".")[0] not in present:
                return None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return set_


@pytest.mark.parametrize("present, expected", [
    (("openvino", "onnxruntime", "onnxscript"), ["openvino", "onnxruntime", "torch"]),
    (("onnxruntime", "onnxscript"), ["onnxruntime", "torch"]),
    (("openvino", "onnxscript"), ["openvino", "torch"]),
    (("openvino", "onnxruntime"), ["torch"]),  # no exporter: nothing can be converted
    ((), ["torch"]),
])
def test_installed_runtimes_fastest_first(importable, present, expected):
    importable(*present)
    assert installed_runtimes() == expected


@pytest.fixture(scope="module")
def model():
    return hyperseg.load_model("camvid_fast").eval()


class _FakeTorchRuntime:
    """Stands in for the PyTorch runtime, whose preparation takes seconds: the choice is all that is tested."""

    name = "torch"

    def __init__(self, model, device, precision):
        self.device, self.precision = torch.device(device), precision


@pytest.fixture(autouse=True)
def _light_torch_runtime(monkeypatch):
    import hyperseg.runtime as runtime_package

    monkeypatch.setattr(runtime_package, "TorchRuntime", _FakeTorchRuntime)


def _needs_real(*packages):
    for package in packages:
        pytest.importorskip(package)


@pytest.mark.parametrize("present, precision, expected", [
    (("openvino", "onnxruntime", "onnxscript"), "fp32", "openvino"),
    (("onnxruntime", "onnxscript"), "fp32", "onnxruntime"),
    (("openvino", "onnxruntime"), "fp32", "torch"),  # without onnxscript
    (("onnxruntime", "onnxscript"), "bf16", "torch"),  # onnxruntime offers no bf16 here
    (("openvino", "onnxruntime", "onnxscript"), "int8", "openvino"),
    (("onnxruntime", "onnxscript"), "int8", "onnxruntime"),  # torch offers no int8
])
def test_auto_picks_the_fastest_runtime_that_offers_the_precision(importable, model, tmp_path, present, precision,
                                                                   expected):
    _needs_real(*present)
    if precision == "bf16" and not hyperseg.runtime.bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    importable(*present)
    calibration = str(hyperseg.runtime.SAMPLE_IMAGES) if precision == "int8" else None
    made = hyperseg.load_runtime(model, runtime="auto", precision=precision, device="cpu", calibration=calibration)
    assert type(made) is not _FakeTorchRuntime or expected == "torch"
    assert (made.name, made.precision) == (expected, precision)  # nothing converts until the first image


def test_auto_refuses_int8_with_only_torch(importable, model):
    importable()
    with pytest.raises(HypersegError, match="precision int8 needs onnxruntime or OpenVINO"):
        hyperseg.load_runtime(model, runtime="auto", precision="int8", device="cpu")


def test_auto_never_gives_an_onnx_file_to_torch(importable, tmp_path):
    importable()
    with pytest.raises(HypersegError, match="an ONNX runtime needs onnxruntime or OpenVINO"):
        hyperseg.load_runtime(tmp_path / "m.onnx", runtime="auto", precision="fp32")


def test_auto_gives_an_onnx_file_to_an_onnx_runtime_without_the_exporter(importable, tmp_path):
    importable("onnxruntime")
    with pytest.raises(HypersegError, match="file not found"):  # past the choice: onnxruntime opens the file
        hyperseg.load_runtime(tmp_path / "m.onnx", runtime="auto", precision="fp32")


def test_auto_takes_torch_for_a_pytorch_model_on_cuda(importable, model, monkeypatch):
    _needs_real("openvino", "onnxruntime", "onnxscript")
    importable(*ONNX_PACKAGES)
    seen = []

    class Stop(Exception):
        pass

    import hyperseg.runtime as runtime_package

    def fake_torch_runtime(model, device, precision):  # no GPU here: stop where the runtime would be built
        seen.append(("torch", device, precision))
        raise Stop

    monkeypatch.setattr(runtime_package, "TorchRuntime", fake_torch_runtime)
    with pytest.raises(Stop):
        hyperseg.load_runtime(model, runtime="auto", precision="fp32", device="cuda")
    assert seen == [("torch", "cuda", "fp32")]
    made = hyperseg.load_runtime(model, runtime="auto", precision="fp32", device="cpu")
    assert made.name == "openvino"  # on the CPU the same request goes to OpenVINO
