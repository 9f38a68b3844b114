"""--precision auto: the fastest precision within 0.3 mIoU of fp32, by CPU kind and the weights' evidence."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import hyperseg
from hyperseg.runtime import load_runtime
from hyperseg.runtime.precision import (MIN_AGREEMENT, MIOU_TOLERANCE, CPU_KINDS, cached_agreement, choose_precision,
                                        cpu_kind, label_agreement)

# a record's evidence: bf16 as accurate as fp32; int8 within the tolerance and the fastest on AVX2 only
EVIDENCE = {
    "precision_miou": {"fp32": 0.7500, "bf16": 0.7501, "int8": 0.7480},
    "latency_ms": {"bf16": {"openvino fp32": 50.0, "openvino bf16": 33.0, "openvino int8": 40.0},
                   "avx2": {"openvino fp32": 80.0, "openvino int8": 65.0}},
}


@pytest.mark.parametrize("cpu", [k for k in CPU_KINDS if k != "bf16"])
@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_a_cpu_without_native_bf16_never_gets_bf16(cpu, runtime):
    fastest_bf16 = {"precision_miou": {"fp32": 0.75, "bf16": 0.75},
                    "latency_ms": {cpu: {f"{runtime} fp32": 90.0, f"{runtime} bf16": 10.0}}}
    for meta in (EVIDENCE, fastest_bf16, {}):
        choice = choose_precision(meta, runtime, cpu=cpu, has_calibration=True, agreement=lambda p: 1.0)
        assert choice.precision != "bf16", (meta, choice)


def test_native_bf16_takes_bf16_when_the_record_measured_it_within_the_tolerance():
    choice = choose_precision(EVIDENCE, "openvino", cpu="bf16", has_calibration=True)
    assert choice.precision == "bf16" and "75.01 vs 75.00" in choice.reason


def test_int8_is_taken_only_where_measured_faster_and_within_the_tolerance():
    assert choose_precision(EVIDENCE, "openvino", cpu="avx2", has_calibration=True).precision == "int8"
    # no timing of int8 for this CPU kind: never a guess
    assert choose_precision(EVIDENCE, "openvino", cpu="vnni", has_calibration=True).precision == "fp32"
    # faster, but without images to calibrate on
    assert choose_precision(EVIDENCE, "openvino", cpu="avx2", has_calibration=False).precision == "fp32"


@pytest.mark.parametrize("cpu", list(CPU_KINDS))
def test_int8_outside_the_tolerance_is_never_the_default(cpu):
    fp32 = 0.75
    worse = {"precision_miou": {"fp32": fp32, "bf16": fp32 - MIOU_TOLERANCE - 1e-4, "int8": fp32 - MIOU_TOLERANCE - 1e-4},
             "latency_ms": {cpu: {"openvino fp32": 90.0, "openvino bf16": 20.0, "openvino int8": 10.0}}}
    choice = choose_precision(worse, "openvino", cpu=cpu, has_calibration=True)
    assert choice.precision == "fp32", choice
    at_the_edge = {**worse, "precision_miou": {"fp32": fp32, "int8": fp32 - MIOU_TOLERANCE}}
    assert choose_precision(at_the_edge, "openvino", cpu=cpu, has_calibration=True).precision == "int8"


def test_weights_without_evidence_take_bf16_only_if_their_labels_agree():
    asked = []

    def agreement(precision):
        asked.append(precision)
        return share

    share = MIN_AGREEMENT
    assert choose_precision({}, "openvino", cpu="bf16", agreement=agreement).precision == "bf16"
    share = MIN_AGREEMENT - 1e-4
    choice = choose_precision({}, "openvino", cpu="bf16", agreement=agreement)
    assert choice.precision == "fp32" and "99.49" in choice.reason
    assert asked == ["bf16", "bf16"]
    # int8 is never chosen without evidence, and no agreement is measured where bf16 cannot run
    assert choose_precision({}, "onnxruntime", cpu="bf16", has_calibration=True, agreement=agreement).precision == "fp32"
    assert choose_precision({}, "openvino", cpu="avx2", agreement=agreement).precision == "fp32"
    assert asked == ["bf16", "bf16"]


def test_cuda_is_fp32():
    assert choose_precision(EVIDENCE, "torch", device_type="cuda", cpu="bf16").precision == "fp32"


def test_the_choice_is_deterministic():
    for runtime in ("openvino", "onnxruntime", "torch"):
        for cpu in CPU_KINDS:
            first = choose_precision(EVIDENCE, runtime, cpu=cpu, has_calibration=True)
            assert all(choose_precision(EVIDENCE, runtime, cpu=cpu, has_calibration=True) == first for _ in range(3))


def test_cpu_kind_reads_the_flags(monkeypatch):
    import hyperseg.runtime.precision as precision

    for flags, kind in (({"avx2", "avx512f", "avx512_bf16"}, "bf16"), ({"avx2", "amx_bf16"}, "bf16"),
                        ({"avx2", "avx512f", "avx512_vnni"}, "vnni"), ({"avx2", "fma"}, "avx2")):
        monkeypatch.setattr(precision, "_cpu_flags", lambda flags=flags: flags)
        precision.cpu_kind.cache_clear()
        assert precision.cpu_kind() == kind
    precision.cpu_kind.cache_clear()


def _agreement_script(cache, marker):
    return "\n".join([
        "import pathlib",
        "from hyperseg.runtime.precision import cached_agreement",
        f"marker = pathlib.Path({str(marker)!r})",
        "def measure():",
        "    marker.write_text(marker.read_text() + 'x' if marker.exists() else 'x')",
        "    return 0.9975",
        f"print(cached_agreement(pathlib.Path({str(cache)!r}), {{'weights': 'abc', 'cpu': 'bf16'}}, measure))",
    ])


def test_the_agreement_cache_holds_across_processes_and_a_damaged_entry_is_measured_again(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "measured"
    for _ in range(2):  # two processes: the second reads what the first measured
        out = subprocess.run([sys.executable, "-c", _agreement_script(cache, marker)], capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == "0.9975"
    assert marker.read_text() == "x"
    (entry,) = cache.glob("agreement-*.json")
    for damage in ("{not json", json.dumps({"key": {"weights": "abc", "cpu": "bf16"}, "agreement": 7}),
                   json.dumps({"key": {"weights": "other", "cpu": "bf16"}, "agreement": 0.5}), ""):
        entry.write_text(damage)
        assert cached_agreement(cache, {"weights": "abc", "cpu": "bf16"}, lambda: 0.25) == 0.25
        assert json.loads(entry.read_text())["agreement"] == 0.25
        entry.write_text(json.dumps({"key": {"weights": "abc", "cpu": "bf16"}, "agreement": 0.9975}))
        assert cached_agreement(cache, {"weights": "abc", "cpu": "bf16"}, lambda: 0.0) == 0.9975


def test_label_agreement_counts_the_pixels_that_agree(tmp_path):
    from PIL import Image

    class Fixed:
        """A 'runtime' whose logits put class 1 where the mask is set (independent of the image)."""

        mean, std, meta = [0.5] * 3, [0.5] * 3, {}

        def __init__(self, mask):
            self.mask = torch.as_tensor(mask)

        def labels(self, x, size):
            assert tuple(x.shape[-2:]) == tuple(size) == self.mask.shape
            return self.mask.long().unsqueeze(0)

    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "a.png")
    a = np.zeros((4, 5), bool)
    b = a.copy()
    b[0, :3] = True  # 3 of 20 pixels differ
    assert label_agreement(Fixed(a), Fixed(b), tmp_path) == pytest.approx(17 / 20)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    model = hyperseg.create_model("hyperseg", num_classes=3, encoder_name="tf_efficientnet_lite0",
                                  weight_groups=[16, 16, 8, 8, 4]).eval()
    return hyperseg.save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def test_fp32_stays_exact_and_states_no_choice(tiny_checkpoint):
    exact = load_runtime(tiny_checkpoint, runtime="torch", precision="fp32", device="cpu")
    assert exact.precision == "fp32" and exact.precision_choice is None and "auto" not in exact.statement()
    x = torch.randn(1, 3, 64, 96)
    reference = load_runtime(tiny_checkpoint, runtime="eager", device="cpu")
    torch.testing.assert_close(exact(x), reference(x), rtol=1e-4, atol=1e-4)


def test_auto_is_the_default_and_says_what_it_took(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERSEG_CACHE", str(tmp_path / "cache"))
    made = load_runtime(tiny_checkpoint, runtime="torch", device="cpu")
    assert made.precision_choice is not None and made.precision == made.precision_choice.precision
    assert made.statement().count("precision auto:") == 1
    if cpu_kind() != "bf16":
        assert made.precision == "fp32"


def test_predict_prints_the_choice_in_one_line(tiny_checkpoint, tmp_path, capfd):
    from PIL import Image

    from hyperseg.cli import main as cli_main

    Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(tmp_path / "a.png")
    assert cli_main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model",
                     str(tiny_checkpoint), "--runtime", "torch"]) == 0
    lines = [line for line in capfd.readouterr().err.splitlines() if "precision auto:" in line]
    assert len(lines) == 1 and lines[0].startswith("model: torch "), lines
