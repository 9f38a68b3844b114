"""Labels at another size than the logits: PyTorch's sparse path and the runtimes' own label graphs.

Oracle: the labels of ``F.interpolate(logits, size, mode="bilinear", align_corners=False)`` followed by
the argmax, computed in full.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperseg
from hyperseg.runtime.inference import predict_labels
from hyperseg.runtime import export_onnx, load_runtime
from hyperseg.runtime.labels import resized_labels


def _full(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).max(1).indices


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 24), w=st.integers(1, 24), out_h=st.integers(1, 40), out_w=st.integers(1, 40),
       classes=st.integers(1, 12), batch=st.integers(1, 2), smooth=st.booleans(), seed=st.integers(0, 2**16))
def test_resized_labels_equal_the_full_resize(h, w, out_h, out_w, classes, batch, smooth, seed):
    g = torch.Generator().manual_seed(seed)
    if smooth:  # large regions with boundaries between them, as a network's logits
        logits = F.interpolate(torch.randn(batch, classes, max(1, h // 4), max(1, w // 4), generator=g) * 3,
                               size=(h, w), mode="bilinear", align_corners=False)
    else:  # a different winner at nearly every pixel
        logits = torch.randn(batch, classes, h, w, generator=g)
    got = resized_labels(logits, (out_h, out_w))
    assert got.shape == (batch, out_h, out_w)
    assert torch.equal(got.long(), _full(logits, (out_h, out_w)))


def test_resized_labels_beyond_uint8_classes_fall_back_to_the_full_resize():
    logits = torch.randn(1, 300, 5, 7, generator=torch.Generator().manual_seed(0))
    got = resized_labels(logits, (11, 13))
    assert got.dtype == torch.int64 and torch.equal(got, _full(logits, (11, 13)))


def test_a_modules_labels_equal_the_argmax_of_its_logits():
    model = hyperseg.create_model("hyperseg_s_camvid", num_classes=5).eval()
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _full(model(x), (70, 90))
        assert torch.equal(predict_labels(model, x).long(), expected)


onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install '.[onnx]'")


@pytest.fixture(scope="module")
def padded_onnx(tmp_path_factory):
    """camvid exported for 360x480: a smaller input is padded to it, and its label graph crops first."""
    path = tmp_path_factory.mktemp("labels") / "camvid.onnx"
    export_onnx(hyperseg.load_model("camvid"), path)
    return path


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtime_label_graphs_equal_the_torch_labels_of_their_own_logits(padded_onnx, runtime):
    """fp32: the runtime's crop, resize and argmax give the labels PyTorch gives its logits, for a
    padded input (350x470 in a 360x480 file), outputs of other sizes and a batch of two."""
    pytest.importorskip(runtime, reason=f"the {runtime} runtime is not installed")
    engine = load_runtime(padded_onnx, runtime=runtime, precision="fp32")
    x = torch.randn(2, 3, 350, 470, generator=torch.Generator().manual_seed(1))
    logits = engine(x)
    for size in [(350, 470), (400, 520), (175, 235)]:
        got = engine.labels(x, size)
        assert got.dtype == torch.uint8 and got.shape == (2, *size)
        agree = (got.long() == _full(logits, size)).float().mean().item()
        # float rounding differs between the two resizes: only exact near-ties may flip
        assert agree > 0.9999, (size, agree)
    assert len(engine.label_graphs) == 3  # one compiled graph per input and output size, reused


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_predictor_uses_the_runtimes_labels(padded_onnx, runtime, monkeypatch):
    pytest.importorskip(runtime, reason=f"the {runtime} runtime is not installed")
    from hyperseg.infer.predictor import Predictor

    predictor = Predictor(load_runtime(padded_onnx, runtime=runtime, precision="fp32"))
    calls = []
    original = type(predictor.runtime).run_labels
    monkeypatch.setattr(type(predictor.runtime), "run_labels",
                        lambda self, *a: calls.append(a[1:]) or original(self, *a))
    image = np.random.default_rng(0).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    labels = predictor(image)
    assert calls == [(None, (360, 480))] and labels.shape == (360, 480)  # the file's own size: no crop
