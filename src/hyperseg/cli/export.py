"""`hyperseg export`: a model as an ONNX file (float32, or int8 calibrated on images)."""
from __future__ import annotations

import argparse
import sys

from ..errors import HypersegError
from ..runtime.options import STORED_PRECISIONS
from .options import check_output, parse_pair, add_model_arguments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (float32, or int8 calibrated on images)")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--size", default=None,
                   help="the network's input HxW, e.g. 360x480 (default: the size the network sees images of the "
                        "model's input size at, after the weights' input scale: 288x384 for camvid_fast)")
    p.add_argument("--dynamic", action="store_true",
                   help="accept any batch and size (height and width padded to the model's multiple of 64)")
    p.add_argument("--precision", default="fp32", choices=STORED_PRECISIONS,
                   help="the precision the file stores, weights and activations: fp32, or int8 calibrated on "
                        "--calibration images. predict, eval and serve run the file at it (their --precision auto); "
                        "bf16 is never stored: an fp32 file runs at bf16 in OpenVINO with --precision bf16")
    p.add_argument("--calibration", default=None, help="folder of images for int8 calibration")
    p.add_argument("--calibration-count", type=int, default=30, help="how many images to calibrate on")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version, 18 or newer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import tempfile
    import time
    from pathlib import Path

    from ..runtime import export_onnx, quantize_onnx, read_onnx_meta, resolve_model
    from ..runtime.quantize import calibration_files

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise HypersegError(f"--out {out}: expected a file name ending in .onnx")
    check_output(out, "--out", args.overwrite, inputs=[args.model])
    if args.precision == "int8" and not args.calibration:
        raise HypersegError("--precision int8 needs --calibration DIR: a folder of images to calibrate on")
    if args.precision != "int8" and args.calibration:
        raise HypersegError("--calibration is only used with --precision int8")
    if args.calibration:
        calibration_files(args.calibration, args.calibration_count)  # a bad folder fails before the export
    if args.dynamic and args.size:
        raise HypersegError("--size and --dynamic exclude each other: a --dynamic file takes any size")
    from ..hub.resolve import is_untrained_architecture

    if is_untrained_architecture(args.model):  # a file to test a deployment or time it with, not to segment with
        print(f"hyperseg export: warning: {args.model} is an architecture without weights, so the file holds "
              f"random weights; export a checkpoint or built-in weights to segment with it", file=sys.stderr)
    model = resolve_model(args.model, allow_untrained=True)
    size = parse_pair(args.size, "--size")
    start = time.perf_counter()
    options = dict(size=size, dynamic=args.dynamic, opset=args.opset, source=args.model)
    if args.precision == "int8":
        with tempfile.TemporaryDirectory(prefix="hyperseg-export-") as tmp:
            fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", **options)
            quantize_onnx(fp32, out, args.calibration, count=args.calibration_count)
    else:
        export_onnx(model, out, **options)
    meta = read_onnx_meta(out)
    if meta.get("input_size"):
        shape = "1x3x{}x{}".format(*meta["input_size"])
    else:
        shape = "Nx3xHxW, H and W multiples of {} and {}".format(*meta["size_multiple"])
    print(f"wrote {out} ({meta['precision']}, input {shape}, {meta['num_classes']} classes, "
          f"opset {args.opset}, {out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
