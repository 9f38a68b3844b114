"""Ship a trained checkpoint inside the package as built-in weights (float16, with metadata).

    python scripts/package_weights.py runs/camvid_fast_trainval/last.pt --name camvid_fast \\
        --command "hyperseg train --config configs/camvid_fast.yaml" --data ../shared/data/camvid \\
        --unseen-eval runs/camvid_fast_fold_0006R0/eval_0006R0.json --unseen-split "camvid:train drive 0006R0" \\
        --overwrite

The checkpoint is stored in float16 first and every number is measured on that file, so the record
states what `hyperseg eval` reproduces from the shipped weights: the mIoU on the recipe's validation
split (marked a fit when the run trained on it), then the mIoU in each precision `--precision auto`
may choose (OpenVINO fp32, bf16 where this CPU has it natively, int8 calibrated on the package's
sample images). ``--unseen-eval`` adds the unseen-street estimate: the `hyperseg eval --out` file of
the same recipe trained without one drive and scored on it. The script prints the record to register
in `src/hyperseg/hub/weights.py`, with the file's SHA-256. `--measure-only NAME` scores weights
already registered in each precision:

    python scripts/package_weights.py --measure-only camvid --data ../shared/data/camvid
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch

import hyperseg
from hyperseg.data import build_dataset
from hyperseg.errors import HypersegError
from hyperseg.hub.checkpoint import check_output, load_model, save_model
from hyperseg.hub.weights import file_sha256, get_weights
from hyperseg.train.evaluate import evaluate

WEIGHTS = Path(hyperseg.__file__).resolve().parent / "weights"


def measure_precisions(weights: str, dataset, *, progress: bool = True) -> dict:
    """mIoU on ``dataset`` of ``weights`` (a file or registered name) in OpenVINO at each precision
    ``--precision auto`` may pick, and the share of the sample images' pixels labelled as in fp32."""
    from hyperseg.runtime import SAMPLE_IMAGES, load_runtime
    from hyperseg.runtime.precision import cpu_kind, label_agreement

    precisions = ["fp32", *(["bf16"] if cpu_kind() == "bf16" else []), "int8"]
    runtimes, miou, agreement = {}, {}, {}
    for precision in precisions:
        runtimes[precision] = load_runtime(weights, runtime="openvino", precision=precision,
                                           calibration=str(SAMPLE_IMAGES) if precision == "int8" else None)
        metrics = evaluate(runtimes[precision], dataset, progress=progress)
        miou[precision] = metrics["miou"]
        agreement[precision] = label_agreement(runtimes["fp32"], runtimes[precision], SAMPLE_IMAGES)
        print(f"{weights} openvino {precision}: val mIoU {100 * miou[precision]:.2f}, "
              f"{100 * agreement[precision]:.3f} % of sample pixels as in fp32")
    return {"precision_miou": miou, "precision_runtime": "openvino", "sample_agreement": agreement,
            "cpu_kind": cpu_kind()}


def read_unseen(path: Optional[Path], split: Optional[str]) -> dict[str, Any]:
    """The unseen-street estimate from a `hyperseg eval --out` file, as the record's fractions."""
    if path is None:
        if split is not None:
            raise HypersegError("--unseen-split describes --unseen-eval's split; give --unseen-eval too")
        return {}
    if not split:
        raise HypersegError(f"--unseen-eval {path}: say which drive it scores with --unseen-split, "
                            f"e.g. \"camvid:train drive 0006R0\"")
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise HypersegError(f"--unseen-eval {path}: not a readable `hyperseg eval --out` JSON file ({e})") from None
    if not isinstance(result, dict) or result.get("unit") != "percent" or not isinstance(result.get("miou"), (int, float)):
        raise HypersegError(f"--unseen-eval {path}: expected `hyperseg eval --out` JSON with unit percent and miou")
    per_class = {name: round(value / 100, 6) for name, value in result.get("per_class_iou", {}).items()}
    return {"unseen_miou": result["miou"] / 100, "unseen_split": split, "unseen_per_class_iou": per_class}


def output_path(args: argparse.Namespace) -> Path:
    """Where the weights go; an existing file is replaced only when asked, and never the input."""
    out = args.out_dir / f"{args.name}.pt"
    if out.resolve() == Path(args.checkpoint).resolve():
        raise HypersegError(f"{out} is the checkpoint being packaged; give another --name or --out-dir")
    check_output(out, "--out-dir", args.overwrite)
    return out


def record_meta(args: argparse.Namespace, model, metrics: dict, recipe_data: dict, eval_split: str) -> dict:
    """The metadata stored in the shipped file."""
    train_splits = recipe_data.get("train_split", "train").split("+")
    dataset = recipe_data.get("dataset", "camvid")
    return {
        "name": args.name,
        "pretrained_backbone": model.meta.get("recipe", {}).get("model", {}).get("pretrained_backbone"),
        "val_miou": metrics["miou"],
        "val_per_class_iou": metrics["per_class_iou"],
        "val_pixel_acc": metrics["pixel_acc"],
        "val_split": f"{dataset}:{eval_split}",
        # trained on the split it is scored on: the number is a fit, not an estimate of accuracy
        "val_in_training": eval_split in train_splits,
        "train_hours": round(float(model.meta.get("train_seconds", 0.0)) / 3600, 3),
        "train_steps": model.meta.get("step"),
        "train_splits": train_splits,
        # the paper's protocol trains on train + val and keeps the last weights
        "protocol": "train+val, last checkpoint" if "val" in train_splits else "train, best val checkpoint",
        "command": args.command,
    }


def package(args: argparse.Namespace) -> Path:
    """Write the float16 weights with their metadata; print the record to register."""
    out = output_path(args)
    unseen = read_unseen(args.unseen_eval, args.unseen_split)
    model = load_model(args.checkpoint)
    data = model.meta.get("recipe", {}).get("data", {})
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # Numbers are measured on the float16 round trip, the weights that ship; the file takes its
    # name only when it is complete and within the size limit.
    tmp = save_model(model, out.with_name(f".{out.stem}.packaging.pt"), half=True)
    try:
        size = tmp.stat().st_size / 2**20
        if size > args.max_mb:
            raise HypersegError(f"{args.checkpoint} packages to {size:.1f} MB, over --max-mb {args.max_mb:g}")
        shipped = load_model(tmp)
        eval_split = args.eval_split or data.get("val_split") or "val"
        dataset = build_dataset(data.get("dataset", "camvid"), args.data or data.get("root", "data/camvid"), eval_split)
        metrics = evaluate(shipped, dataset, mean=shipped.meta["mean"], std=shipped.meta["std"],
                           device=torch.device("cpu"), progress=not args.quiet)
        meta = {**record_meta(args, model, metrics, data, eval_split), **unseen}
        save_model(shipped, tmp, meta=meta, half=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    evidence = measure_precisions(str(out), dataset, progress=not args.quiet)
    print(f"wrote {out} ({size:.1f} MB), val mIoU {metrics['miou'] * 100:.2f}")
    record = {
        "name": args.name, "file": f"weights/{out.name}", "sha256": file_sha256(out),
        "metrics": {"val_miou": metrics["miou"], "val_split": meta["val_split"],
                    "val_in_training": meta["val_in_training"], "precision_miou": evidence["precision_miou"],
                    **{k: v for k, v in unseen.items() if k != "unseen_per_class_iou"}},
        "recipe": {"command": args.command, "train_split": data.get("train_split", "train"),
                   "iterations": model.meta.get("step"), "train_hours": meta["train_hours"]},
    }
    print("register it in src/hyperseg/hub/weights.py:")
    print(json.dumps(record, indent=2))
    return out


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="the trained checkpoint to package")
    parser.add_argument("--measure-only", default=None, metavar="NAME",
                        help="only score registered weights NAME in each precision (prints the record's evidence)")
    parser.add_argument("--name", default="camvid", help="the weights name; the file is NAME.pt (default: camvid)")
    parser.add_argument("--command", default="", help="the command that reproduces the training")
    parser.add_argument("--out-dir", type=Path, default=WEIGHTS,
                        help="where NAME.pt goes (default: the package's weights folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing NAME.pt")
    parser.add_argument("--max-mb", type=float, default=25.0, help="refuse a file larger than this (default: 25)")
    parser.add_argument("--data", default=None, help="dataset root (default: the recipe's data.root)")
    parser.add_argument("--eval-split", default=None,
                        help="split whose mIoU is stored (default: the recipe's val split, else val)")
    parser.add_argument("--unseen-eval", type=Path, default=None, metavar="JSON",
                        help="`hyperseg eval --out` file of the recipe trained without one drive, scored on it")
    parser.add_argument("--unseen-split", default=None, metavar="TEXT",
                        help="what --unseen-eval scored, e.g. \"camvid:train drive 0006R0\"")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not args.measure_only and not args.checkpoint:
        parser.error("give the checkpoint to package, or --measure-only NAME")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        if args.measure_only:
            split = (get_weights(args.measure_only).metrics.get("val_split") or "camvid:val").split(":")
            dataset = build_dataset(split[0], args.data or "data/camvid", split[-1])
            print(json.dumps(measure_precisions(args.measure_only, dataset, progress=not args.quiet), indent=2))
        else:
            package(args)
    except HypersegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
