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
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path


def child(args: argparse.Namespace) -> None:
    """One variant, one process: its per-step times as the child's result."""
    from hyperseg.bench import send_result
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
        send_result({"step_s": times[args.warmup:], "images_per_step": batch // len(times)})


def _run_child(args: argparse.Namespace, name: str, overrides: list[str]) -> dict:
    from hyperseg.bench import run_child

    cmd = [sys.executable, __file__, "--child", "--config", args.config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), *args.overrides]
    for item in overrides:
        cmd += ["--variant-override", item]
    return run_child(cmd, label=f"variant {name} ({' '.join(overrides) or 'the config'})")


def _progress(round_: int, name: str, result: dict) -> None:
    print(f"round {round_} {name}: {statistics.median(result['step_s']):.2f} s/step", file=sys.stderr, flush=True)


def _table(rows: list[dict], args: argparse.Namespace, info: dict) -> str:
    base = rows[0]["variant"]
    lines = [f"# {info['cpu']}, {info['cores']} cores, torch {info['versions'].get('torch')}; "
             f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up, one process each",
             "| variant | overrides | s/step | images/s | step time vs " + base + " |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {' '.join(row['overrides']) or '(config)'} | {row['median_step_s']:.2f} | "
                     f"{row['images_per_s']:.2f} | {row['vs_first']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("overrides", nargs="*", help="section.key=value for every variant")
    parser.add_argument("--variant", action="append", default=[], help="NAME=key=value,key=value (NAME= for none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the rows, machine, date and command here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant-override", dest="variant_overrides", action="append", default=[],
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    from hyperseg.bench import run_script

    run_script(partial(measure, args))


def measure(args: argparse.Namespace) -> None:
    """Every (round, variant) in a child process of its own, in alternating order; the table, and the record."""
    from hyperseg.bench import alternating, check_record_path, provenance, write_record

    check_record_path(args.json, args.overwrite)
    variants = {}
    for spec in args.variant or ["base="]:
        name, _, rest = spec.partition("=")
        variants[name] = [item for item in rest.split(",") if item]
    runs = {name: partial(_run_child, args, name, items) for name, items in variants.items()}
    results, _ = alternating(runs, args.rounds, progress=_progress)
    names = list(variants)
    per_step = {name: [t for result in results[name] for t in result["step_s"]] for name in names}
    rows = []
    for name in names:
        median = statistics.median(per_step[name])
        rows.append({"variant": name, "overrides": variants[name], "median_step_s": median,
                     "images_per_s": results[name][-1]["images_per_step"] / median, "steps_timed": len(per_step[name]),
                     "vs_first": median / statistics.median(per_step[names[0]])})
    record = {**provenance(), "rows": rows}
    print(_table(rows, args, record["machine"]))
    if args.json:
        write_record(args.json, record, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
