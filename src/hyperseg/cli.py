"""The ``hyperseg`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from .errors import HypersegError, OutputExistsError
from .hub.weights import DEFAULT_MODEL

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> None:
    from .model import list_models, model_cfg
    from .hub.weights import get_weights, list_weights

    for name in list_models(args.pattern):
        cfg = model_cfg(name)
        extra = f"  ({cfg['dataset']}, {len(cfg['class_names'])} classes, {cfg['input_size'][1]}x{cfg['input_size'][0]})" if cfg else ""
        print(name + extra)
    from .runtime.precision import CPU_KINDS

    machines: dict = {}
    for name in list_weights(args.pattern):  # records only: no weights file is opened
        weights = get_weights(name)
        metrics = weights.metrics
        details = [f"{'built-in' if weights.builtin else 'registered'} weights of {weights.architecture}",
                   f"{len(weights.class_names)} classes"]
        if weights.input_scale is not None:
            details.append(f"images seen at {weights.input_scale:g}x their size")
        if "val_miou" in metrics:
            fit = " (trained on it: a fit, not an estimate)" if metrics.get("val_in_training") else ""
            details.append(f"val mIoU {metrics['val_miou'] * 100:.2f} on {metrics.get('val_split', '?')}{fit}")
        default = _default_latency(metrics)
        if default:
            h, w = metrics.get("latency_input", weights.input_size or ("?", "?"))
            ms, path, kind = default
            details.append(f"{ms:.1f} ms at {w}x{h} ({path}, the default path on a CPU with {CPU_KINDS[kind]})")
            machines.update({kind: metrics.get("machines", {}).get(kind, "?")})
        print(f"{name}  ({', '.join(details)})")
    for kind, machine in machines.items():  # each machine named once, after the models
        print(f"latency on a CPU with {CPU_KINDS[kind]} measured on: {machine}")


def _default_latency(metrics: dict) -> Optional[tuple]:
    """(ms, "runtime precision", CPU kind) of the path ``--precision auto`` takes, from a record's
    latency table: for this CPU's kind where the record measured it, else for the first kind it did."""
    from .runtime import installed_runtimes
    from .runtime.precision import choose_precision, cpu_kind

    table = metrics.get("latency_ms") or {}
    if not table or not all(isinstance(v, dict) for v in table.values()):
        return None
    kind = cpu_kind() if cpu_kind() in table else next(iter(table))
    runtime = installed_runtimes()[0]
    precision = choose_precision(metrics, runtime, cpu=kind, has_calibration=True).precision
    ms = table[kind].get(f"{runtime} {precision}")
    return None if ms is None else (ms, f"{runtime} {precision}", kind)


def _check_output(path, option: str, overwrite: bool, inputs: Sequence = ()) -> None:
    """Refuse an output that is one of the inputs, or an existing file without --overwrite."""
    from pathlib import Path

    if path is None:
        return
    from .hub.checkpoint import refuse_replacing_inputs

    path = Path(path)
    refuse_replacing_inputs([path], inputs, option)
    if path.is_dir():
        raise HypersegError(f"{option} {path} is a folder; expected a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{option} {path} already exists; choose another name or pass --overwrite")


def _cmd_convert(args: argparse.Namespace) -> None:
    from .hub.checkpoint import save_model
    from .hub.official import from_official

    _check_output(args.output, "output", args.overwrite, inputs=[args.checkpoint])
    model = from_official(args.checkpoint, config=args.config)
    path = save_model(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} ({model.meta.get('architecture', 'custom')}, {n:,} parameters) -> {path}")


def _cmd_check_data(args: argparse.Namespace) -> int:
    from .data import check_drive_pattern, drive_counts, split_names
    from .data.check import check_dataset

    splits = _split_list(args.splits)
    if not splits:  # "ok" must never stand for nothing checked
        raise HypersegError(f"--splits={args.splits!r} names no split; expected comma-separated split names, "
                            f"e.g. train,val")
    for split in splits:  # every value refused before the first report
        split_names(split, "--splits")
    check_drive_pattern(args.drive_pattern, "--drive-pattern")
    problems = 0
    for split in splits:
        dataset = _dataset_from_args(args, split)
        report = check_dataset(dataset, limit=args.limit)
        print(report.summary(dataset.classes))
        if args.drive_pattern or dataset.drive_pattern:
            drives = drive_counts(dataset, args.drive_pattern)
            print("  drives: " + ", ".join(f"{d or '(no match)'} ({n})" for d, n in sorted(drives.items(),
                                                                                         key=lambda kv: str(kv[0]))))
        for message in report.errors:
            print(f"  bad: {message}", file=sys.stderr)
        problems += len(report.errors)
    if problems:
        print(f"hyperseg check-data: {problems} bad pairs; fix or remove them before training", file=sys.stderr)
        return 2
    print("ok: every pair reads, sizes match, labels are in range")
    return 0


def _cmd_profile(args: argparse.Namespace) -> None:
    from .profile import profile
    from .runtime import resolve_model

    model = resolve_model(args.model, allow_untrained=True)  # parameters and MACs do not depend on the weights
    result = profile(model, (args.height, args.width))
    print(json.dumps({"model": args.model, "input": [args.height, args.width], **result}))


def _cmd_serve(args: argparse.Namespace) -> None:
    from .serve import run_server

    run_server(args.model, host=args.host, port=args.port, workers=args.workers, max_queue=args.max_queue,
               max_upload_mb=args.max_upload_mb, max_megapixels=args.max_megapixels,
               upload_timeout_s=args.upload_timeout, **_runtime_options(args))


def _cmd_train(args: argparse.Namespace) -> None:
    from .train.config import load_config
    from .train.trainer import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result["rank"] != 0:  # under torchrun the summary is rank 0's to print
        return
    val = result["val"] or {}
    best_miou = result["best_miou"] if result["best_miou"] >= 0 else None  # a run without validation has none
    print(json.dumps({"step": result["step"], "best_miou": best_miou, "last_miou": val.get("miou"),
                      "best": result["best"], "last": result["last"]}))


def _runtime_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``load_runtime`` that every inference command shares."""
    meta = {}
    if args.mean:
        meta["mean"] = _parse_floats(args.mean, "--mean", 3)
    if args.std:
        meta["std"] = _parse_floats(args.std, "--std", 3)
    if args.classes:
        meta["class_names"] = _split_list(args.classes)
    return dict(runtime=args.runtime, precision=args.precision, device=args.device, calibration=args.calibration,
                meta=meta or None, shapes=args.shapes)


def _whole_number(minimum: int) -> Callable[[str], int]:
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


def _split_list(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_floats(text: str, option: str, count: Optional[int] = None) -> list:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise HypersegError(f"{option} {text!r}: expected comma-separated numbers, e.g. 0.5,0.5,0.5") from None
    if count is not None and len(values) != count:
        raise HypersegError(f"{option} {text!r}: expected {count} comma-separated numbers")
    return values


def _parse_pair(text: Optional[str], option: str = "--window"):
    if text is None:
        return None
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    from .meta_schema import MAX_SIDE  # beyond it a size would allocate tens of gigabytes before failing

    if len(parts) not in (1, 2) or min(parts) < 1 or max(parts) > MAX_SIDE:
        raise HypersegError(f"{option} {text!r}: expected HxW in pixels, each side 1 to {MAX_SIDE}, e.g. 360x480")
    return parts * 2 if len(parts) == 1 else parts


def _in_percent(metrics: dict) -> dict:
    """The metrics as the console shows them: percentages (IoU and accuracies), marked as such."""
    def pct(v):
        return None if v is None else round(v * 100, 6)

    fractions = ("miou", "miou_all_classes", "pixel_acc", "mean_class_acc")
    out = {k: pct(v) if k in fractions else v for k, v in metrics.items() if k != "per_class_iou"}
    out["per_class_iou"] = {name: pct(v) for name, v in metrics["per_class_iou"].items()}
    return {"unit": "percent", **out}


def _cmd_eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data import check_drive_pattern, split_names
    from .train.evaluate import evaluate
    from .runtime import load_runtime

    split_names(args.split, "--split")
    check_drive_pattern(args.drive_pattern, "--drive-pattern")
    _check_output(args.out, "--out", args.overwrite, inputs=[args.model])
    _check_output(args.confusion_image, "--confusion-image", args.overwrite, inputs=[args.model])
    dataset = _dataset_from_args(args, args.split)
    from .hub.checkpoint import refuse_replacing_inputs

    files = [p for pair in dataset.samples for p in pair if p is not None]
    for option, target in (("--out", args.out), ("--confusion-image", args.confusion_image)):
        if target:  # no output may be one of the dataset's files, with or without --overwrite
            refuse_replacing_inputs([Path(target)], files, option)
    if args.confusion_image:  # before the evaluation, not after it
        from .errors import require

        require("matplotlib", "viz", "--confusion-image")
    from .process.distributed import init_process

    proc = init_process(args.device)  # under torchrun: each rank scores its share, the confusion matrices are summed
    model = load_runtime(args.model, **{**_runtime_options(args), "device": str(proc.device)})
    if proc.main:
        print(f"model: {model.statement()}" + (f", {proc.world} processes" if proc.distributed else ""),
              file=sys.stderr)
    metrics = evaluate(model, dataset, batch_size=args.batch_size, workers=args.workers,
                       progress=sys.stderr.isatty() and proc.main, **_tta_options(args))
    if not proc.main:  # every rank holds the same metrics; one reports them
        return
    matrix = metrics.pop("confusion_matrix")
    width = max(len(n) for n in metrics["per_class_iou"])
    for name, iou in metrics["per_class_iou"].items():
        print(f"  {name:<{width}}  {'  n/a' if iou is None else f'{iou * 100:5.2f}'}")
    print(f"mIoU {metrics['miou'] * 100:.2f} (mean over all classes, authors' convention: "
          f"{metrics['miou_all_classes'] * 100:.2f})  pixel acc {metrics['pixel_acc'] * 100:.2f}  "
          f"mean class acc {metrics['mean_class_acc'] * 100:.2f}")
    if args.out:
        from .hub.checkpoint import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({**_in_percent(metrics), "confusion_matrix": matrix,
                                                      "model": str(args.model), "split": args.split}, indent=2))
        print(f"wrote {args.out}")
    if args.confusion_image:
        from .train.plots import save_confusion_image

        save_confusion_image(matrix, list(metrics["per_class_iou"]), args.confusion_image)
        print(f"wrote {args.confusion_image}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .process.distributed import init_process
    from .infer.predictor import Predictor, check_alpha, collect_inputs
    from .infer.jobs import check_output_folder, job_options, predict_job

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

        files = sorted((Path(__file__).resolve().parent / "assets").glob("*.png"))[:1]
        if not files:
            raise HypersegError("no input given and no bundled sample image found")
    proc = init_process(args.device)
    predictor = Predictor(args.model, max_size=args.max_size or None, **_tta_options(args),
                          **{**_runtime_options(args), "device": str(proc.device)})
    if proc.main:
        print(f"model: {predictor.runtime.statement()}", file=sys.stderr)
    options = job_options(predictor, args.model, alpha=args.alpha, legend=args.legend, video_labels=args.video_labels,
                          batch_size=args.batch_size, calibration=args.calibration)
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


def _cmd_export(args: argparse.Namespace) -> None:
    import tempfile
    import time
    from pathlib import Path

    from .runtime import export_onnx, quantize_onnx, read_onnx_meta, resolve_model
    from .runtime.quantize import calibration_files

    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise HypersegError(f"--out {out}: expected a file name ending in .onnx")
    _check_output(out, "--out", args.overwrite, inputs=[args.model])
    if args.precision == "int8" and not args.calibration:
        raise HypersegError("--precision int8 needs --calibration DIR: a folder of images to calibrate on")
    if args.precision != "int8" and args.calibration:
        raise HypersegError("--calibration is only used with --precision int8")
    if args.calibration:
        calibration_files(args.calibration, args.calibration_count)  # a bad folder fails before the export
    if args.dynamic and args.size:
        raise HypersegError("--size and --dynamic exclude each other: a --dynamic file takes any size")
    from .hub.resolve import is_untrained_architecture

    if is_untrained_architecture(args.model):  # a file to test a deployment or time it with, not to segment with
        print(f"hyperseg export: warning: {args.model} is an architecture without weights, so the file holds "
              f"random weights; export a checkpoint or built-in weights to segment with it", file=sys.stderr)
    model = resolve_model(args.model, allow_untrained=True)
    size = _parse_pair(args.size, "--size")
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


def _cmd_bench(args: argparse.Namespace) -> None:
    import itertools
    from pathlib import Path

    from .hub.checkpoint import atomic_write_text
    from .bench.harness import benchmark, format_report

    _check_output(args.out, "--out", args.overwrite, inputs=[args.model, args.image])
    runtimes, precisions = _split_list(args.runtime), _split_list(args.precision)
    result = benchmark(args.model, size=_parse_pair(args.size, "--size"),
                       candidates=list(itertools.product(runtimes, precisions)), rounds=args.rounds,
                       warmup=args.warmup, image=args.image, device=args.device, calibration=args.calibration,
                       progress=lambda msg: print(msg, file=sys.stderr), max_size=args.max_size or None)
    print(format_report(result))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(result, indent=2))
        print(f"wrote {args.out}")


def _add_tta_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flip", action="store_true", help="test-time horizontal flip")
    p.add_argument("--scales", default=None, help="test-time scales, e.g. 0.75,1,1.25")
    p.add_argument("--window", default=None, help="sliding window HxW, e.g. 512x512")


def _tta_options(args: argparse.Namespace) -> dict:
    """flip / scales / window as Predictor and evaluate take them."""
    scales = _parse_floats(args.scales, "--scales") if args.scales else [1.0]
    return dict(flip=args.flip, scales=scales, window=_parse_pair(args.window))


def _add_runtime_arguments(p: argparse.ArgumentParser, shapes: str = "static") -> None:
    p.add_argument("--runtime", default="auto", help="auto (fastest installed) | torch | onnxruntime | openvino | eager")
    p.add_argument("--shapes", default=shapes, choices=["static", "dynamic"],
                   help="converting a PyTorch model for onnxruntime/OpenVINO: once per input size (static, "
                        "faster graphs) or once for every size (dynamic, nothing grows with new sizes); "
                        f"default {shapes}")
    p.add_argument("--precision", default="auto",
                   help="auto | fp32 | bf16 | int8 (default auto: the fastest precision on this CPU whose val mIoU "
                        "stays within 0.3 of fp32 for these weights, stated in one line; fp32 is exact; an .onnx "
                        "file runs at the precision it holds)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--calibration", default=None, help="image folder to calibrate int8 conversion on")
    p.add_argument("--mean", default=None, help="input mean r,g,b in [0, 1] (.onnx files without metadata)")
    p.add_argument("--std", default=None, help="input std r,g,b (.onnx files without metadata)")
    p.add_argument("--classes", default=None, help="comma-separated class names (.onnx files without metadata)")


def _add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/camvid", help="dataset root folder (layouts: docs/your-data.md)")
    p.add_argument("--dataset", default="camvid", help="camvid | camvid32 | cityscapes | voc | ade20k | folder")
    p.add_argument("--classes-file", default=None, help="folder datasets: YAML with class names (+ palette)")
    p.add_argument("--drives", default=None,
                   help="comma-separated drives (video sequences) to keep, e.g. 0006R0 for an unseen-drive fold; "
                        "check-data lists the drives a split holds")
    p.add_argument("--drive-pattern", default=None,
                   help="regex whose first group in a file name is its drive (CamVid default: ^([^_]+)_)")


def _dataset_from_args(args: argparse.Namespace, split: str):
    from .data import build_dataset

    drives = _split_list(args.drives) if args.drives is not None else None
    return build_dataset(args.dataset, args.data, split, classes_file=args.classes_file, drives=drives,
                         drive_pattern=args.drive_pattern)


_MODEL_HELP = ("built-in or registered weights name, our checkpoint, the authors' .pth, or an .onnx file "
               "(default: camvid); an architecture name without weights is refused")


def _add_model_arguments(p: argparse.ArgumentParser, positional: bool = True) -> None:
    """Every command takes the model as --model; those without positional inputs also as MODEL."""
    p.add_argument("--model", "-m", dest="model_option", default=None, help=_MODEL_HELP)
    if positional:
        p.add_argument("model", nargs="?", default=None, help="the same as --model")


def _resolve_model_argument(args: argparse.Namespace) -> None:
    if not hasattr(args, "model_option"):
        return
    positional = getattr(args, "model", None)
    if positional and args.model_option and positional != args.model_option:
        raise HypersegError(f"two models given ({positional} and --model {args.model_option}); give one")
    args.model = args.model_option or positional or DEFAULT_MODEL


def _version() -> str:
    from . import __version__

    return __version__


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg", description="HyperSeg semantic segmentation.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    parser.add_argument("--version", action="version", version=f"hyperseg {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'hyperseg_*camvid'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("convert", help="convert an authors' checkpoint (.pth) into a hyperseg checkpoint")
    p.add_argument("checkpoint", help="the authors' .pth file")
    p.add_argument("output", help="where to write the hyperseg checkpoint (.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the input)")
    p.add_argument("--config", default=None, help="paper model name, for checkpoints without an 'arch' entry")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("train", help="train a model (YAML config + section.key=value overrides)")
    p.add_argument("--config", default=None, help="YAML recipe, e.g. configs/camvid_cpu.yaml")
    p.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    p.add_argument("overrides", nargs="*", help="e.g. optim.max_iters=200 data.root=data/camvid")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (mIoU, per-class IoU)")
    _add_model_arguments(p)
    _add_dataset_arguments(p)
    p.add_argument("--split", default="val", help="split to evaluate (train, val, test, or a list name for voc)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here, in percent (\"unit\": \"percent\")")
    p.add_argument("--confusion-image", default=None, help="save the confusion matrix as a PNG")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out / --confusion-image files")
    _add_tta_arguments(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images only)")
    p.add_argument("--workers", type=_whole_number(0), default=2,
                   help="DataLoader worker processes reading images (0: in process)")
    _add_runtime_arguments(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment images, folders, globs or videos")
    p.add_argument("inputs", nargs="*", help="image, folder, glob or video (default: the bundled sample)")
    _add_model_arguments(p, positional=False)
    p.add_argument("--out", default="hyperseg_out", help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--legend", action=argparse.BooleanOptionalAction, default=None,
                   help="colour legend beside each overlay (default: on for a single image, off for several)")
    p.add_argument("--max-size", type=int, default=2048,
                   help="segment images whose longer side is larger at this size, to bound memory (0: no limit)")
    _add_tta_arguments(p)
    p.add_argument("--video-labels", action="store_true", help="for videos, also write per-frame label PNGs")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted job into the same --out: finished inputs are skipped, nothing is "
                        "overwritten, and the options must match the manifest in --out")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every input and replace existing outputs in --out")
    p.add_argument("--batch-size", type=_whole_number(1), default=1,
                   help="consecutive images of one size segmented per forward pass (pays on GPUs)")
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, default=True,
                   help="decode and encode images in threads while the model runs (default: on)")
    _add_runtime_arguments(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export a model to ONNX (float32, or int8 calibrated on images)")
    _add_model_arguments(p)
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--size", default=None,
                   help="the network's input HxW, e.g. 360x480 (default: the size the network sees images of the "
                        "model's input size at, after the weights' input scale: 288x384 for camvid_fast)")
    p.add_argument("--dynamic", action="store_true",
                   help="accept any batch and size (height and width padded to the model's multiple of 64)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"], help="weights and activations of the file")
    p.add_argument("--calibration", default=None, help="folder of images for int8 calibration")
    p.add_argument("--calibration-count", type=int, default=30, help="how many images to calibrate on")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset version, 18 or newer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="latency of runtimes and precisions, side by side (uint8 image -> labels)")
    _add_model_arguments(p)
    p.add_argument("--size", default="360x480", help="input HxW")
    p.add_argument("--max-size", type=int, default=2048,
                   help="segment images whose longer side is larger at this size, end to end and model only alike, "
                        "as predict does (0: no limit)")
    p.add_argument("--runtime", default="eager,auto",
                   help="comma-separated: eager, torch, onnxruntime, openvino, auto (default: the eager reference, "
                        "then the default path)")
    p.add_argument("--precision", default="auto",
                   help="comma-separated: auto, fp32, bf16, int8 (default auto: what predict would choose; the eager "
                        "reference is always fp32)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds; each runs every candidate once, order alternating")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each candidate first")
    p.add_argument("--image", default=None, help="image to time on (default: the bundled CamVid sample)")
    p.add_argument("--calibration", default=None, help="image folder for int8 conversion")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default=None, help="write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("check-data", help="check a prepared dataset folder (every pair read as training reads it)")
    _add_dataset_arguments(p)
    p.add_argument("--splits", default="train,val", help="comma-separated splits to check")
    p.add_argument("--limit", type=_whole_number(1), default=None, help="check only the first N pairs of each split")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser("serve", help="serve a model over HTTP, with a web page (needs the serve extra)")
    _add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback is reachable from other machines")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--workers", type=int, default=1,
                   help="inference workers, each with its own copy of the model, sharing the CPU cores")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests that may wait for a worker; beyond that the server answers 503 with Retry-After")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload, in MB")
    p.add_argument("--max-megapixels", type=float, default=50.0,
                   help="largest accepted image, in megapixels (checked from the header, before decoding)")
    p.add_argument("--upload-timeout", type=float, default=15.0,
                   help="seconds an upload may send nothing before it is cut off with 408 (default: 15)")
    _add_runtime_arguments(p, shapes="dynamic")  # a server meets new sizes for ever: one conversion for all
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("profile", help="count parameters and GMACs at an input size")
    _add_model_arguments(p)
    p.add_argument("--height", type=int, default=512, help="input height in pixels")
    p.add_argument("--width", type=int, default=1024, help="input width in pixels")
    p.set_defaults(func=_cmd_profile)
    for command in sub.choices.values():  # `hyperseg predict ... --debug` as well as `hyperseg --debug predict`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        command.formatter_class = _DefaultsHelpFormatter
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of an error, without the traceback text DataLoader workers wrap around it."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train --resume optim.max_iters=9`: overrides may also follow the options
    if extra and getattr(args, "command", None) == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], Optional[int]] = args.func
    import logging

    logging.basicConfig(level=logging.WARNING, format="hyperseg: %(message)s", stream=sys.stderr)
    logging.getLogger("hyperseg").setLevel(logging.INFO)  # one-time conversions say what they cost
    try:
        _resolve_model_argument(args)
        code = func(args)
    except KeyboardInterrupt as exc:
        detail = f": {exc}" if str(exc) else ""  # a stopped training run says where it saved and how to resume
        print(f"hyperseg {args.command}: interrupted{detail}", file=sys.stderr)
        return 130
    except (HypersegError, OSError) as exc:
        if args.debug:
            raise
        # OSError: the environment refused (permissions, a full disk, a missing folder); not a bug
        message = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename and exc.strerror \
            else _one_line(exc)
        print(f"hyperseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
