"""The fast end of HyperSeg's design space, timed end to end on this machine, with real-time peers.

    python benchmarks/pareto.py [--runtimes torch:fp32,onnxruntime:fp32,openvino:fp32,openvino:int8]
        [--only camvid,lite0_4lv] [--rounds 20] [--json results/<machine>-<date>/pareto.json] [--calibration DIR]

Every candidate is built with random weights (``create_model`` init, the same seed everywhere),
so speed is all this measures. For each runtime and precision, one child process builds every
candidate, runs each once (conversion, compilation), then times them in interleaved rounds whose
order alternates: end to end (uint8 image in host memory -> label map, through ``Predictor``, as
``hyperseg bench`` does) and the model alone (normalised batch -> logits). Runtimes never share a
process: in one process they disturb each other's timings.

Candidates cover the encoder (EfficientNet-Lite0/1/2), the number of decoder levels (5 ends at
stride 2, 4 at stride 4, 3 at stride 8) and their widths, the weight groups, the size the network
sees the image at (``@0.75``: the image is resized by 0.75 and the logits resized back), and, with
the runtimes, int8. Peers are torchvision's LRASPP and DeepLabV3 on MobileNetV3-Large, DDRNet-23-slim
(``ddrnet.py``), and SMP's FPN and Linknet on the same Lite encoders. Prints a Markdown table (time relative to ``camvid``,
the shipped architecture, in its fastest runtime) and writes the JSON given with ``--json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hyperseg" / "assets" / "camvid_sample_1.png"
SCHEMA_VERSION = 1
NUM_CLASSES = 11


def _levels(n: int, channels=(64, 32, 16, 16, 16), groups=(64, 32, 32, 16, 8)) -> dict[str, Any]:
    """The shipped decoder cut to its ``n`` coarsest levels (output stride 2 ** (6 - n))."""
    return {"decoder_kernel_sizes": [1, 1, 1, 3, 3][:n], "decoder_channels": list(channels)[:n],
            "weight_groups": list(groups)[:n]}


def _hyperseg(encoder: str, levels: int = 5, scale: float = 1.0, padding: str = "image", **decoder: Any) -> dict[str, Any]:
    options = {"encoder_name": f"tf_efficientnet_{encoder}", "encoder_reductions": [0.25] * 5,
               "signal_slicing": "partition", "context_padding": padding, **_levels(levels, **decoder)}
    return {"family": "hyperseg", "options": options, "scale": scale}


# name -> how to build it; "camvid" is the shipped architecture and the reference for ratios.
# "lite0_4lv@0.8+fp" is the shipped fast architecture (camvid_fast), by name.
CANDIDATES: dict[str, dict[str, Any]] = {
    "camvid": {"family": "registered", "name": "hyperseg_lite2_camvid"},
    "lite1_5lv": _hyperseg("lite1"),
    "lite0_5lv": _hyperseg("lite0"),
    "lite2_4lv": _hyperseg("lite2", 4),
    "lite1_4lv": _hyperseg("lite1", 4),
    "lite0_4lv": _hyperseg("lite0", 4),
    "lite0_3lv": _hyperseg("lite0", 3),
    "lite0_4lv_narrow": _hyperseg("lite0", 4, channels=(32, 16, 16, 16)),
    "lite0_4lv_wide": _hyperseg("lite0", 4, channels=(128, 64, 32, 16)),
    "lite0_4lv_g2x": _hyperseg("lite0", 4, groups=(128, 64, 64, 32)),
    "lite0_4lv_g0.5x": _hyperseg("lite0", 4, groups=(32, 16, 16, 8)),
    # 0.8 and 0.75 both pad 360x480 to 320x384 (multiples of 64); 2/3 pads to 256x320
    "camvid@0.8": _hyperseg("lite2", scale=0.8),
    "lite1_5lv@0.8": _hyperseg("lite1", 5, 0.8),
    "lite1_4lv@0.8": _hyperseg("lite1", 4, 0.8),
    "lite0_5lv@0.8": _hyperseg("lite0", 5, 0.8),
    "lite0_4lv@0.8": _hyperseg("lite0", 4, 0.8),
    "lite0_4lv@0.75": _hyperseg("lite0", 4, 0.75),
    "lite0_4lv@0.667": _hyperseg("lite0", 4, 2 / 3),
    "lite0_3lv@0.8": _hyperseg("lite0", 3, 0.8),
    # "+fp": context_padding="features", the image padded to multiples of 32 only (288x384 stays
    # 288x384; 360x480 becomes 384x480 rather than 384x512), the head's input map to its multiple
    "camvid+fp": _hyperseg("lite2", padding="features"),
    "lite0_4lv@0.8+fp": {"family": "registered", "name": "hyperseg_lite0_fast_camvid", "scale": 0.8},  # camvid_fast
    "lite0_4lv@0.75+fp": _hyperseg("lite0", 4, 0.75, padding="features"),
    "lite0_4lv+fp": _hyperseg("lite0", 4, padding="features"),
    # more resolution for the thin classes at the fast scale: stride 2 output, or wider decoder levels
    "lite0_5lv@0.8+fp": _hyperseg("lite0", 5, 0.8, padding="features"),
    "lite0_4lv_wide@0.8+fp": _hyperseg("lite0", 4, 0.8, padding="features", channels=(128, 64, 32, 16)),
    "peer:lraspp_mobilenet_v3_large": {"family": "torchvision", "builder": "lraspp_mobilenet_v3_large"},
    "peer:ddrnet23_slim": {"family": "ddrnet"},
    "peer:deeplabv3_mobilenet_v3_large": {"family": "torchvision", "builder": "deeplabv3_mobilenet_v3_large"},
    "peer:smp_fpn_lite0": {"family": "smp", "arch": "FPN", "encoder": "tu-tf_efficientnet_lite0"},
    "peer:smp_linknet_lite0": {"family": "smp", "arch": "Linknet", "encoder": "tu-tf_efficientnet_lite0"},
    "peer:smp_fpn_lite2": {"family": "smp", "arch": "FPN", "encoder": "tu-tf_efficientnet_lite2"},
    "peer:smp_linknet_lite2": {"family": "smp", "arch": "Linknet", "encoder": "tu-tf_efficientnet_lite2"},
}


class TorchvisionPeer(nn.Module):
    """A torchvision segmentation model behind HyperSeg's interface: a tensor of logits out (not a
    dict), ``num_classes`` and ``meta``, so that every hyperseg runtime can run it."""

    def __init__(self, builder: str) -> None:
        super().__init__()
        from torchvision.models import segmentation

        self.net = getattr(segmentation, builder)(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                                  aux_loss=False)
        self.num_classes = NUM_CLASSES
        self.meta = {"architecture": builder, "class_names": [str(i) for i in range(NUM_CLASSES)],
                     "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]


def build(name: str) -> nn.Module:
    """The candidate's model, with random weights drawn from one fixed seed."""
    from hyperseg import create_model

    spec = CANDIDATES[name]
    torch.manual_seed(0)
    if spec["family"] == "torchvision":
        return TorchvisionPeer(spec["builder"]).eval()
    if spec["family"] == "ddrnet":
        from ddrnet import DDRNet23Slim  # benchmarks/ is the script's folder, first on sys.path

        model = DDRNet23Slim(NUM_CLASSES).eval()
        model.num_classes = NUM_CLASSES
        model.meta = {"architecture": "ddrnet23_slim", "class_names": [str(i) for i in range(NUM_CLASSES)],
                      "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        return model
    if spec["family"] == "registered":  # a shipped architecture, by its registered name
        return create_model(spec["name"]).eval()
    if spec["family"] == "smp":
        return create_model(f"smp:{spec['arch']}", num_classes=NUM_CLASSES, encoder_name=spec["encoder"]).eval()
    model = create_model("hyperseg", num_classes=NUM_CLASSES, **spec["options"]).eval()
    model.meta.update(mean=[0.5] * 3, std=[0.5] * 3)  # the Lite encoders' normalisation, as the shipped models
    return model


def child(args: argparse.Namespace) -> None:
    """One runtime and precision: every candidate, timed side by side; their rows as the child's result."""
    from hyperseg.bench import send_result
    from hyperseg.bench.side_by_side import time_predictors
    from hyperseg.errors import HypersegError
    from hyperseg.infer.predictor import Predictor
    from hyperseg.profile import profile
    from hyperseg.runtime import load_runtime
    from hyperseg.runtime.base import model_input_size

    runtime, precision = args.child.split(":")
    h, w = args.size
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h), Image.BILINEAR))
    predictors, skipped, info = {}, {}, {}
    for name in args.only:
        model = build(name)
        scale = CANDIDATES[name].get("scale", 1.0)
        if scale != 1:
            model.meta["input_scale"] = scale  # as a model trained at that scale carries it
        try:
            engine = load_runtime(model, runtime=runtime, precision=precision, calibration=args.calibration,
                                  calibration_count=args.calibration_count)
            predictors[name] = Predictor(engine, max_size=None)
            predictors[name](image)  # conversion and compilation happen here, untimed
        except HypersegError as exc:
            skipped[name] = str(exc).splitlines()[0]
            predictors.pop(name, None)
            continue
        seen = model_input_size(model, (h, w))
        cost = profile(model, seen)
        info[name] = {"params_m": cost["params"] / 1e6, "gmacs": cost["gmacs"], "seen_size": list(seen)}
    times = time_predictors(predictors, image, rounds=args.rounds, warmup=args.warmup)
    rows = []
    for name in args.only:
        row = {"candidate": name, "runtime": runtime, "precision": precision}
        if name in skipped:
            row["skipped"] = skipped[name]
        else:
            e2e, alone = times[name]["end_to_end_ms"], times[name]["model_ms"]
            row.update(info[name], end_to_end_ms=statistics.median(e2e), end_to_end_min_ms=min(e2e),
                       model_ms=statistics.median(alone))
        rows.append(row)
    send_result(rows)


def _spawn(args: argparse.Namespace, runtime: str) -> list[dict[str, Any]]:
    """The rows of one runtime and precision, timed in a child process of their own."""
    from hyperseg.bench import ChildFailed, run_child

    cmd = [sys.executable, __file__, "--child", runtime, "--only", ",".join(args.only), "--rounds", str(args.rounds),
           "--warmup", str(args.warmup), "--size", f"{args.size[0]}x{args.size[1]}",
           "--calibration-count", str(args.calibration_count)]
    if args.calibration:
        cmd += ["--calibration", args.calibration]
    try:
        return run_child(cmd, label=f"the {runtime} child process")
    except ChildFailed as exc:  # e.g. a runtime's compiler crashing on one candidate: the other runtimes still run
        print(exc, file=sys.stderr)
        name, precision = runtime.split(":")
        return [{"candidate": c, "runtime": name, "precision": precision, "skipped": str(exc)} for c in args.only]


def summarise(rows: list[dict[str, Any]], reference: str = "camvid") -> dict[str, dict[str, Any]]:
    """Per candidate: its fastest runtime and that time, and the ratio to the reference's fastest."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if "skipped" in row:
            continue
        name = row["candidate"]
        if name not in best or row["end_to_end_ms"] < best[name]["end_to_end_ms"]:
            best[name] = {"runtime": f"{row['runtime']} {row['precision']}", "end_to_end_ms": row["end_to_end_ms"],
                          "gmacs": row["gmacs"], "params_m": row["params_m"]}
    ref = best.get(reference, {}).get("end_to_end_ms")
    for entry in best.values():
        entry["vs_reference"] = entry["end_to_end_ms"] / ref if ref else None
    return best


def markdown(result: dict[str, Any]) -> str:
    runtimes = result["runtimes"]
    lines = [f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
             f"{result['size'][1]}x{result['size'][0]}, batch 1, uint8 image -> label map, median of "
             f"{result['rounds']} interleaved rounds, random weights; {result['date']}",
             "",
             "| candidate | kind | GMACs | params | " + " | ".join(f"{r.replace(':', ' ')} ms" for r in runtimes)
             + " | fastest | vs camvid |",
             "|---|---|---|---|" + "---|" * len(runtimes) + "---|---|"]
    by_key = {(r["candidate"], f"{r['runtime']}:{r['precision']}"): r for r in result["rows"]}
    for name in result["candidates"]:
        cells, gmacs, params = [], "", ""
        for rt in runtimes:
            row = by_key.get((name, rt), {})
            cells.append("skipped" if "skipped" in row else (f"{row['end_to_end_ms']:.1f}" if row else ""))
            if "gmacs" in row:
                gmacs, params = f"{row['gmacs']:.2f}", f"{row['params_m']:.2f} M"
        best = result["fastest"].get(name)
        kind = "peer" if name.startswith("peer:") else "hyperseg"
        tail = f"{best['runtime']} | {best['vs_reference']:.2f}x" if best and best["vs_reference"] else " | "
        lines.append(f"| {name} | {kind} | {gmacs} | {params} | " + " | ".join(cells) + f" | {tail} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="torch:fp32,onnxruntime:fp32,onnxruntime:int8,openvino:fp32,openvino:int8",
                        help="comma-separated runtime:precision pairs, each timed in its own process")
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated candidate names (default: all)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--size", default="360x480", help="HxW of the image (default: CamVid's 360x480)")
    parser.add_argument("--calibration", help="image folder for int8 (default: the bundled samples)")
    parser.add_argument("--calibration-count", type=int, default=3, help="calibration images (speed does not need many)")
    parser.add_argument("--json", type=Path, help="write the rows and the summary here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    args.only = [name for name in args.only.split(",") if name]
    unknown = [name for name in args.only if name not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--only: unknown candidate(s) {unknown}; known: {', '.join(CANDIDATES)}")
    if args.calibration is None:
        args.calibration = str(SAMPLE.parent)
    if args.child:
        return child(args)
    from hyperseg.bench import run_script

    run_script(partial(measure, args))


def measure(args: argparse.Namespace) -> None:
    """Every runtime in a child process of its own, one after another; the table, and the record."""
    from hyperseg.bench import check_record_path, provenance, write_record

    check_record_path(args.json, args.overwrite)
    runtimes = [r for r in args.runtimes.split(",") if r]
    rows = []
    for runtime in runtimes:
        print(f"timing {runtime} ...", file=sys.stderr, flush=True)
        rows += _spawn(args, runtime)
    result = {"schema": SCHEMA_VERSION, **provenance(), "size": list(args.size), "rounds": args.rounds,
              "runtimes": runtimes, "candidates": args.only, "specs": {name: CANDIDATES[name] for name in args.only},
              "rows": rows, "fastest": summarise(rows)}
    print(markdown(result))
    if args.json:
        write_record(args.json, result, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
