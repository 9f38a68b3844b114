"""The authors' checkpoints load unchanged and reproduce the authors' float64 outputs."""
import pytest
import torch

import hyperseg
from hub.official_format import assert_loads_as, authors_checkpoint
from hyperseg.cli import main as cli_main
from hyperseg.hub.official import OfficialCheckpointError, config_from_arch, from_official, parse_arch

CONFIGS = [
    "camvid_efficientnet_b1_hyperseg-l",
    "camvid_efficientnet_b1_hyperseg-s",
    "cityscapes_efficientnet_b1_hyperseg-m",
    "cityscapes_efficientnet_b1_hyperseg-s",
    "vocsbd_efficientnet_b3_hyperseg-l",
]
VARIANTS = ["hyperseg_l_camvid", "hyperseg_s_camvid", "hyperseg_m_cityscapes", "hyperseg_s_cityscapes", "hyperseg_l_voc"]
PAPER_PARAMS = {
    "hyperseg_m_cityscapes": 10_311_214,
    "hyperseg_s_cityscapes": 10_041_398,
    "hyperseg_s_camvid": 9_949_064,
    "hyperseg_l_camvid": 9_969_104,
    "hyperseg_l_voc": 39_680_458,
}


def _rel_err(y, ref):
    return ((y - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("config", CONFIGS)
def test_reproduces_authors_output(fill, config):
    model = from_official(fill.reference_checkpoint(config)).double()
    io = fill.reference_io(config)
    assert not model.training
    with torch.no_grad():
        y = model(io["x"])
        fused = hyperseg.fuse_bn(model)(io["x"])
    assert y.shape == io["y"].shape
    assert _rel_err(y, io["y"]) <= 1e-6
    assert _rel_err(fused, io["y"]) <= 1e-6


@pytest.mark.parametrize("name,count", sorted(PAPER_PARAMS.items()))
def test_parameter_counts_equal_authors(name, count):
    assert sum(p.numel() for p in hyperseg.create_model(name).parameters()) == count


def test_official_arch_maps_to_registered_variant(fill):
    for config, variant in zip(CONFIGS, VARIANTS):
        arch = fill.reference_checkpoint(config)["arch"]
        cfg = config_from_arch(arch)
        assert cfg.encoder_padding == "static"
        expected = "prefix" if "hyperseg_v1_0.hyperseg" in arch else "partition"
        assert cfg.signal_slicing == expected
        ref = hyperseg.create_model(variant).config
        assert (cfg.decoder_kernel_sizes, cfg.weight_groups, cfg.encoder_reductions) == (
            ref.decoder_kernel_sizes, ref.weight_groups, ref.encoder_reductions)


def test_converted_file_reproduces_authors_output(fill, tmp_path):
    """The numbers of the conversion: a ``module.`` file converted by the CLI gives the authors' float64 output."""
    config = "cityscapes_efficientnet_b1_hyperseg-m"
    ckpt = fill.reference_checkpoint(config)
    ckpt = {"state_dict": {"module." + k: v for k, v in ckpt["state_dict"].items()}, "arch": ckpt["arch"],
            "epoch": 3, "best_iou": 0.5}
    torch.save(ckpt, tmp_path / "official.pth")
    assert cli_main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "ours.pt")]) == 0
    model = hyperseg.load_model(tmp_path / "ours.pt").double()
    io = fill.reference_io(config)
    with torch.no_grad():
        assert _rel_err(model(io["x"]), io["y"]) <= 1e-6
    assert model.meta["class_names"][0] == "road"


def test_synthetic_checkpoints_have_the_authors_layout(fill):
    """tests/hub/official_format.py writes every key, shape and dtype of the authors' state dicts, in their order."""
    for config, variant in zip(CONFIGS, VARIANTS):
        coords_res = parse_arch(fill.reference_checkpoint(config)["arch"])[2].get("coords_res", [])
        _, ckpt = authors_checkpoint(variant, coords_res=coords_res)
        layout = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in ckpt["state_dict"].items()]
        assert layout == fill.read_keys(config), config


def test_module_prefix_is_stripped_in_file_and_cli_convert(tmp_path):
    """A DataParallel ``module.`` file with the training extras converts, in Python and through the CLI,
    to the model it was made from."""
    model, ckpt = authors_checkpoint("hyperseg_m_cityscapes")
    ckpt = {"state_dict": {"module." + k: v for k, v in ckpt["state_dict"].items()}, "arch": ckpt["arch"],
            "epoch": 3, "best_iou": 0.5}
    torch.save(ckpt, tmp_path / "official.pth")
    loaded = from_official(tmp_path / "official.pth")
    assert not loaded.training and loaded.meta["source"] == "official"
    assert loaded.meta["official_arch"] == ckpt["arch"]
    assert_loads_as(loaded, model)
    assert cli_main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "ours.pt")]) == 0
    converted = hyperseg.load_model(tmp_path / "ours.pt")
    assert_loads_as(converted, model)
    assert converted.meta["class_names"][0] == "road" and converted.meta["architecture"] == "hyperseg_m_cityscapes"


@pytest.mark.parametrize("name,size", [("hyperseg_s_cityscapes", (64, 128)),  # hyperseg_v1_0_unify
                                       ("hyperseg_l_voc", (128, 128))])  # hyperseg_v0_1
def test_the_other_templates_load_as_the_model_they_were_made_from(name, size):
    """hyperseg_v1_0 is covered above; the unify template and v0_1 name their decoder and w_i differently."""
    model, ckpt = authors_checkpoint(name)
    assert_loads_as(from_official(ckpt), model, size=size)


def test_bare_state_dict_with_config_name_and_inferred():
    model, ckpt = authors_checkpoint("hyperseg_s_camvid")
    state = ckpt["state_dict"]
    for loaded in (from_official(state, config="hyperseg_s_camvid"), from_official(state)):
        assert loaded.meta["architecture"] == "hyperseg_s_camvid"
        assert_loads_as(loaded, model)


def test_arch_is_never_evaluated(tmp_path):
    _, ckpt = authors_checkpoint("hyperseg_m_cityscapes")
    marker = tmp_path / "evaluated"
    ckpt["arch"] = (f"hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet("
                    f"__import__('pathlib').Path({str(marker)!r}).touch())")
    with pytest.raises(OfficialCheckpointError, match="non-literal"):
        from_official(ckpt)
    assert not marker.exists()


@pytest.mark.parametrize("arch,match", [
    ("os.system('ls')", "not one of the released"),
    ("hyperseg.models.hyperseg_v1_0.hyperseg_efficientnet('resnet-50', levels=2)", "EfficientNet"),
    ("not python at all (", "not a Python call"),
])
def test_bad_arch_strings(arch, match):
    with pytest.raises(OfficialCheckpointError, match=match):
        config_from_arch(arch)


def test_keys_that_fit_no_configuration():
    _, ckpt = authors_checkpoint("hyperseg_m_cityscapes")
    ckpt["state_dict"]["decoder.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(OfficialCheckpointError, match="fits no released"):
        from_official(ckpt)
    state = authors_checkpoint("hyperseg_m_cityscapes")[1]["state_dict"]
    state.pop("backbone._conv_head.weight")
    with pytest.raises(OfficialCheckpointError, match="fit none of the paper configurations"):
        from_official(state)


def test_class_count_mismatch():
    _, ckpt = authors_checkpoint("hyperseg_m_cityscapes")
    assert "num_classes=19" in ckpt["arch"]
    ckpt["arch"] = ckpt["arch"].replace("num_classes=19", "num_classes=12")
    with pytest.raises(OfficialCheckpointError, match="class-count mismatch.*19 classes.*expects 12"):
        from_official(ckpt)


def test_cli_list_shows_models_and_builtin_weights(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "hyperseg_m_cityscapes  (cityscapes, 19 classes, 1024x512)" in out
    assert "hyperseg_lite2_camvid  (camvid, 11 classes, 480x360)" in out
    assert "hyperseg_lite0_fast_camvid  (camvid, 11 classes, 480x360)" in out
    assert ("camvid  (built-in weights of hyperseg_lite2_camvid, 11 classes, val mIoU 87.65 on camvid:val "
            "(trained on it: a fit") in out
    assert ("camvid_train  (built-in weights of hyperseg_lite2_camvid, 11 classes, val mIoU 76.74 on camvid:val, "
            "31.0 ms at 480x360 (openvino bf16") in out
    assert ("camvid_fast  (built-in weights of hyperseg_lite0_fast_camvid, 11 classes, images seen at 0.8x their "
            "size, unseen-street mIoU 47.92 on camvid:train drive 0006R0 (the recipe trained without it), "
            "val mIoU 85.32 on camvid:val (trained on it: a fit") in out


def test_cli_convert_config_names_the_architecture_of_a_bare_state_dict(fill, tmp_path, capsys):
    """A bare state dict has no ``arch``: ``--config`` is the architecture used. The wrong paper model is
    refused in one line and writes nothing (inference from the keys alone would have succeeded); the
    right one reproduces the authors' output."""
    config = "camvid_efficientnet_b1_hyperseg-s"
    torch.save(fill.reference_checkpoint(config)["state_dict"], tmp_path / "bare.pth")
    out = tmp_path / "ours.pt"
    assert cli_main(["convert", str(tmp_path / "bare.pth"), str(out), "--config", "hyperseg_m_cityscapes"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit the configuration it names" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert cli_main(["convert", str(tmp_path / "bare.pth"), str(out), "--config", "hyperseg_s_camvid"]) == 0
    model = hyperseg.load_model(out).double()
    assert model.meta["architecture"] == "hyperseg_s_camvid"
    io = fill.reference_io(config)
    with torch.no_grad():
        assert _rel_err(model(io["x"]), io["y"]) <= 1e-6
