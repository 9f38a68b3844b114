"""Every built-in record's recipe command reproduces the weights' training recipe: the command, parsed
and loaded as `hyperseg train` would, equals the resolved config stored inside the weights file (the
oracle: what the trainer wrote when it trained them), and a config's ``base`` merges as documented."""
import shlex
from pathlib import Path

import pytest
import torch

import hyperseg
from hyperseg.hub.weights import get_weights
from hyperseg.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
# where a run was, not how it trained
PLACE = {("data", "root"), ("data", "workers"), ("train", "out_dir"), ("train", "progress")}


def _command_config(command: str):
    args = shlex.split(command)
    assert args[:3] == ["hyperseg", "train", "--config"]
    return load_config(ROOT / args[3], args[4:])


@pytest.mark.parametrize("name", ["camvid", "camvid_train", "camvid_fast", "camvid_fast_train"])
def test_a_records_command_is_the_recipe_stored_in_its_file(name):
    weights = get_weights(name)
    stored = torch.load(weights.verified_path(), map_location="cpu", weights_only=True)["meta"]["recipe"]
    loaded = _command_config(weights.recipe["command"]).to_dict()
    classes = len(weights.class_names)  # the trainer sets it from the dataset
    built = hyperseg.create_model(loaded["model"]["name"], num_classes=classes, **loaded["model"]["options"])
    trained = hyperseg.create_model(stored["model"]["name"], num_classes=classes, **stored["model"]["options"])
    built, trained = built.config.to_dict(), trained.config.to_dict()
    assert built == trained and loaded["model"]["name"] == weights.architecture
    skip = set(PLACE) | ({("distill", "teacher")} if "teacher" in weights.recipe else set())  # a file, named by SHA
    for section, values in stored.items():
        if section == "model":
            assert loaded["model"]["input_scale"] == values["input_scale"]
            assert loaded["model"]["pretrained_backbone"] == values["pretrained_backbone"]
            continue
        for key, value in values.items():
            if (section, key) not in skip:
                assert loaded[section][key] == value, f"{name}: {section}.{key}"
    assert weights.recipe["iterations"] == stored["optim"]["max_iters"]


def test_a_base_is_laid_under_the_file_key_by_key(tmp_path):
    (tmp_path / "parent.yaml").write_text("model:\n  name: hyperseg\n  options: {decoder_channels: [8, 8], weight_groups: [4, 4]}\n"
                                          "optim: {lr: 0.5, max_iters: 7}\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmodel:\n  options: {weight_groups: [2, 2]}\noptim: {lr: 0.25}\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.max_iters=9"])
    assert cfg.model.options == {"decoder_channels": [8, 8], "weight_groups": [2, 2]}  # nested keys merge
    assert (cfg.optim.lr, cfg.optim.max_iters) == (0.25, 9)  # the child, then the overrides, win


def test_a_bad_base_names_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="comes back to itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found: .*missing.yaml \\(the base of .*c.yaml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: e.yaml\n")
    (tmp_path / "e.yaml").write_text("optim: {learning_rate: 1}\n")
    with pytest.raises(ConfigError, match="e.yaml.*learning_rate"):
        load_config(tmp_path / "d.yaml")
