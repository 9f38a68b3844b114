"""Training throughput of trainer variants, side by side: images/s of the real training loop.

    python benchmarks/train_step.py --config configs/camvid_cpu.yaml data.root=../shared/data/camvid \\
        --variant base= --variant nchw=train.channels_last=false --variant compile=train.compile=true \\
        --rounds 3 --steps 6 --warmup 3 [--json out.json]

Each variant is a name and a comma-separated list of ``section.key=value`` overrides on top of
the config (and the positional overrides). Every (round, variant) runs in its own process, so
that one variant's threads, compiled kernels or allocator state cannot touch another's; the order
of the variants alternates between rounds, so that drift of the machine hits them alike. A child
builds the run exactly as ``hyperseg train`` does (same loader, same step functions), discards
``--warmup`` steps (compilation, allocator growth) and times the next ``--steps`` optimizer steps,
data loading included. Run it on an idle machine: anything else running makes the numbers
worthless.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One variant, one process: print a JSON line with its per-step times."""
    from hyperseg.train.config import load_config
    from hyperseg.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        total = args.warmup + args.steps
        overrides = [*args.overrides, f"train.out_dir={tmp}/run", "train.tensorboard=false", "train.progress=false",
                     f"optim.max_iters={total}", "train.val_interval=0", "data.val_split=null",
                     f"train.ckpt_interval={total + 1}", *args.variant_overrides]
        trainer = Trainer(load_config(args.config, overrides))
        trainer.net.train()
        accum = trainer.cfg.optim.accum_steps
        times, losses, batch = [], [], 0
        start = time.perf_counter()
        for images, labels in trainer.loader:
            losses.append(trainer.forward_backward(images, labels, sync=len(losses) == accum - 1))
            batch += images.shape[0]
            if len(losses) < accum:
                continue
            trainer.optimizer_step()
            now = time.perf_counter()
            times.append(now - start)
            start, losses = now, []
        print(json.dumps({"step_s": times[args.warmup:], "images_per_step": batch // len(times)}))


def _run_child(args: argparse.Namespace, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", "--config", args.config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), *args.overrides]
    for item in overrides:
        cmd += ["--variant-override", item]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {overrides} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="section.key=value for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value (NAME= for none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant-override", dest="variant_overrides", action="append", default=[],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from hyperseg.bench.harness import machine_info

    variants = {}
    for spec in args.variant or ["base="]:
        name, _, rest = spec.partition("=")
        variants[name] = [item for item in rest.split(",") if item]
    per_step: dict[str, list[float]] = {name: [] for name in variants}
    images = {}
    names = list(variants)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else reversed(names):
            result = _run_child(args, variants[name])
            per_step[name] += result["step_s"]
            images[name] = result["images_per_step"]
            print(f"round {r + 1} {name}: {statistics.median(result['step_s']):.2f} s/step", file=sys.stderr)
    base = names[0]
    rows = []
    for name in names:
        median = statistics.median(per_step[name])
        rows.append({"variant": name, "overrides": variants[name], "median_step_s": median,
                     "images_per_s": images[name] / median, "steps_timed": len(per_step[name]),
                     "vs_first": median / statistics.median(per_step[base])})
    info = machine_info()
    print(f"# {info['cpu']}, {info['cores']} cores, torch {info['versions'].get('torch')}; "
          f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up, one process each")
    print("| variant | overrides | s/step | images/s | step time vs " + base + " |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {' '.join(row['overrides']) or '(config)'} | {row['median_step_s']:.2f} | "
              f"{row['images_per_s']:.2f} | {row['vs_first']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
