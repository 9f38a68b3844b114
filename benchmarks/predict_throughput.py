"""Throughput of ``hyperseg predict`` on a folder of frames: one process or torchrun, with and without overlap.

    python benchmarks/predict_throughput.py --images ../shared/data/camvid/val --count 60 --rounds 3 \\
        [--runtime auto] [--json out.json]

Variants (each round runs every variant once, in alternating order, each as its own command in a
fresh output folder, so every variant pays the same start-up and no cache of outputs helps):

- ``1x2``: one process with 2 threads (``OMP_NUM_THREADS=2``), decoding and encoding overlapped;
- ``1x2 no-overlap``: the same, one image after another (``--no-overlap``);
- ``2x1``: ``torchrun --nproc_per_node=2``, one thread each, overlapped;
- ``2x1 no-overlap``.

The figure is the images/s that predict itself reports (segmenting, decoding and writing, over all
ranks; model loading excluded), and the wall time of the whole command. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "1x2": (1, 2, []),
    "1x2 no-overlap": (1, 2, ["--no-overlap"]),
    "2x1": (2, 1, []),
    "2x1 no-overlap": (2, 1, ["--no-overlap"]),
}
RATE = re.compile(r"([0-9.]+) inputs/s over")


def run_variant(name: str, frames: Path, out: Path, runtime: str, model: str) -> dict:
    procs, threads, extra = VARIANTS[name]
    launcher = [sys.executable, "-m", "hyperseg"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "hyperseg"]
    cmd = [*launcher, "predict", str(frames), "--out", str(out), "--model", model, "--runtime", runtime, *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    rate = RATE.search(done.stderr)
    return {"images_per_s": float(rate.group(1)), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="a folder of images (e.g. CamVid val)")
    parser.add_argument("--count", type=int, default=60, help="how many of its images to segment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--model", default="camvid")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variant names")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="hyperseg-throughput-") as tmp:
        frames = Path(tmp) / "frames"
        frames.mkdir()
        sources = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        for p in sources[: args.count]:
            shutil.copy(p, frames / p.name)
        # one untimed run converts the model (cached on disk), so no variant pays the export
        run_variant(names[0], frames, Path(tmp) / "warm", args.runtime, args.model)
        results: dict[str, list[dict]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                out = Path(tmp) / f"out-{r}-{name.replace(' ', '_')}"
                results[name].append(run_variant(name, frames, out, args.runtime, args.model))
                shutil.rmtree(out)
    import torch

    from hyperseg.bench.harness import machine_info

    base = statistics.median(x["images_per_s"] for x in results[names[0]])
    rows = []
    print(f"| variant | images/s | vs {names[0]} | wall (s) |\n|---|---|---|---|")
    for name in names:
        rate = statistics.median(x["images_per_s"] for x in results[name])
        wall = statistics.median(x["wall_s"] for x in results[name])
        rows.append({"variant": name, "images_per_s": rate, "wall_s": wall, "runs": results[name]})
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x | {wall:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_info(), "torch": torch.__version__, "count": args.count,
                                         "runtime": args.runtime, "model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
