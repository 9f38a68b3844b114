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
import os
import re
import shutil
import statistics
import sys
import tempfile
from functools import partial
from itertools import count
from pathlib import Path

VARIANTS = {
    "1x2": (1, 2, []),
    "1x2 no-overlap": (1, 2, ["--no-overlap"]),
    "2x1": (2, 1, []),
    "2x1 no-overlap": (2, 1, ["--no-overlap"]),
}
RATE = re.compile(r"([0-9.]+) inputs/s over")


def run_variant(name: str, frames: Path, out: Path, runtime: str, model: str) -> float:
    """Images/s that ``hyperseg predict`` reports for one variant, run as its own command into ``out``."""
    from hyperseg.bench import ChildFailed, run_command

    procs, threads, extra = VARIANTS[name]
    launcher = [sys.executable, "-m", "hyperseg"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", "-m", "hyperseg"]
    cmd = [*launcher, "predict", str(frames), "--out", str(out), "--model", model, "--runtime", runtime, *extra]
    done = run_command(cmd, label=f"variant {name}", env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    rate = RATE.search(done.stderr)
    if rate is None:
        raise ChildFailed(f"variant {name}: hyperseg predict reported no inputs/s", done.stderr)
    return float(rate.group(1))


def _copy_frames(images: Path, how_many: int, frames: Path) -> None:
    frames.mkdir()
    sources = sorted(p for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    for p in sources[:how_many]:
        shutil.copy(p, frames / p.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True, help="a folder of images (e.g. CamVid val)")
    parser.add_argument("--count", type=int, default=60, help="how many of its images to segment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--model", default="camvid")
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variant names")
    parser.add_argument("--json", type=Path, help="write the rows, machine, date and command here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args()
    if args.count < 2:  # predict reports its inputs/s for a folder of several inputs, not for one
        raise SystemExit(f"--count {args.count}: expected at least 2 images")
    names = [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--only: unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    from hyperseg.bench import run_script

    run_script(partial(measure, args, names))


def measure(args: argparse.Namespace, names: list[str]) -> None:
    """Every variant once per round, in alternating order, each its own ``hyperseg predict``; the table, the record."""
    import torch

    from hyperseg.bench import alternating, check_record_path, write_record

    check_record_path(args.json, args.overwrite)
    with tempfile.TemporaryDirectory(prefix="hyperseg-throughput-") as tmp:
        frames, numbers = Path(tmp) / "frames", count()
        _copy_frames(Path(args.images), args.count, frames)

        def fresh(name: str) -> float:  # a new output folder every run: no run finds another's outputs
            return run_variant(name, frames, Path(tmp) / f"out-{next(numbers)}", args.runtime, args.model)

        fresh(names[0])  # one untimed run converts the model (cached on disk), so no variant pays the export
        rates, walls = alternating({name: (lambda name=name: fresh(name)) for name in names}, args.rounds)
    base = statistics.median(rates[names[0]])
    rows = []
    print(f"| variant | images/s | vs {names[0]} | wall (s) |\n|---|---|---|---|")
    for name in names:
        rate, wall = statistics.median(rates[name]), statistics.median(walls[name])
        runs = [{"images_per_s": r, "wall_s": w} for r, w in zip(rates[name], walls[name])]
        rows.append({"variant": name, "images_per_s": rate, "wall_s": wall, "runs": runs})
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x | {wall:.1f} |")
    if args.json:
        write_record(args.json, {"torch": torch.__version__, "count": args.count, "runtime": args.runtime,
                                 "model": args.model, "rows": rows}, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
