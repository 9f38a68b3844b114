"""RuntimeOptions: every value each field accepts and refuses (the tables below are written by hand,
not derived from the code), one object from the command line down to the runtime loader, and the
keyword form of Predictor and load_runtime."""
import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
import hyperseg.infer.predictor as predictor_module
import hyperseg.runtime as runtime_package
from hyperseg.cli import build_parser
from hyperseg.cli import main as cli_main
from hyperseg.errors import HypersegError, InputTypeError
from hyperseg.runtime import EagerRuntime, RuntimeOptions, TorchRuntime, load_runtime
from hyperseg.runtime.options import as_options

ACCEPTED = {
    "runtime": ["auto", "torch", "onnxruntime", "openvino", "eager"],
    "precision": ["auto", "fp32", "bf16", "int8"],
    "shapes": ["static", "dynamic"],
    "device": ["auto", "cpu", "cuda", "cuda:0", "cuda:3", "cpu:0"],
    "calibration": [None, "calib", "/data/calibration images"],
    "calibration_count": [1, 30, 5000],
}
# given -> kept: a torch.device by its name, a path as text
NORMALISED = [
    ("device", torch.device("cpu"), "cpu"),
    ("device", torch.device("cuda", 1), "cuda:1"),
    ("calibration", Path("calib"), "calib"),
]
REFUSED = {
    "runtime": ["tensorrt", "Torch", " torch", "", None, 1],
    "precision": ["fp16", "FP32", "int4", "", None, 32],
    "shapes": ["ragged", "Static", "", None],
    "device": ["gpu", "mps", "cuda:", "cuda:x", "cuda0", "", None, 0],
    "calibration": ["", 3, ["calib"]],
    "calibration_count": [0, -1, 2.5, True, "30", None],
}
OPTION = {"runtime": "--runtime", "precision": "--precision", "shapes": "--shapes", "device": "--device",
          "calibration": "--calibration", "calibration_count": "--calibration-count"}
DEFAULTS = dict(runtime="auto", precision="auto", shapes="static", device="auto", calibration=None,
                calibration_count=30)

# What each runtime computes in at all (a machine may offer less: bf16 needs native support).
OFFERED = {"torch": {"fp32", "bf16"}, "eager": {"fp32"}, "onnxruntime": {"fp32", "int8"},
           "openvino": {"fp32", "bf16", "int8"}}


@pytest.mark.parametrize("field,value", [(f, v) for f, values in ACCEPTED.items() for v in values])
def test_every_accepted_value(field, value):
    assert getattr(RuntimeOptions(**{field: value}), field) == value


@pytest.mark.parametrize("field,value,kept", NORMALISED)
def test_values_kept_by_their_name(field, value, kept):
    assert getattr(RuntimeOptions(**{field: value}), field) == kept


@pytest.mark.parametrize("field,value", [(f, v) for f, values in REFUSED.items() for v in values])
def test_every_refused_value_is_one_line_naming_the_option_the_value_and_what_is_expected(field, value):
    with pytest.raises(HypersegError) as caught:
        RuntimeOptions(**{field: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{OPTION[field]} {value!r}: expected ")


def test_the_refusal_lists_the_accepted_values():
    for field in ("runtime", "precision", "shapes"):
        with pytest.raises(HypersegError) as caught:
            RuntimeOptions(**{field: "nonsense"})
        assert caught.value.args[0].endswith(", ".join(ACCEPTED[field]))


def test_defaults_and_immutability():
    options = RuntimeOptions()
    assert dataclasses.asdict(options) == DEFAULTS
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.precision = "fp32"
    assert RuntimeOptions(precision="fp32") == RuntimeOptions(precision="fp32")
    assert hyperseg.RuntimeOptions is RuntimeOptions


def test_the_command_lines_choices_and_defaults_are_the_tables():
    """What predict's help lists and what its parser defaults to is what RuntimeOptions accepts."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    actions = {a.dest: a for a in commands["predict"]._actions}
    for field in ("runtime", "precision", "device"):
        listed = [part.split(" (")[0] for part in actions[field].help.split(" | ")]
        assert listed == [value for value in ACCEPTED[field] if ":" not in value]
    assert list(actions["shapes"].choices) == ACCEPTED["shapes"]
    args = vars(parser.parse_args(["predict"]))
    assert {field: args[field] for field in OPTION if field in args} == \
        {field: DEFAULTS[field] for field in OPTION if field in args}


# ---------------------------------------------------------------------------------- the keyword form

def test_keywords_not_given_take_the_defaults_and_none_is_not_given():
    assert as_options() == RuntimeOptions()
    assert as_options(precision=None, runtime="torch") == RuntimeOptions(runtime="torch")


def test_options_and_a_loose_keyword_together_are_one_line_refused():
    options = RuntimeOptions(runtime="torch")
    assert as_options(options) is options
    with pytest.raises(HypersegError, match=r"^options= and precision= given together; put precision= into the "
                                            r"RuntimeOptions$"):
        as_options(options, precision="fp32")
    with pytest.raises(HypersegError, match="options= and runtime="):
        load_runtime("camvid_fast", options=options, runtime="torch")
    with pytest.raises(HypersegError, match="options= and device="):
        hyperseg.Predictor("camvid_fast", options=options, device="cpu")
    with pytest.raises(InputTypeError, match="expected a RuntimeOptions"):
        as_options({"runtime": "torch"})


@pytest.fixture(scope="module")
def model():
    return hyperseg.load_model("camvid_fast")


def test_the_documented_keywords_still_work_and_equal_the_options_form(model):
    by_keywords = hyperseg.Predictor(model, runtime="eager", precision="fp32", device="cpu")
    by_options = hyperseg.Predictor(model, options=RuntimeOptions(runtime="eager", precision="fp32", device="cpu"))
    assert by_keywords.options == by_options.options == RuntimeOptions(runtime="eager", precision="fp32", device="cpu")
    image = np.asarray(Image.open(Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png")
                       .convert("RGB").resize((80, 64)))
    np.testing.assert_array_equal(by_keywords(image), by_options(image))
    eager = load_runtime(model, runtime="eager", precision=None, device="cpu")  # None is auto
    assert (eager.name, eager.precision) == ("eager", "fp32")
    with pytest.raises(HypersegError, match="--precision 'fp16'"):
        load_runtime(model, precision="fp16")


@pytest.mark.parametrize("runtime", ["torch", "eager"])
def test_a_runtime_refuses_what_it_never_computes_in(model, runtime):
    build = TorchRuntime if runtime == "torch" else EagerRuntime
    for precision in {"fp32", "bf16", "int8"} - OFFERED[runtime]:
        with pytest.raises(HypersegError, match=f"^{runtime} does not offer precision {precision}; it offers "):
            build(model, device="cpu", precision=precision)


def test_bench_refuses_a_bad_name_before_loading_anything(monkeypatch):
    import hyperseg.bench.harness as harness

    def never(*args, **kwargs):
        raise AssertionError("loaded before the names were checked")

    monkeypatch.setattr(harness, "resolve_model", never)
    monkeypatch.setattr(harness, "_image", never)
    with pytest.raises(HypersegError, match="^--precision 'fp16': expected "):
        harness.benchmark("camvid_fast", candidates=[("torch", "fp32"), ("torch", "fp16")])


# ------------------------------------------------------------- one object from the command line down

@pytest.fixture
def made(monkeypatch):
    """Every RuntimeOptions made while the test runs."""
    found = []
    check = RuntimeOptions.__post_init__

    def counting(self):
        check(self)
        found.append(self)

    monkeypatch.setattr(RuntimeOptions, "__post_init__", counting)
    return found


@pytest.fixture
def loaded(model, monkeypatch):
    """The options every load_runtime call of Predictor and eval received; what they get is one
    eager runtime of the fast weights, whatever was asked (what was asked is the record)."""
    received = []
    real, eager = runtime_package.load_runtime, EagerRuntime(model, device="cpu")

    def spy(source, **kwargs):
        received.append(kwargs.get("options"))
        return real(eager, **kwargs)

    monkeypatch.setattr(predictor_module, "load_runtime", spy)
    monkeypatch.setattr(runtime_package, "load_runtime", spy)
    return received


RUN = ["--model", "camvid_fast", "--runtime", "torch", "--precision", "fp32", "--shapes", "dynamic",
       "--device", "cpu"]
EXPECTED = dict(runtime="torch", precision="fp32", shapes="dynamic", device="cpu")


def test_predict_builds_one_runtime_options_and_hands_it_down(made, loaded, tmp_path):
    image = tmp_path / "street.png"
    Image.open(Path(hyperseg.__file__).parent / "assets" / "camvid_sample_1.png").convert("RGB") \
        .resize((80, 64)).save(image)
    assert cli_main(["predict", str(image), "--out", str(tmp_path / "out"), *RUN]) == 0
    assert len(made) == 1 and loaded == made
    assert loaded[0] is made[0] and dataclasses.asdict(made[0]) == {**DEFAULTS, **EXPECTED}


def test_eval_builds_one_runtime_options_and_hands_it_down(made, loaded, tiny_camvid, tmp_path):
    assert cli_main(["eval", "--data", str(tiny_camvid), "--split", "val", "--workers", "0", *RUN]) == 0
    assert len(made) == 1 and loaded == made
    assert loaded[0] is made[0] and dataclasses.asdict(made[0]) == {**DEFAULTS, **EXPECTED}


def test_serve_builds_one_runtime_options_for_all_its_workers(made, loaded, monkeypatch):
    pytest.importorskip("fastapi")
    uvicorn = pytest.importorskip("uvicorn")

    class NoServer:  # the models are loaded before the server would start listening
        def __init__(self, config):
            pass

        def run(self):
            pass

    monkeypatch.setattr(uvicorn, "Server", NoServer)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the workers' share of the cores
    assert cli_main(["serve", "--port", "0", "--workers", "2", *RUN]) == 0
    assert len(made) == 1 and loaded == [made[0], made[0]]
    assert all(options is made[0] for options in loaded)
    assert dataclasses.asdict(made[0]) == {**DEFAULTS, **EXPECTED}
