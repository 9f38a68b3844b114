"""bench and serve options on their success paths, through ``hyperseg.cli.main``.

bench: the image it times (the Predictor's calls counted and their input compared with the image
resized by hand), the device and calibration folder the predictors are asked for.
serve: uvicorn's server is replaced by one that drives the very app the command built with
Starlette's TestClient, so ``/v1/model`` reports the runtime the command loaded and a full queue
answers 503 with Retry-After.
"""
import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hyperseg.cli import main as cli_main

SAMPLE = Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png"
BENCH = ["bench", "-m", "camvid_fast", "--runtime", "torch", "--precision", "fp32", "--rounds", "1", "--warmup", "0",
         "--size", "64x80"]


@pytest.fixture
def predictors(monkeypatch):
    """Every Predictor built: its keyword arguments, and the images it is called on. The runtime is
    the torch fp32 one whatever was asked (what was asked is the record)."""
    record = {"init": [], "images": []}
    init, call = hyperseg.Predictor.__init__, hyperseg.Predictor.__call__

    def spy_init(self, source, **kwargs):
        record["init"].append(dict(kwargs))
        torch_fp32 = dataclasses.replace(kwargs["options"], runtime="torch", precision="fp32", calibration=None)
        init(self, source, **{**kwargs, "options": torch_fp32})

    def spy_call(self, image):
        record["images"].append(np.array(image))
        return call(self, image)

    monkeypatch.setattr(hyperseg.Predictor, "__init__", spy_init)
    monkeypatch.setattr(hyperseg.Predictor, "__call__", spy_call)
    return record


# ------------------------------------------------------------------------------------------------ bench

def test_bench_image_times_the_given_image_at_the_given_size(predictors, tmp_path, capsys):
    noise = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    assert cli_main([*BENCH, "--image", str(tmp_path / "noise.png"), "--out", str(tmp_path / "r.json")]) == 0
    expected = np.asarray(Image.fromarray(noise).resize((80, 64), Image.BILINEAR))
    assert len(predictors["images"]) == 2  # the setup call, then one timed round
    for image in predictors["images"]:
        np.testing.assert_array_equal(image, expected)
    assert json.loads((tmp_path / "r.json").read_text())["size"] == [64, 80]
    # without --image: the bundled sample
    predictors["images"].clear()
    assert cli_main([*BENCH]) == 0
    sample = np.asarray(Image.open(SAMPLE).convert("RGB").resize((80, 64), Image.BILINEAR))
    np.testing.assert_array_equal(predictors["images"][0], sample)


def test_bench_device_and_calibration_reach_every_predictor(predictors, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto would pick CUDA
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    (tmp_path / "calib").mkdir()
    assert cli_main([*BENCH, "--device", "cpu", "--calibration", str(tmp_path / "calib"),
                     "--out", str(tmp_path / "r.json")]) == 0
    assert [(i["options"].device, i["options"].calibration) for i in predictors["init"]] == \
        [("cpu", str(tmp_path / "calib"))]
    result = json.loads((tmp_path / "r.json").read_text())
    assert [e["runtime"] for e in result["entries"]] == ["torch"]


# ------------------------------------------------------------------------------------------------ serve

@pytest.fixture
def served(monkeypatch):
    """``served(argv, scenario)``: run ``hyperseg serve argv`` with a server that runs
    ``scenario(client, app)`` against the app instead of listening; returns the scenario's result."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import uvicorn
    from fastapi.testclient import TestClient

    def run(argv, scenario):
        results = []

        class FakeServer:
            def __init__(self, config):
                self.app = config.app

            def run(self):
                with TestClient(self.app) as client:
                    results.append(scenario(client, self.app))

        monkeypatch.setattr(uvicorn, "Server", FakeServer)
        assert cli_main(["serve", "--port", "0", *map(str, argv)]) == 0
        assert len(results) == 1
        return results[0]

    return run


def test_serve_runtime_options_reach_the_runtime_the_app_uses(served, predictors):
    def scenario(client, app):
        return client.get("/v1/model").json(), app.state.pool.predictor

    info, predictor = served(["-m", "camvid_fast", "--runtime", "onnxruntime", "--precision", "int8",
                              "--shapes", "static", "--device", "cpu", "--calibration", "calib",
                              "--workers", "1", "--max-queue", "3"], scenario)
    asked = predictors["init"]
    assert len(asked) == 1
    assert asked[0]["options"] == hyperseg.RuntimeOptions(runtime="onnxruntime", precision="int8", shapes="static",
                                                          device="cpu", calibration="calib")
    # what /v1/model reports is the runtime the pool's predictor runs (here the spy's torch fp32)
    assert (info["runtime"], info["precision"]) == (predictor.runtime.name, predictor.runtime.precision)
    assert (info["workers"], info["max_queue"]) == (1, 3)


def test_serve_runtime_and_precision_reported_by_v1_model(served):
    def scenario(client, app):
        return client.get("/v1/model").json()

    info = served(["-m", "camvid_fast", "--runtime", "torch", "--precision", "fp32"], scenario)
    assert (info["runtime"], info["precision"], info["precision_reason"]) == ("torch", "fp32", None)
    assert info["name"] == "camvid_fast" and info["max_queue"] == 16  # the documented default


def test_serve_max_queue_answers_503_with_retry_after_when_full(served, monkeypatch):
    """--workers 1 --max-queue 1: one request runs, one waits, a third is refused with 503."""
    started, release = threading.Event(), threading.Event()
    call = hyperseg.Predictor.__call__

    def slow(self, image):
        started.set()
        assert release.wait(120)
        return call(self, image)

    image = SAMPLE.read_bytes()

    def scenario(client, app):
        monkeypatch.setattr(hyperseg.Predictor, "__call__", slow)
        answers = []

        def post():
            answers.append(client.post("/v1/segment", content=image, headers={"content-type": "image/png"}))

        running, queued = threading.Thread(target=post), threading.Thread(target=post)
        running.start()
        assert started.wait(120)
        queued.start()
        deadline = time.monotonic() + 120
        while app.state.pool.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.pool.in_flight == 2
        third = client.post("/v1/segment", content=image, headers={"content-type": "image/png"})
        release.set()
        running.join(120)
        queued.join(120)
        return third, answers

    third, answers = served(["-m", "camvid_fast", "--runtime", "torch", "--precision", "fp32",
                             "--workers", "1", "--max-queue", "1"], scenario)
    assert third.status_code == 503 and third.headers["retry-after"] == "1"
    assert "the server is busy" in third.json()["error"]
    assert [a.status_code for a in answers] == [200, 200]  # the running and the queued one both finish
