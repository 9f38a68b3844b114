"""The README's ablation table (the paper's Table 4 on our budget) from finished training runs.

    python experiments/ablation.py \
        "HyperSeg=runs/camvid_cpu" "w/o DPWConv=runs/ablation_static_4000" \
        "w/o positional encoding=runs/ablation_nope_4000" "SMP FPN=runs/ablation_smp_fpn"

For each run folder: the validation mIoU (and --classes IoU) its trainer logged at the schedule's
end (a run not there yet is refused, or with --allow-running timed and marked 'running'), the last
checkpoint's parameters and GMACs at 480x360 (hyperseg.profile), and its latency from a uint8
image to the label map in each runtime given, all models timed side by side in one process in
interleaved rounds whose order alternates. Run it on an idle machine. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from hyperseg.bench.side_by_side import time_predictors
from hyperseg.infer.predictor import Predictor
from hyperseg.train.config import load_config
from hyperseg.profile import profile
from hyperseg.runtime import resolve_model

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "hyperseg" / "assets" / "camvid_sample_1.png"


def last_validation(run: Path, allow_running: bool) -> Optional[dict]:
    """The validation the trainer logged at the schedule's end (the weights in last.pt); None for a
    run still going when ``allow_running`` (its latency does not depend on how far it trained)."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    vals = [json.loads(line) for line in lines if '"val"' in line]
    max_iters = load_config(run / "config.yaml").optim.max_iters
    if vals and vals[-1]["step"] == max_iters:
        return vals[-1]
    if allow_running:
        return None
    # a row must be the whole budget, not a run still going
    raise SystemExit(f"{run}: no validation at step {max_iters}, where the schedule ends (--allow-running to time it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="LABEL=RUN_FOLDER (uses RUN_FOLDER/last.pt and metrics.jsonl)")
    parser.add_argument("--runtimes", default="torch,openvino", help="comma-separated (default: torch,openvino)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds (default: 30)")
    parser.add_argument("--classes", default="pole,sign/symbol,pedestrian",
                        help="per-class IoU columns, comma-separated; empty for none (default: the thin classes)")
    parser.add_argument("--allow-running", action="store_true",
                        help="time runs that have not finished (their accuracy columns say 'running')")
    parser.add_argument("--size", default="360x480", help="HxW for GMACs and timing (default: 360x480)")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    image = np.asarray(Image.open(SAMPLE).convert("RGB").resize((w, h)))
    rows = [row.split("=", 1) for row in args.rows]
    table, predictors = {}, {}
    for label, run in rows:
        run = Path(run)
        model = resolve_model(run / "last.pt")
        table[label] = {"val": last_validation(run, args.allow_running), **profile(model, (h, w))}
        for name in args.runtimes.split(","):
            predictors[(label, name)] = Predictor(model, runtime=name)
    # all models side by side in interleaved rounds, after 5 warm-up calls each (compilation, first allocations)
    times = {key: t["end_to_end_ms"] for key, t in
             time_predictors(predictors, image, rounds=args.rounds, warmup=5, model_only=False).items()}
    names = args.runtimes.split(",")
    classes = [c for c in args.classes.split(",") if c]
    print(f"| model | params | GMACs ({w}x{h}) | " + " | ".join(f"{n} fp32 ms" for n in names)
          + " | val mIoU |" + "".join(f" {c} IoU |" for c in classes))
    print("|---|---|---|" + "---|" * (len(names) + 1 + len(classes)))
    for label, _ in rows:
        row, val = table[label], table[label]["val"]
        latency = " | ".join(f"{statistics.median(times[(label, n)]):.1f}" for n in names)
        if val is None:
            accuracy = " running |" * (1 + len(classes))
        else:
            accuracy = "".join(f" {v * 100:.2f} |" for v in [val["miou"], *(val["per_class_iou"][c] for c in classes)])
        print(f"| {label} | {row['params'] / 1e6:.2f} M | {row['gmacs']:.2f} | {latency} |" + accuracy)


if __name__ == "__main__":
    main()
