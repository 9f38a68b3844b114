"""Property-based fuzzing of everything that reads user files: only success or a HypersegError.

Random bytes, truncated PNG/JPEG/TIFF/WebP files of random sizes and modes go to ``read_image``,
the CamVid and folder dataset loaders, and ``Predictor``. Bounded and derandomised, so it runs in CI.
"""
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hyperseg.data import build_dataset
from hyperseg.data.io import read_image
from hyperseg.infer.predictor import Predictor
from hyperseg.errors import HypersegError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow reports damaged EXIF as it reads

FUZZ = settings(max_examples=60, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# (mode, formats that can store it)
_MODES = [("1", ["PNG", "BMP", "TIFF"]), ("L", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]), ("P", ["PNG", "BMP", "TIFF"]),
          ("RGB", ["PNG", "JPEG", "BMP", "TIFF", "WEBP"]), ("RGBA", ["PNG", "TIFF", "WEBP"]), ("LA", ["PNG"]),
          ("I;16", ["PNG", "TIFF"]), ("I", ["TIFF"]), ("F", ["TIFF"]), ("CMYK", ["JPEG", "TIFF"])]


@st.composite
def image_bytes(draw) -> bytes:
    """An encoded image of a random size, mode and format, possibly cut short; or plain random bytes."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.binary(max_size=512))
    mode, formats = draw(st.sampled_from(_MODES))
    fmt = draw(st.sampled_from(formats))
    h, w = draw(st.integers(1, 72)), draw(st.integers(1, 72))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode in ("I;16", "I"):
        array = rng.integers(0, 2**16 if mode == "I;16" else 2**31 - 1, (h, w)).astype(np.int32)
        img = Image.fromarray(array.astype(np.uint16) if mode == "I;16" else array, mode=None)
    elif mode == "F":
        img = Image.fromarray(rng.random((h, w)).astype(np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    data = buffer.getvalue()
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]  # truncated, as by an interrupted copy
    return data


@st.composite
def valid_image(draw):
    """A whole image file in a mode ``read_image`` supports, and the RGB array it must read as (from
    the pixels it was made of; None where the format is lossy), with its (height, width)."""
    mode, formats = draw(st.sampled_from([(m, f) for m, f in _MODES if m != "F"]))
    fmt = draw(st.sampled_from(formats))
    h, w = draw(st.integers(1, 72)), draw(st.integers(1, 72))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if mode in ("I;16", "I"):  # 16-bit values, 32-bit integer storage for "I": scaled by the full 16-bit range
        values = rng.integers(0, 2**16, (h, w))
        img = Image.fromarray(values.astype(np.uint16) if mode == "I;16" else values.astype(np.int32))
        expected = np.repeat(((510 * values + 65535) // 131070).astype(np.uint8)[..., None], 3, axis=2)
    elif mode == "P":
        indices, palette = rng.integers(0, 256, (h, w), dtype=np.uint8), rng.integers(0, 256, (256, 3), dtype=np.uint8)
        img = Image.fromarray(indices, "P")
        img.putpalette(palette.ravel().tolist())
        expected = palette[indices]
    elif mode == "1":
        bits = rng.integers(0, 2, (h, w)).astype(bool)
        img, expected = Image.fromarray(bits), np.repeat(bits[..., None] * np.uint8(255), 3, axis=2)
    else:
        channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
        pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        img = Image.frombytes(mode, (w, h), pixels.tobytes())
        expected = None if mode == "CMYK" else np.repeat(pixels[..., :1], 3, axis=2) if channels <= 2 else pixels[..., :3]
    assert img.mode == mode
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **({"lossless": True, "exact": True} if fmt == "WEBP" else {}))
    return buffer.getvalue(), None if fmt == "JPEG" else expected, (h, w)


def _only_our_errors(call):
    try:
        return call()
    except HypersegError:
        return None


@FUZZ
@given(data=image_bytes())
def test_read_image_returns_rgb_or_our_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        image = _only_our_errors(lambda: read_image(path))
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FUZZ
@given(case=valid_image())
def test_read_image_reads_every_whole_file_in_a_supported_mode(case):
    data, expected, (h, w) = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"  # the suffix says nothing: Pillow reads the bytes
        path.write_bytes(data)
        image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (h, w, 3)
    if expected is not None:
        np.testing.assert_array_equal(image, expected)


@FUZZ
@given(image=image_bytes(), label=image_bytes())
def test_dataset_loaders_return_pairs_or_our_error(image, label):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, data in (("train", image), ("trainannot", label)):
            (root / folder).mkdir()
            (root / folder / "x.png").write_bytes(data)
        dataset = build_dataset("camvid", root, "train")
        pair = _only_our_errors(lambda: dataset.load(0))
        if pair is not None:
            img, lbl = pair
            assert img.shape[0] == 3 and tuple(img.shape[1:]) == tuple(lbl.shape)


@FUZZ
@given(case=valid_image(), seed=st.integers(0, 2**16))
def test_dataset_loaders_read_every_whole_pair(case, seed):
    data, expected, (h, w) = case
    label = np.random.default_rng(seed).choice(np.array([*range(11), 255], np.uint8), (h, w))  # 255: ignore
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("train", "trainannot"):
            (root / folder).mkdir()
        (root / "train" / "x.png").write_bytes(data)
        Image.fromarray(label).save(root / "trainannot" / "x.png")
        img, lbl = build_dataset("camvid", root, "train").load(0)
    assert tuple(img.shape) == (3, h, w) and np.array_equal(lbl.numpy(), label)
    if expected is not None:
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), expected)


@pytest.fixture(scope="module")
def predictor():
    return Predictor("camvid", runtime="eager")


@FUZZ
@given(data=image_bytes())
def test_predictor_segments_or_raises_our_error(predictor, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(data)
        labels = _only_our_errors(lambda: predictor(path))
        if labels is not None:
            image = read_image(path)
            assert labels.shape == image.shape[:2] and labels.max() < predictor.runtime.num_classes


# ---------------------------------------------------------------------------- model files

_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) |
                     st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=8)
_GOOD_META = {"class_names": ["a", "b", "c"], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": 3,
              "size_multiple": [32, 32], "precision": "fp32", "input_scale": 1.0}


def _tiny_onnx(path: Path, meta: dict) -> Path:
    """A 1x1 convolution from 3 channels to 3 logits, any size, with ``meta`` as hyperseg.* properties."""
    import json

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 3, 1, 1], np.eye(3, dtype=np.float32).reshape(-1).tolist())
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = f"hyperseg.{key}", json.dumps(value) if not isinstance(value, bytes) else value.decode()
    onnx.save(model, str(path))
    return path


@FUZZ
@given(key=st.sampled_from(sorted(_GOOD_META) + ["input_size", "palette"]), value=_JSON)
def test_onnx_metadata_of_any_type_runs_or_raises_our_error(key, value):
    """One metadata field replaced by an arbitrary JSON value: the file is refused in one line, or runs."""
    pytest.importorskip("onnxruntime")
    from hyperseg.runtime import load_runtime

    with tempfile.TemporaryDirectory() as tmp:
        path = _tiny_onnx(Path(tmp) / "m.onnx", {**_GOOD_META, key: value})
        predictor = _only_our_errors(lambda: Predictor(str(path), runtime="onnxruntime"))
        if predictor is not None:
            labels = _only_our_errors(lambda: predictor(np.full((40, 48, 3), 100, np.uint8)))
            assert labels is None or (labels.shape == (40, 48) and labels.max() < predictor.runtime.num_classes)
        _only_our_errors(lambda: load_runtime(str(path), runtime="onnxruntime"))


_ARCH_PIECES = ["hyperseg.models.hyperseg_efficientnet.hyperseg_efficientnet", "(", ")", "'efficientnet-b1'",
                "pretrained=False", "out_nc=11", "levels=3", "kernel_sizes=[1, 1, 1, 3, 3]", "level_layers=1",
                "expand_ratio=1", "groups=[1, 1, 1, 1, 1]", "weight_groups=[32, 16, 8, 4, 2]", "dropout=0.0",
                "inference=False", "with_out_fc=False", "decoder_groups=1", "decoder_dropout=None",
                "coords_res=[(512, 1024)]", ",", "=", "None", "[", "]", "1e999", "-1", "'x'", "lambda: 0", "__import__"]


@FUZZ
@given(pieces=st.lists(st.sampled_from(_ARCH_PIECES), max_size=14), raw=st.text(max_size=40), use_raw=st.booleans())
def test_authors_arch_strings_parse_or_raise_our_error(pieces, raw, use_raw):
    """Any arch string, from fragments of real ones or random text: a config, or one-line error."""
    from hyperseg.hub.official import config_from_arch

    arch = raw if use_raw else " ".join(pieces)
    _only_our_errors(lambda: config_from_arch(arch))


@pytest.fixture(scope="module")
def tiny_checkpoint():
    import torch

    import hyperseg

    model = hyperseg.create_model("hyperseg", num_classes=3, encoder_name="tf_efficientnet_lite0",
                                  weight_groups=[16, 16, 8, 8, 4])
    with tempfile.TemporaryDirectory() as tmp:
        hyperseg.save_model(model, Path(tmp) / "m.pt")
        return torch.load(Path(tmp) / "m.pt", weights_only=True)


@FUZZ
@given(section=st.sampled_from(["config", "meta"]), key=st.text(max_size=12) | st.sampled_from(
    ["num_classes", "encoder_name", "decoder_channels", "weight_groups", "decoder_kernel_sizes", "in_channels",
     "context_levels", "patch_grid", "encoder_reductions", "class_names", "mean", "std", "input_size", "palette",
     "input_scale", "signal_slicing", "dynamic"]), value=_JSON)
def test_checkpoint_fields_of_any_type_load_or_raise_our_error(tiny_checkpoint, section, key, value):
    """One config or meta field of our checkpoint replaced by an arbitrary value: it loads, or one line."""
    import copy

    import torch

    from hyperseg.runtime import resolve_model

    ckpt = copy.copy(tiny_checkpoint)
    ckpt[section] = {**ckpt.get(section, {}), key: value}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.pt"
        torch.save(ckpt, path)
        model = _only_our_errors(lambda: resolve_model(str(path)))
        if model is not None:
            assert model.num_classes >= 1
