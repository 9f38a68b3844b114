"""The one checker (hyperseg.validate): each range rule on values it must accept and refuse, type matching
on nested annotations, the unknown-key message, and the one-line refusal its three callers share
(run config, HyperSegConfig, model metadata), each compared with a message written out by hand."""
import re
from typing import Any, Literal, Optional

import pytest

from hyperseg.errors import HypersegError
from hyperseg.validate import (Rule, at_least, check_fields, check_value, describe, either, finite_number, fits,
                               list_of, one_of, positive, refusal, reject_unknown, whole, within)

NAN, INF = float("nan"), float("inf")

# where: key=value <verdict>; expected <words>, on one line
ONE_LINE = re.compile(r"^[^\n:]+: [^\n=]+=[^\n]+ (has the wrong type|is out of range|disagrees with \w+); "
                      r"expected [^\n]+$")


@pytest.mark.parametrize("rule, expected, accepted, refused", [
    (finite_number(), "a finite number", [0, -3, 1.5, 1e300], [True, False, NAN, INF, -INF, "1", None]),
    (whole(1, 3), "a whole number 1..3", [1, 2, 3], [0, 4, 2.0, True, "2", None]),
    (whole(0), "a whole number >= 0", [0, 10 ** 12], [-1, 0.5, False]),
    (at_least(32), ">= 32", [32, 32.0, 4096], [31.9, -32, NAN, INF, True, "64"]),
    (at_least(0), ">= 0", [0, 0.0, 7], [-1e-9, False, INF]),
    (positive(), "> 0", [1e-9, 3], [0, 0.0, -1, NAN, INF, True]),
    (within(0, 1), "in [0, 1]", [0, 0.5, 1, 1.0], [-0.1, 1.1, NAN, INF, True, False]),
    (within(0, 2, low_open=True), "in (0, 2]", [1e-9, 2], [0, 2.0001]),
    (within(0, 1, high_open=True), "in [0, 1)", [0, 0.999], [1, 1.0]),
    (within(0, 180), "in [0, 180]", [0, 180], [180.5, -INF]),
    (one_of("off", "bf16", "fp16"), "off, bf16 or fp16", ["off", "fp16"], ["fp8", "OFF", None, 0]),
    (one_of(1, 2), "1 or 2", [1, 2], [True, 3, "1"]),
    (list_of(at_least(32), 2), "2 values, each >= 32", [[32, 64], (32, 64)], [[32], [16, 64], [32, 64, 96], "ab", 32]),
    (list_of(length=(1, 3)), "1 to 3 values", [[None], [1, 2, 3]], [[], [1, 2, 3, 4], {"a": 1}]),
    (list_of(positive()), "a list of values, each > 0", [[], [1, 2.5]], [[1, 0], [NAN], None]),
    (list_of(list_of(whole(0, 255), 3)), "a list of values, each 3 values, each a whole number 0..255",
     [[[0, 0, 0], [255, 255, 255]]], [[[0, 0]], [[0, 0, 256]], [[0, 0, True]]]),
])
def test_each_rule_accepts_and_refuses_and_says_what_it_expects(rule, expected, accepted, refused):
    assert rule.expected == expected
    assert [value for value in accepted if not rule(value)] == []
    assert [value for value in refused if rule(value)] == []


def test_a_rule_never_raises_and_can_be_reworded():
    assert Rule("first above zero", lambda v: v[0] > 0)(None) is False  # TypeError becomes a refusal
    assert at_least(1)("x") is False
    colour = list_of(whole(0, 255), 3).described("[r, g, b], each 0..255")
    assert colour.expected == "[r, g, b], each 0..255" and colour([1, 2, 3]) and not colour([1, 2])
    assert either(["a"]) == "a" and either(["a", "b"]) == "a or b"


@pytest.mark.parametrize("tp, fitting, not_fitting", [
    (int, [0, -5], [True, 1.0, "1", None]),
    (float, [1, 1.5, -2], [True, NAN, INF, "1.5", None]),
    (bool, [True, False], [1, 0, "true", None]),
    (str, ["", "x"], [1, None, b"x"]),
    (Optional[int], [None, 3], [True, 3.0]),
    (list[float], [[], [1, 2.5]], [(1, 2.5), [1, None], [NAN], [True], 1.0]),
    (Optional[list[int]], [None, [], [1, 2]], [[1.0], [1, None], 5, (1, 2)]),
    (list[Optional[int]], [[1, None]], [[1, "a"], None]),
    (list[list[int]], [[[0, 1], []]], [[[0, 1.5]], [0, 1]]),
    (Literal["input", "hidden"], ["input"], ["Input", None, 0]),
    (Literal[1, 2], [1, 2], [True, 1.0, 3]),
    (Optional[list[Literal["a", "b"]]], [None, ["a", "b", "a"]], [["c"], "a"]),
    (tuple[int, int], [(1, 2)], [[1, 2], (1, 2, 3), (1, 2.0)]),
    (tuple[float, ...], [(), (1, 2.5)], [[1.0], (NAN,)]),
    (dict[str, Any], [{}, {"a": [1]}], [[], None]),
    (Any, [None, object, [NAN]], []),
])
def test_type_matching(tp, fitting, not_fitting):
    assert [value for value in fitting if not fits(value, tp)] == []
    assert [value for value in not_fitting if fits(value, tp)] == []


@pytest.mark.parametrize("tp, words", [
    (int, "an integer"), (float, "a finite number"), (bool, "true or false"), (str, "text"), (dict, "a mapping"),
    (Optional[int], "an integer or null"), (Optional[str], "text or null"),
    (list[float], "a list of finite numbers"), (list[str], "a list of text"),
    (Optional[list[int]], "a list of integers or null"), (list[list[int]], "a list of lists of integers"),
    (Literal["off", "bf16", "fp16"], "off, bf16 or fp16"), (tuple[int, int], "a list of 2 integers"),
    (tuple[int, str], "[an integer, text]"), (dict[str, Any], "a mapping"),
])
def test_types_in_words(tp, words):
    assert describe(tp) == words


@pytest.mark.parametrize("value, tp, read", [
    ("1e-3", float, 0.001), (2, float, 2.0), ("7", int, 7), (2.0, int, 2), ("True", bool, True),
    ("false", bool, False), (3, str, "3"), (0.5, str, "0.5"), ((64, 96), list[int], [64, 96]),
    (["1", 2.0], Optional[list[int]], [1, 2]), (None, Optional[list[int]], None),
])
def test_coerce_reads_what_yaml_leaves_as_text(value, tp, read):
    fitted = check_value(value, tp, None, "config", "k", coerce=True)
    assert fitted == read and type(fitted) is type(read)


@pytest.mark.parametrize("value, tp", [
    (2.5, int), ("2.0", int), (True, int), (True, float), (1, bool), ("yes", bool), ("nan", float), ("1e999", float),
    (True, str), ([1, "a"], list[int]), (5, list[int]), ({"a": 1}, str),
])
def test_coerce_still_refuses(value, tp):
    with pytest.raises(HypersegError, match="has the wrong type"):
        check_value(value, tp, None, "config", "k", coerce=True)


def test_without_coerce_a_value_comes_back_as_it_is_or_is_refused():
    values = [1, 0.25]
    assert check_value(values, list[float], list_of(within(0, 1)), "c", "k") is values
    for value, tp in [("1e-3", float), (2.0, int), ("true", bool), (3, str), ((64, 96), list[int])]:
        with pytest.raises(HypersegError, match="has the wrong type"):
            check_value(value, tp, None, "c", "k")


def test_the_one_line_refusal():
    with pytest.raises(HypersegError) as wrong:
        check_value("abc", float, positive(), "config", "optim.lr", coerce=True)
    assert str(wrong.value) == "config: optim.lr='abc' has the wrong type; expected a finite number"
    with pytest.raises(HypersegError) as out:
        check_value(0, float, positive(), "config", "optim.lr", coerce=True)
    assert str(out.value) == "config: optim.lr=0.0 is out of range; expected > 0"  # the value as read
    long = refusal("m.pt", "metadata class_names", [f"class{i}" for i in range(100)], "1 to 65536 names")
    assert str(long) == f"m.pt: metadata class_names={repr([f'class{i}' for i in range(100)])[:80]}... is out of " \
                        f"range; expected 1 to 65536 names"
    assert all(ONE_LINE.match(str(e)) for e in (wrong.value, out.value, long))


def test_unknown_keys_are_refused_listing_the_valid_ones():
    reject_unknown({"lr": 1}, ["lr", "betas"], "f.yaml")  # nothing unknown
    with pytest.raises(HypersegError) as err:
        reject_unknown({"lr": 1, "momentum": 0.9, "nesterov": True}, ["lr", "betas"], "f.yaml", prefix="optim.")
    assert str(err.value) == ("f.yaml: unknown key(s) ['optim.momentum', 'optim.nesterov']; "
                              "valid keys: ['optim.betas', 'optim.lr']")
    with pytest.raises(HypersegError) as err:
        reject_unknown({1: "a", "optimizer": {}}, ["optim", "data"], "config", "section")  # YAML keys need not be text
    assert str(err.value) == "config: unknown section(s) [1, 'optimizer']; valid sections: ['data', 'optim']"


def test_check_fields_checks_every_type_before_any_range():
    types = {"a": int, "b": int}
    rules = {"a": at_least(1)}
    with pytest.raises(HypersegError, match="^w: s.b='x' has the wrong type"):  # not a=0, out of range
        check_fields({"a": 0, "b": "x"}, types, rules, "w", prefix="s.")
    with pytest.raises(HypersegError, match="^w: s.a=0 is out of range; expected >= 1$"):
        check_fields({"a": 0, "b": 1}, types, rules, "w", prefix="s.")
    assert check_fields({"a": "2", "z": "kept"}, types, rules, "w", coerce=True) == {"a": 2, "z": "kept"}


# ------------------------------------------------------------------------------------- the callers

def test_a_run_config_override_is_refused_in_the_shared_format():
    from hyperseg.train.config import ConfigError, load_config

    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lr=-1"])
    assert str(err.value) == "overrides: optim.lr=-1.0 is out of range; expected > 0"
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.crop_size=[64, true]"])
    assert str(err.value) == ("overrides: data.crop_size=[64, True] has the wrong type; "
                              "expected a list of integers or null")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.momentum=0.9"])
    assert str(err.value).startswith("overrides: unknown key(s) ['optim.momentum']; valid keys: ['optim.accum_steps',")


@pytest.mark.parametrize("fields, message", [
    (dict(num_classes=0), "HyperSeg config: num_classes=0 is out of range; expected >= 1"),
    (dict(encoder_drop_rate="high"),
     "HyperSeg config: encoder_drop_rate='high' has the wrong type; expected a finite number"),
    (dict(dynamic=1), "HyperSeg config: dynamic=1 has the wrong type; expected true or false"),
    (dict(context_head="v2"), "HyperSeg config: context_head='v2' is out of range; expected v1_0 or v0_1"),
    (dict(decoder_kernel_sizes=[1, 1, 2, 3, 3]),
     "HyperSeg config: decoder_kernel_sizes=[1, 1, 2, 3, 3] is out of range; "
     "expected 1 to 6 values, each an odd number >= 1"),
    (dict(decoder_channels=[64, 32]),
     "HyperSeg config: decoder_channels=[64, 32] disagrees with decoder_kernel_sizes; expected at least 4 values for "
     "5 decoder levels"),
])
def test_a_hyperseg_config_with_a_bad_field_is_refused_in_the_shared_format(fields, message):
    from hyperseg.model.config import HyperSegConfig

    with pytest.raises(HypersegError) as err:
        HyperSegConfig(**fields)
    assert str(err.value) == message and ONE_LINE.match(message)


def test_a_checkpoint_whose_palette_has_the_wrong_length_is_refused_in_the_shared_format(tmp_path):
    import torch

    import hyperseg
    from hyperseg.meta_schema import check_model_meta

    names = ["sky", "road", "car"]
    with pytest.raises(HypersegError) as err:
        check_model_meta({"class_names": names, "palette": [[0, 0, 0], [1, 1, 1]]}, "m.pt")
    assert str(err.value) == ("m.pt: metadata palette=[[0, 0, 0], [1, 1, 1]] disagrees with class_names; "
                              "expected 3 colours, one per class name")
    with pytest.raises(HypersegError) as err:
        check_model_meta({"palette": [[0, 0, 0], [1, 1]]}, "m.pt")
    assert str(err.value) == ("m.pt: metadata palette=[[0, 0, 0], [1, 1]] is out of range; "
                              "expected a list of [r, g, b] colours, each 0..255")
    # the same refusal when a checkpoint file holds it
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4])
    hyperseg.save_model(model, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    ckpt["meta"].update(class_names=names, palette=[[0, 0, 0], [1, 1, 1]])
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(HypersegError) as err:
        hyperseg.load_model(str(tmp_path / "bad.pt"))
    assert str(err.value) == (f"{tmp_path / 'bad.pt'}: metadata palette=[[0, 0, 0], [1, 1, 1]] disagrees with "
                              f"class_names; expected 3 colours, one per class name")
    assert ONE_LINE.match(str(err.value))
