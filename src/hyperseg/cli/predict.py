"""`hyperseg predict`: label maps and overlays for images, folders, globs and videos."""
from __future__ import annotations

import argparse
import sys

from ..errors import HypersegError
from .options import (runtime_options, onnx_meta, whole_number, add_tta_arguments, tta_options,
                      add_runtime_arguments, add_model_arguments)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images, folders, globs or videos")
    p.add_argument("inputs", nargs="*", help="image, folder, glob or video (default: the bundled sample)")
    add_model_arguments(p, positional=False)
    p.add_argument("--out", default="hyperseg_out", help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--legend", action=argparse.BooleanOptionalAction, default=None,
                   help="colour legend beside each overlay (default: on for a single image, off for several)")
    p.add_argument("--max-size", type=int, default=2048,
                   help="segment images whose longer side is larger at this size, to bound memory (0: no limit)")
    add_tta_arguments(p)
    p.add_argument("--video-labels", action="store_true", help="for videos, also write per-frame label PNGs")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted job into the same --out: finished inputs are skipped, nothing is "
                        "overwritten, and the options must match the manifest in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every input and replace existing outputs in --out")
    p.add_argument("--batch-size", type=whole_number(1), default=1,
                   help="consecutive images of one size segmented per forward pass (pays on GPUs)")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                   help="decode and encode images in threads while the model runs (default: on)")
    add_runtime_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..process.distributed import init_process
    from ..infer.predictor import Predictor, check_alpha, collect_inputs
    from ..infer.jobs import check_output_folder, job_options, predict_job

    if args.max_size < 0:
        raise HypersegError(f"--max-size {args.max_size}: expected a number of pixels, or 0 for no limit")
    if args.resume and args.overwrite:
        raise HypersegError("--resume and --overwrite exclude each other: --resume keeps finished outputs, "
                            "--overwrite redoes them")
    check_alpha(args.alpha)  # before anything is created
    out = check_output_folder(args.out)
    if args.inputs:
        files = [f for source in args.inputs for f in collect_inputs(source)]
    else:
        from pathlib import Path

        files = sorted((Path(__file__).resolve().parents[1] / "assets").glob("*.png"))[:1]
        if not files:
            raise HypersegError("no input given and no bundled sample image found")
    proc = init_process(args.device)
    predictor = Predictor(args.model, options=runtime_options(args, device=str(proc.device)), meta=onnx_meta(args),
                          max_size=args.max_size or None, **tta_options(args))
    if proc.main:
        print(f"model: {predictor.runtime.statement()}", file=sys.stderr)
    options = job_options(predictor, args.model, alpha=args.alpha, legend=args.legend, video_labels=args.video_labels,
                          batch_size=args.batch_size, calibration=predictor.options.calibration)
    summary = predict_job(predictor, files, out, options=options, proc=proc, resume=args.resume,
                          overwrite=args.overwrite, alpha=args.alpha, legend=args.legend,
                          video_labels=args.video_labels, batch_size=args.batch_size, overlap=args.overlap,
                          progress=sys.stderr.isatty())
    if not proc.distributed:  # the files written, one per line, for scripts; several ranks' lines would interleave
        for path in summary.written:
            print(path)
    if len(files) == 1 and summary.failures:
        raise HypersegError(summary.failures[0][1])  # the one input given is bad: a plain input error
    if proc.main:
        for _, message in summary.failures:
            print(f"hyperseg predict: skipped {message}", file=sys.stderr)
        if summary.failures:
            print(f"hyperseg predict: {summary.failed} of {summary.inputs - summary.skipped} inputs failed",
                  file=sys.stderr)
        if proc.distributed or len(files) > 1 or summary.skipped:
            print(f"hyperseg predict: {summary.line()}", file=sys.stderr)
    if summary.failures:
        return 2 if summary.failed == summary.inputs - summary.skipped else 1  # 1: some results were written
    return 0
