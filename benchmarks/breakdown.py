"""Where the time goes: per-stage latency of a model on the fast torch path, batch 1.

    python benchmarks/breakdown.py [--model camvid] [--size 360x480] [--runs 20] [--eager]

Times each stage (backbone, context head, weight mappers, every decoder level, the decoder's
upsampling/concatenation, the rest of the forward pass) with forward hooks over the same
passes, plus pre-processing (uint8 -> normalised) and post-processing (logits -> labels) both
as ``argmax(1)`` and as ``max(1).indices``. Prints medians and shares of the forward pass.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np


def stage_modules(model):
    stages = {"backbone": model.backbone, "context head": model.context_head, "weight mappers": model.weight_mapper}
    for i, level in enumerate(model.decoder.levels):
        stages[f"decoder level {i} ({type(level).__name__.replace('MetaBlock', '')})"] = level
    return {k: v for k, v in stages.items() if v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid")
    parser.add_argument("--size", default="360x480")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--eager", action="store_true", help="time the unprepared model instead")
    args = parser.parse_args()
    from hyperseg.bench import machine_info
    from hyperseg.infer.predictor import Predictor

    h, w = (int(v) for v in args.size.split("x"))
    predictor = Predictor(args.model, runtime="eager" if args.eager else "torch")
    model = predictor.runtime.model
    times: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    for name, module in {**stage_modules(model), "decoder (all)": model.decoder}.items():
        module.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, time.perf_counter()))
        module.register_forward_hook(lambda m, a, o, name=name: times[name].append(time.perf_counter() - starts[name]))
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for run in range(args.runs + 3):
        t0 = time.perf_counter()
        x = predictor.preprocess(img)
        t1 = time.perf_counter()
        logits = predictor.runtime(x)
        t2 = time.perf_counter()
        logits.argmax(1)
        t3 = time.perf_counter()
        logits.max(1).indices
        t4 = time.perf_counter()
        times["pre-processing"].append(t1 - t0)
        times["forward"].append(t2 - t1)
        times["argmax(1)"].append(t3 - t2)
        times["max(1).indices"].append(t4 - t3)
    med = {k: statistics.median(v[-args.runs:]) * 1e3 for k, v in times.items()}  # the first 3 runs warm up
    levels = [k for k in med if k.startswith("decoder level")]
    med["decoder upsample + concat + coords"] = med.pop("decoder (all)") - sum(med[k] for k in levels)
    med["rest (input padding, final upsample, crop)"] = med["forward"] - sum(
        med[k] for k in med if k not in ("forward", "pre-processing", "argmax(1)", "max(1).indices"))
    m = machine_info()
    print(f"machine: {m['cpu']}, {m['torch_threads']} threads, torch {m['versions'].get('torch')}")
    print(f"{args.model} at {w}x{h}, {'eager' if args.eager else 'torch fast path'}, median of {args.runs}")
    print("| stage | ms | share of forward |\n|---|---|---|")
    for k, v in med.items():
        if k != "forward":
            share = f"{v / med['forward'] * 100:.1f} %" if k not in ("pre-processing", "argmax(1)", "max(1).indices") else ""
            print(f"| {k} | {v:.2f} | {share} |")
    print(f"| forward pass | {med['forward']:.2f} | 100 % |")


if __name__ == "__main__":
    main()
