"""One resolver: every kind of model source gives a working model through the same entry points."""
import numpy as np
import pytest
import torch

import hyperseg
from hub.official_format import authors_checkpoint
from hyperseg.cli import main as cli_main
from hyperseg.infer.predictor import Predictor
from hyperseg.errors import HypersegError
from hyperseg.runtime import export_onnx, load_runtime, resolve_model

SOURCES = ["weights name", "architecture", "our checkpoint", "authors' .pth", ".onnx file", "model object"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, request):
    """Each kind of source, for the 11-class CamVid layout where the kind allows choosing."""
    tmp = tmp_path_factory.mktemp("sources")
    small = hyperseg.create_model("hyperseg", num_classes=11, encoder_name="tf_efficientnet_lite0",
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    hyperseg.save_model(small, tmp / "ours.pt")
    export_onnx(small, tmp / "small.onnx", size=(64, 96))
    return {"weights name": "camvid", "architecture": "hyperseg_s_camvid", "our checkpoint": str(tmp / "ours.pt"),
            ".onnx file": str(tmp / "small.onnx"), "model object": small, "tmp": tmp}


def _source(sources, kind):
    if kind == "authors' .pth":  # a synthetic file in the authors' layout (tests/hub/official_format.py)
        path = sources["tmp"] / "authors.pth"
        if not path.exists():
            torch.save(authors_checkpoint("hyperseg_s_camvid")[1], path)
        return str(path)
    return sources[kind]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_model_source_runs_through_the_same_entry_points(kind, sources, tmp_path, capsys):
    source = _source(sources, kind)
    if kind == "architecture":  # random weights: refused where they would segment (tests/hub/test_untrained.py)
        for make in (lambda: load_runtime(source, runtime="eager"), lambda: Predictor(source, runtime="eager")):
            with pytest.raises(HypersegError, match="architecture without weights"):
                make()
        assert resolve_model(source, allow_untrained=True).num_classes == 12
        assert cli_main(["profile", "--model", source, "--height", "64", "--width", "96"]) == 0
        return
    runtime = load_runtime(source, runtime="onnxruntime" if kind == ".onnx file" else "eager")
    out = runtime(torch.zeros(1, 3, 64, 96))
    assert out.shape == (1, runtime.num_classes, 64, 96)
    if kind != ".onnx file":
        assert resolve_model(source).num_classes == runtime.num_classes
    else:
        with pytest.raises(HypersegError, match="ONNX"):
            resolve_model(source)
    image = np.full((64, 96, 3), 128, np.uint8)
    labels = Predictor(source, runtime="onnxruntime" if kind == ".onnx file" else "eager")(image)
    assert labels.shape == (64, 96)
    if isinstance(source, str):  # the command line takes the same strings, the same way in every command
        code = cli_main(["profile", "--model", source, "--height", "64", "--width", "96"])
        err = capsys.readouterr().err
        assert code == (2 if kind == ".onnx file" else 0), err  # counting MACs needs the PyTorch model


def test_cli_model_given_twice_differently(capsys):
    assert cli_main(["profile", "camvid", "--model", "hyperseg_s_camvid"]) == 2
    assert "two models" in capsys.readouterr().err
