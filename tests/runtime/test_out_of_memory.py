"""Running out of memory is the machine's limit, said in one sentence naming the size, never a traceback;
and bench's model-only timing runs at the size the end-to-end path runs at."""
import argparse
import re

import numpy as np
import pytest
import torch
from PIL import Image

import hyperseg
from hyperseg.cli import build_parser
from hyperseg.cli import main as cli_main
from hyperseg.bench.harness import benchmark
from hyperseg.runtime.inference import predict_logits
from hyperseg.errors import ResourceError
from hyperseg.model import HyperSeg
from hyperseg.runtime import load_runtime

# what torch's CPU allocator raises (c10/core/impl/alloc_cpu.cpp), and what CUDA's says
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
           "allocate 1536000000000 bytes. Error code 12 (Cannot allocate memory)")
FAILURES = {
    "cpu allocator": lambda: RuntimeError(CPU_OOM),
    "not enough memory": lambda: RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 96 GB"),
    "cuda": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    "MemoryError": lambda: MemoryError(),
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    model.meta.update(class_names=["a", "b", "c"])
    path = tmp_path_factory.mktemp("oom") / "tiny.pt"
    hyperseg.save_model(model, path)
    return str(path)


def _failing_forward(monkeypatch, make_error, at=(64, 96)):
    """HyperSeg's forward raises ``make_error()`` on inputs of size ``at``; other sizes (the probe that
    fusing BatchNorm runs the model on) run as usual."""
    original = HyperSeg.forward

    def forward(self, x):
        if tuple(x.shape[-2:]) == at:
            raise make_error()
        return original(self, x)

    monkeypatch.setattr(HyperSeg, "forward", forward)


def _one_line_about(text, size):
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1, text
    assert "not enough memory" in text and size in text and "--max-size" in text, text
    suggested = int(re.search(r"--max-size (\d+)", text).group(1))
    assert 32 <= suggested < max(int(v) for v in size.split("x"))  # a limit below what failed


def _cli_error(err, command, size):
    """stderr of a failed command: progress lines (``model: ...``), then one error line, no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"hyperseg {command}: error:")]
    assert len(errors) == 1, err
    _one_line_about(errors[0], size)


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("runtime", ["torch", "eager"])
def test_runtimes_turn_allocation_failures_into_resource_errors(failure, runtime, checkpoint, monkeypatch):
    engine = load_runtime(checkpoint, runtime=runtime)
    _failing_forward(monkeypatch, FAILURES[failure])
    with pytest.raises(ResourceError) as info:
        engine(torch.zeros(1, 3, 64, 96))
    assert isinstance(info.value, OSError)  # the machine's fault: a job stops, a server answers 503
    _one_line_about(str(info.value), "64x96")
    assert info.value.__context__ is None and info.value.__cause__ is None  # the failed call's tensors are freed


@pytest.mark.parametrize("failure", FAILURES)
def test_predict_logits_turns_allocation_failures_of_a_plain_model_into_resource_errors(failure, monkeypatch):
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    _failing_forward(monkeypatch, FAILURES[failure])
    with pytest.raises(ResourceError) as info:
        predict_logits(model, torch.zeros(2, 3, 64, 96))
    _one_line_about(str(info.value), "64x96")
    assert "batch of 2" in str(info.value)


def test_other_errors_pass_through_unchanged(checkpoint, monkeypatch):
    engine = load_runtime(checkpoint, runtime="torch")
    _failing_forward(monkeypatch, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as info:
        engine(torch.zeros(1, 3, 64, 96))
    assert not isinstance(info.value, ResourceError)


@pytest.mark.parametrize("failure", ["cpu allocator", "MemoryError"])
def test_predict_out_of_memory_is_one_line(failure, checkpoint, tmp_path, monkeypatch, capsys):
    image = tmp_path / "big.png"
    Image.fromarray(np.full((64, 96, 3), 128, np.uint8)).save(image)
    _failing_forward(monkeypatch, FAILURES[failure])
    code = cli_main(["predict", str(image), "-m", checkpoint, "--runtime", "torch", "--max-size", "0",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    _cli_error(err, "predict", "64x96")


@pytest.mark.parametrize("failure", ["cpu allocator", "MemoryError"])
@pytest.mark.parametrize("runtime", ["torch", "eager"])
def test_bench_out_of_memory_is_one_line(failure, runtime, checkpoint, monkeypatch, capsys):
    _failing_forward(monkeypatch, FAILURES[failure])
    code = cli_main(["bench", checkpoint, "--size", "64x96", "--runtime", runtime, "--rounds", "1", "--warmup", "0"])
    err = capsys.readouterr().err
    assert code == 2
    _cli_error(err, "bench", "64x96")


def test_bench_times_the_model_alone_at_the_size_end_to_end_runs_it(tmp_path, monkeypatch):
    """--size 96x128 with --max-size 64 and an input scale of 0.75: every call of the network, end to
    end and model only, in every runtime, sees 36x48 (96x128 brought down to 48x64, then 0.75 of it)."""
    model = hyperseg.create_model("hyperseg", encoder_name="tf_efficientnet_lite0", num_classes=3,
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    model.meta.update(class_names=["a", "b", "c"], input_scale=0.75)
    hyperseg.save_model(model, tmp_path / "scaled.pt")
    seen = []
    forward = HyperSeg.forward

    def recording(self, x):
        if tuple(x.shape[-2:]) != tuple(self.size_multiple):  # not the probe that fusing BatchNorm runs
            seen.append(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(HyperSeg, "forward", recording)
    result = benchmark(str(tmp_path / "scaled.pt"), size=(96, 128), max_size=64, rounds=2, warmup=1,
                       candidates=[("eager", "fp32"), ("torch", "fp32")])
    assert [e["runtime"] for e in result["entries"]] == ["eager", "torch"] and result["max_size"] == 64
    # per candidate: setup 1 + warmup 1 (end to end) + warmup 1 (model only) + 2 + 2 timed rounds
    assert len(seen) == 2 * 7 and set(seen) == {(36, 48)}
    seen.clear()
    benchmark(str(tmp_path / "scaled.pt"), size=(96, 128), max_size=None, rounds=1, warmup=0,
              candidates=[("torch", "fp32")])
    assert set(seen) == {(72, 96)}  # no limit: 0.75 of the full size


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_max_size_zero_is_documented_as_no_limit(command):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    option = next(a for a in sub._actions if "--max-size" in a.option_strings)
    assert "0: no limit" in option.help and option.default == 2048


def test_bench_refuses_a_max_size_below_the_smallest_input(checkpoint, capsys):
    assert cli_main(["bench", checkpoint, "--size", "64x96", "--max-size", "16", "--runtime", "torch"]) == 2
    err = capsys.readouterr().err
    assert "--max-size 16" in err and len(err.strip().splitlines()) == 1
