"""The ``hyperseg`` command line: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

__all__ = ["main"]


def _cmd_list(args: argparse.Namespace) -> None:
    from .model import list_models, model_cfg

    from .checkpoint import builtin_weights, load_model

    for name in list_models(args.pattern):
        cfg = model_cfg(name)
        extra = f"  ({cfg['dataset']}, {len(cfg['class_names'])} classes, {cfg['input_size'][1]}x{cfg['input_size'][0]})" if cfg else ""
        print(name + extra)
    for name in builtin_weights():
        meta = load_model(name).meta
        miou = meta.get("val_miou")
        score = f", val mIoU {miou * 100:.2f} on {meta.get('val_split', '?')}" if miou is not None else ""
        print(f"{name}  (built-in weights, {len(meta.get('class_names', []))} classes{score})")


def _cmd_convert(args: argparse.Namespace) -> None:
    from .checkpoint import save_model
    from .official import from_official

    model = from_official(args.checkpoint, config=args.config)
    path = save_model(model, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.checkpoint} ({model.meta.get('architecture', 'custom')}, {n:,} parameters) -> {path}")


def _cmd_profile(args: argparse.Namespace) -> None:
    from .model import create_model, list_models
    from .profile import profile

    model = create_model(args.model) if args.model in list_models() else _load_any(args.model)
    result = profile(model, (args.height, args.width))
    print(json.dumps({"model": args.model, "input": [args.height, args.width], **result}))


def _cmd_train(args: argparse.Namespace) -> None:
    from .engine.config import load_config
    from .engine.trainer import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    val = result["val"] or {}
    print(json.dumps({"step": result["step"], "best_miou": result["best_miou"], "last_miou": val.get("miou"),
                      "best": result["best"], "last": result["last"]}))


def _load_any(source: str):
    """One of our checkpoints, a built-in weights name, or an authors' .pth."""
    from .checkpoint import load_model
    from .official import from_official

    try:
        return load_model(source)
    except ValueError as exc:
        if "from_official" in str(exc):
            return from_official(source)
        raise


def _parse_pair(text: Optional[str]):
    if text is None:
        return None
    parts = [int(v) for v in text.replace("x", ",").split(",")]
    return parts * 2 if len(parts) == 1 else parts


def _cmd_eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data import build_dataset
    from .engine.evaluate import evaluate
    from .engine.predict import DEFAULT_MODEL
    from .engine.trainer import resolve_device

    model = _load_any(args.model or DEFAULT_MODEL)
    dataset = build_dataset(args.dataset, args.data, args.split, classes_file=args.classes_file)
    device = resolve_device(args.device)
    model.to(device)
    scales = [float(s) for s in args.scales.split(",")] if args.scales else [1.0]
    metrics = evaluate(model, dataset, mean=model.meta["mean"], std=model.meta["std"], device=device,
                       batch_size=args.batch_size, workers=args.workers, flip=args.flip, scales=scales,
                       window=_parse_pair(args.window), progress=True)
    matrix = metrics.pop("confusion_matrix")
    width = max(len(n) for n in metrics["per_class_iou"])
    for name, iou in metrics["per_class_iou"].items():
        print(f"  {name:<{width}}  {'  n/a' if iou is None else f'{iou * 100:5.2f}'}")
    print(f"mIoU {metrics['miou'] * 100:.2f} (mean over all classes, authors' convention: "
          f"{metrics['miou_all_classes'] * 100:.2f})  pixel acc {metrics['pixel_acc'] * 100:.2f}  "
          f"mean class acc {metrics['mean_class_acc'] * 100:.2f}")
    if args.out:
        from .checkpoint import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({**metrics, "confusion_matrix": matrix}, indent=2))
        print(f"wrote {args.out}")
    if args.confusion_image:
        from .engine.plots import save_confusion_image

        save_confusion_image(matrix, list(metrics["per_class_iou"]), args.confusion_image)
        print(f"wrote {args.confusion_image}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from .engine.predict import DEFAULT_MODEL, Predictor, collect_inputs

    if args.inputs:
        files = [f for source in args.inputs for f in collect_inputs(source)]
    else:
        from pathlib import Path

        files = sorted((Path(__file__).resolve().parent / "assets").glob("*.png"))[:1]
        if not files:
            raise ValueError("no input given and no bundled sample image found")
    model = _load_any(args.model) if args.model else DEFAULT_MODEL
    predictor = Predictor(model, device=args.device, flip=args.flip)
    written = predictor.predict_files(files, args.out, alpha=args.alpha)
    for path in written:
        print(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperseg", description="HyperSeg semantic segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'hyperseg_*camvid'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("convert", help="convert an authors' checkpoint (.pth) into a hyperseg checkpoint")
    p.add_argument("checkpoint", help="the authors' .pth file")
    p.add_argument("output", help="where to write the hyperseg checkpoint (.pt)")
    p.add_argument("--config", default=None, help="paper model name, for checkpoints without an 'arch' entry")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("train", help="train a model (YAML config + section.key=value overrides)")
    p.add_argument("--config", default=None, help="YAML recipe, e.g. configs/camvid_cpu.yaml")
    p.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    p.add_argument("overrides", nargs="*", help="e.g. optim.max_iters=200 data.root=../shared/data/camvid")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a dataset split (mIoU, per-class IoU)")
    p.add_argument("model", nargs="?", default=None, help="checkpoint, authors' .pth, or built-in name (default: camvid)")
    p.add_argument("--data", default="../shared/data/camvid", help="dataset root")
    p.add_argument("--dataset", default="camvid", help="camvid | camvid32 | cityscapes | voc | ade20k | folder")
    p.add_argument("--split", default="val")
    p.add_argument("--classes-file", default=None, help="class list YAML (folder datasets)")
    p.add_argument("--out", default=None, help="write metrics JSON here")
    p.add_argument("--confusion-image", default=None, help="save the confusion matrix as a PNG")
    p.add_argument("--flip", action="store_true", help="test-time horizontal flip")
    p.add_argument("--scales", default=None, help="test-time scales, e.g. 0.75,1,1.25")
    p.add_argument("--window", default=None, help="sliding window HxW, e.g. 512x512")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment images, folders, globs or videos")
    p.add_argument("inputs", nargs="*", help="image, folder, glob or video (default: the bundled sample)")
    p.add_argument("--model", default=None, help="checkpoint, authors' .pth, or built-in name (default: camvid)")
    p.add_argument("--out", default="hyperseg_out", help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--flip", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("profile", help="count parameters and GMACs at an input size")
    p.add_argument("model", help="registered model name or checkpoint path")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.set_defaults(func=_cmd_profile)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, KeyError, ImportError,
            FloatingPointError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"hyperseg {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hyperseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
