"""Options that several subcommands share: model, runtime, dataset and test-time augmentation
arguments, their parsing, and the check that an output file may be written."""
from __future__ import annotations

import argparse
from typing import Callable, Optional

from ..errors import HypersegError
from ..hub.checkpoint import check_output
from ..hub.weights import DEFAULT_MODEL
from ..runtime.options import DEVICES, PRECISION_CHOICES, RUNTIME_CHOICES, SHAPES, RuntimeOptions

__all__ = ["check_output", "runtime_options", "onnx_meta", "whole_number", "split_list", "parse_floats", "parse_pair",
           "add_tta_arguments", "tta_options", "add_runtime_arguments", "add_dataset_arguments", "dataset_from_args",
           "MODEL_HELP", "add_model_arguments", "resolve_model_argument"]



def runtime_options(args: argparse.Namespace, device: Optional[str] = None) -> RuntimeOptions:
    """The one :class:`RuntimeOptions` of an inference command, checked here, from its runtime
    arguments; ``device`` (the process's own, under torchrun) stands in for --device where given."""
    return RuntimeOptions(runtime=args.runtime, precision=args.precision, shapes=args.shapes,
                          device=args.device if device is None else device, calibration=args.calibration)

def onnx_meta(args: argparse.Namespace) -> Optional[dict]:
    """--mean, --std and --classes: what an .onnx file without our metadata lacks (None: none given)."""
    meta = {}
    if args.mean:
        meta["mean"] = parse_floats(args.mean, "--mean", 3)
    if args.std:
        meta["std"] = parse_floats(args.std, "--std", 3)
    if args.classes:
        meta["class_names"] = split_list(args.classes)
    return meta or None

def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (argparse names the option in its one-line error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is out of range; expected a whole number >= {minimum}")
        return value

    return parse

def split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]

def parse_floats(text: str, option: str, count: Optional[int] = None) -> list:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise HypersegError(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.5,0.5,0.5") from None
    if count is not None and len(values) != count:
        raise HypersegError(f"{option} {text!r}: expected {count} comma-separated numbers")
    return values

def parse_pair(text: Optional[str], option: str = "--window"):
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    from ..meta_schema import MAX_SIDE  # beyond it a size would allocate tens of gigabytes before failing

    if len(parts) not in (1, 2) or min(parts) < 1 or max(parts) > MAX_SIDE:
        raise HypersegError(f"{option} {text!r}: expected HxW in pixels, each side 1 to {MAX_SIDE}, e.g. 360x480")
    return parts * 2 if len(parts) == 1 else parts

def add_tta_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flip", action="store_true", help="test-time horizontal flip")
    p.add_argument("--scales", default=None, help="test-time scales, e.g. 0.75,1,1.25")
    p.add_argument("--window", default=None, help="sliding window HxW, e.g. 512x512")

def tta_options(args: argparse.Namespace) -> dict:
    """flip / scales / window as Predictor and evaluate take them."""
    scales = parse_floats(args.scales, "--scales") if args.scales else [1.0]
    return dict(flip=args.flip, scales=scales, window=parse_pair(args.window))

def add_runtime_arguments(p: argparse.ArgumentParser, shapes: str = RuntimeOptions.shapes) -> None:
    """The arguments :func:`runtime_options` reads, with the choices and defaults of :class:`RuntimeOptions`."""
    default = RuntimeOptions  # the class's field defaults
    p.add_argument("--runtime", default=default.runtime,
                   help=" | ".join(f"{c} (fastest installed)" if c == "auto" else c for c in RUNTIME_CHOICES))
    p.add_argument("--shapes", default=shapes, choices=SHAPES,
                   help="converting a PyTorch model for onnxruntime/OpenVINO: once per input size (static, "
                        "faster graphs) or once for every size (dynamic, nothing grows with new sizes); "
                        f"default {shapes}")
    p.add_argument("--precision", default=default.precision,
                   help=f"{' | '.join(PRECISION_CHOICES)} (default {default.precision}: the fastest precision on "
                        "this CPU whose val mIoU stays within 0.3 of fp32 for these weights, stated in one line; fp32 "
                        "is exact; an .onnx file runs at the precision it holds)")
    p.add_argument("--device", default=default.device, help=" | ".join(DEVICES))
    p.add_argument("--calibration", default=default.calibration, help="image folder to calibrate int8 conversion on")
    p.add_argument("--mean", default=None, help="input mean r,g,b in [0, 1] (.onnx files without metadata)")
    p.add_argument("--std", default=None, help="input std r,g,b (.onnx files without metadata)")
    p.add_argument("--classes", default=None, help="comma-separated class names (.onnx files without metadata)")

def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/camvid", help="dataset root folder (layouts: docs/your-data.md)")
    p.add_argument("--dataset", default="camvid", help="camvid | camvid32 | cityscapes | voc | ade20k | folder")
    p.add_argument("--classes-file", default=None, help="folder datasets: YAML with class names (+ palette)")
    p.add_argument("--drives", default=None,
                   help="comma-separated drives (video sequences) to keep, e.g. 0006R0 for an unseen-drive fold; "
                        "check-data lists the drives a split holds")
    p.add_argument("--drive-pattern", default=None,
                   help="regex whose first group in a file name is its drive (CamVid default: ^([^_]+)_)")

def dataset_from_args(args: argparse.Namespace, split: str):
    from ..data import build_dataset

    drives = split_list(args.drives) if args.drives is not None else None
    return build_dataset(args.dataset, args.data, split, classes_file=args.classes_file, drives=drives,
                         drive_pattern=args.drive_pattern)

MODEL_HELP = ("built-in or registered weights name, our checkpoint, the authors' .pth, or an .onnx file "
               "(default: camvid); an architecture name without weights is refused")

def add_model_arguments(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """Every command takes the model as --model; those without positional inputs also as MODEL."""
    p.add_argument("--model", "-m", dest="model_option", default=None, help=MODEL_HELP)
    if positional:
        p.add_argument("model", nargs="?", default=None, help="the same as --model")

def resolve_model_argument(args: argparse.Namespace) -> None:
    if not hasattr(args, "model_option"):
        return
    positional = getattr(args, "model", None)
    if positional and args.model_option and positional != args.model_option:
        raise HypersegError(f"two models given ({positional} and --model {args.model_option}); give one")
    args.model = args.model_option or positional or DEFAULT_MODEL
