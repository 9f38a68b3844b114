"""`hyperseg bench`: latency of runtimes and precisions, side by side."""
from __future__ import annotations

import argparse
import json
import sys

from ..runtime.options import DEVICES, PRECISION_CHOICES, RUNTIMES
from .options import check_output, split_list, parse_pair, add_model_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency of runtimes and precisions, side by side (uint8 image -> labels)")
    add_model_arguments(p)
    p.add_argument("--size", default="360x480", help="input HxW")
    p.add_argument("--max-size", type=int, default=2048,
                   help="segment images whose longer side is larger at this size, end to end and model only alike, "
                        "as predict does (0: no limit)")
    p.add_argument("--runtime", default="eager,auto",
                   help=f"comma-separated: {', '.join(('eager',) + RUNTIMES + ('auto',))} (default: the eager "
                        "reference, then the default path)")
    p.add_argument("--precision", default="auto",
                   help=f"comma-separated: {', '.join(PRECISION_CHOICES)} (default auto: what predict would choose; "
                        "the eager reference is always fp32)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds; each runs every candidate once, order alternating")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each candidate first")
    p.add_argument("--image", default=None, help="image to time on (default: the bundled CamVid sample)")
    p.add_argument("--calibration", default=None, help="image folder for int8 conversion")
    p.add_argument("--device", default="auto", help=" | ".join(DEVICES))
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import itertools
    from pathlib import Path

    from ..hub.checkpoint import atomic_write_text
    from ..bench.harness import benchmark, format_report

    check_output(args.out, "--out", args.overwrite, inputs=[args.model, args.image])
    runtimes, precisions = split_list(args.runtime), split_list(args.precision)
    result = benchmark(args.model, size=parse_pair(args.size, "--size"),
                       candidates=list(itertools.product(runtimes, precisions)), rounds=args.rounds,
                       warmup=args.warmup, image=args.image, device=args.device, calibration=args.calibration,
                       progress=lambda msg: print(msg, file=sys.stderr), max_size=args.max_size or None)
    print(format_report(result))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2))
        print(f"wrote {args.out}")
