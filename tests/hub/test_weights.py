"""Weights as data: records agree with their files, list reads records only, users register their own."""
import hashlib
import os
import time
from pathlib import Path

import pytest
import torch

import hyperseg
from hub.official_format import assert_loads_as, authors_checkpoint
from hyperseg import checkpoint, pretrained
from hyperseg.cli import main as cli_main
from hyperseg.errors import HypersegError
from hyperseg.hub.weights import Weights, get_weights, list_weights, register_weights


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test vanish with it."""
    monkeypatch.setattr(pretrained, "_REGISTRY", dict(pretrained._REGISTRY))


def test_list_reads_records_without_opening_weights(file_opens, capsys):
    def opened() -> set:
        return {Path(os.fsdecode(p)).resolve() for p in file_opens.paths() if not isinstance(p, int)}

    weights_files = {get_weights(name).path.resolve() for name in list_weights()}
    with file_opens.watch():
        get_weights("camvid").verified_path()
    assert get_weights("camvid").path.resolve() in opened()  # the guard sees a checksum's plain open()
    with file_opens.watch():  # every open: torch.load's, a checksum's, anything else's
        assert cli_main(["list"]) == 0
    assert sorted(opened() & weights_files) == []  # the weights files hyperseg list opened
    out = capsys.readouterr().out
    # the latency shown is the record's for the path --precision auto takes on this kind of CPU
    from hyperseg.runtime import installed_runtimes
    from hyperseg.runtime.precision import CPU_KINDS, choose_precision, cpu_kind

    metrics = get_weights("camvid").metrics
    kind = cpu_kind() if cpu_kind() in metrics["latency_ms"] else next(iter(metrics["latency_ms"]))
    runtime = installed_runtimes()[0]
    path = f"{runtime} {choose_precision(metrics, runtime, cpu=kind, has_calibration=True).precision}"
    assert (f"camvid  (built-in weights of hyperseg_lite2_camvid, 11 classes, val mIoU 87.65 on camvid:val "
            f"(trained on it: a fit, not an estimate), {metrics['latency_ms'][kind][path]:.1f} ms at 480x360 ({path}, the default path on a "
            f"CPU with {CPU_KINDS[kind]}))") in out
    assert out.count("measured on:") == len({k for w in list_weights() for k in get_weights(w).metrics["latency_ms"]
                                            if k == kind})
    assert cli_main(["list", "zzz"]) == 0 and capsys.readouterr().out == ""  # the pattern filters weights too


def test_builtin_record_agrees_with_its_file():
    record = get_weights("camvid")
    path = record.verified_path()  # SHA-256 checked
    stored = checkpoint._load_checkpoint_file(path, "cpu")  # the file alone, without the record
    assert stored.meta["val_miou"] == record.metrics["val_miou"]
    assert stored.meta["class_names"] == list(record.class_names)
    assert stored.meta["palette"] == [list(c) for c in record.palette]
    assert stored.meta["mean"] == list(record.mean) and stored.meta["std"] == list(record.std)
    assert all(stored.config.to_dict()[k] == v for k, v in record.config.items())
    assert stored.meta["recipe"]["optim"]["max_iters"] == record.recipe["iterations"]
    loaded = hyperseg.load_model("camvid")
    assert loaded.meta["weights"] == "camvid" and loaded.meta["input_size"] == [360, 480]


def test_a_damaged_file_fails_its_checksum(isolated_registry, tmp_path):
    copy = tmp_path / "camvid_copy.pt"
    data = bytearray(get_weights("camvid").path.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    register_weights(Weights(name="damaged", architecture="hyperseg", file=str(copy),
                             sha256=get_weights("camvid").sha256))
    with pytest.raises(HypersegError, match="damaged.*SHA-256"):
        hyperseg.load_model("damaged")


def test_users_register_an_authors_checkpoint_by_path(isolated_registry, tmp_path):
    source, ckpt = authors_checkpoint("hyperseg_m_cityscapes")
    pth = tmp_path / "hyperseg_m.pth"
    torch.save(ckpt, pth)
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()
    register_weights(Weights(name="my_m", architecture="hyperseg_m_cityscapes", file=str(pth), format="official",
                             sha256=digest, class_names=tuple(f"c{i}" for i in range(19)),
                             palette=tuple((i, i, i) for i in range(19)), input_size=(512, 1024),
                             metrics={"val_miou": 0.5}))
    assert "my_m" in list_weights("my_*")
    model = hyperseg.load_model("my_m")
    assert_loads_as(model, source)
    assert model.meta["class_names"][0] == "c0" and model.meta["input_size"] == [512, 1024]
    with pytest.raises(HypersegError, match="already registered"):
        register_weights(get_weights("my_m"))


def test_bad_records_are_refused():
    with pytest.raises(HypersegError, match="format"):
        Weights(name="x", architecture="hyperseg", file="x.pt", format="pickle")
    with pytest.raises(HypersegError, match="palette"):
        Weights(name="x", architecture="hyperseg", file="x.pt", class_names=("a", "b"), palette=((0, 0, 0),))
    with pytest.raises(HypersegError, match="no weights named"):
        get_weights("nope")


def test_a_record_sets_the_scale_its_weights_run_at(isolated_registry, tmp_path, capsys):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    hyperseg.save_model(model, tmp_path / "m.pt")  # the file itself says nothing about a scale
    register_weights(Weights(name="small", architecture="hyperseg", file=str(tmp_path / "m.pt"), input_scale=0.8))
    assert hyperseg.load_model("small").meta["input_scale"] == 0.8
    assert "input_scale" not in hyperseg.load_model(str(tmp_path / "m.pt")).meta
    assert cli_main(["list", "small"]) == 0
    assert "images seen at 0.8x their size" in capsys.readouterr().out
    with pytest.raises(HypersegError, match="'bad'.*input_scale 0.*\\(0, 2\\]"):
        Weights(name="bad", architecture="hyperseg", file="x.pt", input_scale=0)


@pytest.mark.parametrize("name", ["camvid", "camvid_train", "camvid_fast", "camvid_fast_train"])
def test_builtin_records_name_the_architecture_their_file_stores(name):
    """The record's architecture, built by name, is exactly the config stored in the weights file:
    the oracle is the file, read with torch.load, not the record."""
    from hyperseg.model.config import HyperSegConfig
    from hyperseg.hub.weights import get_weights

    weights = get_weights(name)
    assert weights.architecture in hyperseg.list_models() and not weights.config
    stored = torch.load(weights.verified_path(), map_location="cpu", weights_only=True)["config"]
    built = hyperseg.create_model(weights.architecture)
    assert built.config.to_dict() == HyperSegConfig.from_dict(stored).to_dict()
    assert built.meta["mean"] == list(weights.mean) and built.meta["class_names"] == list(weights.class_names)


def test_an_unseen_street_estimate_travels_from_the_record_to_list_meta_and_serve(isolated_registry, tmp_path,
                                                                                    capsys):
    from fastapi.testclient import TestClient

    from hyperseg.serve import create_app

    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    hyperseg.save_model(model, tmp_path / "m.pt")
    register_weights(Weights(name="street", architecture="hyperseg", file=str(tmp_path / "m.pt"),
                             class_names=("a", "b", "c"), input_size=(64, 64),
                             metrics={"val_miou": 0.9, "val_in_training": True, "unseen_miou": 0.47916,
                                      "unseen_split": "camvid:train drive 0006R0"}))
    assert cli_main(["list", "street"]) == 0
    out = capsys.readouterr().out
    assert ("unseen-street mIoU 47.92 on camvid:train drive 0006R0 (the recipe trained without it), "
            "val mIoU 90.00 on ? (trained on it: a fit, not an estimate)") in out
    meta = hyperseg.load_model("street").meta
    assert (meta["unseen_miou"], meta["unseen_split"]) == (0.47916, "camvid:train drive 0006R0")
    with TestClient(create_app("street", runtime="torch", precision="fp32")) as client:
        for _ in range(600):  # the model loads in the background; 503 until then
            response = client.get("/v1/model")
            if response.status_code != 503:
                break
            time.sleep(0.05)
        info = response.json()
    assert (info["unseen_miou"], info["unseen_split"]) == (47.92, "camvid:train drive 0006R0")
    with pytest.raises(HypersegError, match="unseen_miou"):  # a percentage where a fraction belongs
        from hyperseg.meta_schema import check_model_meta
        check_model_meta({"unseen_miou": 47.9}, "m.pt")
