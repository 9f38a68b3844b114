"""`hyperseg eval`: mIoU and per-class IoU of a model on a dataset split."""
from __future__ import annotations

import argparse
import json
import sys

from .options import (check_output, runtime_options, onnx_meta, whole_number, add_tta_arguments, tta_options,
                      add_runtime_arguments, add_dataset_arguments, dataset_from_args, add_model_arguments)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a dataset split (mIoU, per-class IoU)")
    add_model_arguments(p)
    add_dataset_arguments(p)
    p.add_argument("--split", default="val", help="split to evaluate (train, val, test, or a list name for voc)")
    p.add_argument("--out", default=None, help="write the metrics as JSON here, in percent (\"unit\": \"percent\")")
    p.add_argument("--confusion-image", default=None, help="save the confusion matrix as a PNG")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out / --confusion-image files")
    add_tta_arguments(p)
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (same-size images only)")
    p.add_argument("--workers", type=whole_number(0), default=2,
                   help="DataLoader worker processes reading images (0: in process)")
    add_runtime_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..data import check_drive_pattern, split_names
    from ..train.evaluate import evaluate
    from ..runtime import load_runtime

    split_names(args.split, "--split")
    check_drive_pattern(args.drive_pattern, "--drive-pattern")
    check_output(args.out, "--out", args.overwrite, inputs=[args.model])
    check_output(args.confusion_image, "--confusion-image", args.overwrite, inputs=[args.model])
    dataset = dataset_from_args(args, args.split)
    from ..hub.checkpoint import refuse_replacing_inputs

    files = [p for pair in dataset.samples for p in pair if p is not None]
    for option, target in (("--out", args.out), ("--confusion-image", args.confusion_image)):
        if target:  # no output may be one of the dataset's files, with or without --overwrite
            refuse_replacing_inputs([Path(target)], files, option)
    if args.confusion_image:  # before the evaluation, not after it
        from ..errors import require

        require("matplotlib", "viz", "--confusion-image")
    from ..process.distributed import init_process

    proc = init_process(args.device)  # under torchrun: each rank scores its share, the confusion matrices are summed
    model = load_runtime(args.model, options=runtime_options(args, device=str(proc.device)), meta=onnx_meta(args))
    if proc.main:
        print(f"model: {model.statement()}" + (f", {proc.world} processes" if proc.distributed else ""),
              file=sys.stderr)
    metrics = evaluate(model, dataset, batch_size=args.batch_size, workers=args.workers,
                       progress=sys.stderr.isatty() and proc.main, **tta_options(args))
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
        from ..hub.checkpoint import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps({**_in_percent(metrics), "confusion_matrix": matrix,
                                                      "model": str(args.model), "split": args.split}, indent=2))
        print(f"wrote {args.out}")
    if args.confusion_image:
        from ..train.plots import save_confusion_image

        save_confusion_image(matrix, list(metrics["per_class_iou"]), args.confusion_image)
        print(f"wrote {args.confusion_image}")


def _in_percent(metrics: dict) -> dict:
    """The metrics as the console shows them: percentages (IoU and accuracies), marked as such."""
    def pct(v):
        return None if v is None else round(v * 100, 6)

    fractions = ("miou", "miou_all_classes", "pixel_acc", "mean_class_acc")
    out = {k: pct(v) if k in fractions else v for k, v in metrics.items() if k != "per_class_iou"}
    out["per_class_iou"] = {name: pct(v) for name, v in metrics["per_class_iou"].items()}
    return {"unit": "percent", **out}
