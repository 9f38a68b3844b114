"""Ship a trained checkpoint inside the package as built-in weights (float16, with metadata).

    python scripts/package_weights.py runs/camvid_cpu/best.pt --name camvid \
        --command "hyperseg train --config configs/camvid_cpu.yaml"

It evaluates the checkpoint on the validation split first and stores that mIoU, so the number
in the metadata is the one `hyperseg eval` reproduces from the shipped float16 weights. It then
scores the shipped file in each precision `--precision auto` may choose (OpenVINO fp32, bf16 where
this CPU has it natively, int8 calibrated on the package's sample images), the evidence the record
carries; `--measure-only NAME` does only that, for weights already registered:

    python scripts/package_weights.py --measure-only camvid --data ../shared/data/camvid For a
run trained on train + val (the paper's protocol) that number is the fit of data it trained on,
and the metadata says so. It prints the `Weights(...)` record to register in
`src/hyperseg/hub/weights.py`, with the file's SHA-256.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import hyperseg
from hyperseg.hub.checkpoint import load_model, save_model
from hyperseg.data import build_dataset
from hyperseg.train.evaluate import evaluate
from hyperseg.hub.weights import file_sha256

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--measure-only", default=None, metavar="NAME",
                        help="only score registered weights NAME in each precision (prints the record's evidence)")
    parser.add_argument("--name", default="camvid")
    parser.add_argument("--command", default="", help="the command that reproduces the training")
    parser.add_argument("--max-mb", type=float, default=25.0, help="refuse a file larger than this (default: 25)")
    parser.add_argument("--data", default=None, help="dataset root (default: the recipe's data.root)")
    parser.add_argument("--eval-split", default=None,
                        help="split whose mIoU is stored (default: the recipe's val split, else val)")
    args = parser.parse_args()
    if args.measure_only:
        import json

        from hyperseg.hub.weights import get_weights

        record = get_weights(args.measure_only)
        split = (record.metrics.get("val_split") or "camvid:val").split(":")
        dataset = build_dataset(split[0], args.data or "data/camvid", split[-1])
        print(json.dumps(measure_precisions(args.measure_only, dataset), indent=2))
        return
    if not args.checkpoint:
        parser.error("give the checkpoint to package, or --measure-only NAME")

    model = load_model(args.checkpoint)
    recipe = model.meta.get("recipe", {})
    data = recipe.get("data", {})
    out = WEIGHTS / f"{args.name}.pt"
    # Round-trip through float16 first, so the reported mIoU is that of the shipped weights.
    tmp = save_model(model, out.with_suffix(".tmp.pt"), half=True)
    shipped = load_model(tmp)
    eval_split = args.eval_split or data.get("val_split") or "val"
    train_splits = data.get("train_split", "train").split("+")
    dataset = build_dataset(data.get("dataset", "camvid"), args.data or data.get("root", "data/camvid"), eval_split)
    metrics = evaluate(shipped, dataset, mean=shipped.meta["mean"], std=shipped.meta["std"],
                       device=torch.device("cpu"), progress=True)
    meta = {
        "name": args.name,
        "pretrained_backbone": recipe.get("model", {}).get("pretrained_backbone"),  # not this machine's path
        "val_miou": metrics["miou"],
        "val_per_class_iou": metrics["per_class_iou"],
        "val_pixel_acc": metrics["pixel_acc"],
        "val_split": f"{data.get('dataset', 'camvid')}:{eval_split}",
        # trained on the split it is scored on: the number is a fit, not an estimate of accuracy
        "val_in_training": eval_split in train_splits,
        "train_hours": round(float(model.meta.get("train_seconds", 0.0)) / 3600, 3),
        "train_steps": model.meta.get("step"),
        "train_splits": train_splits,
        # the paper's protocol trains on train + val and keeps the last weights
        "protocol": "train+val, last checkpoint" if "val" in train_splits else "train, best val checkpoint",
        "command": args.command,
    }
    save_model(shipped, out, meta=meta, half=True)
    tmp.unlink()
    evidence = measure_precisions(str(out), dataset)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MB), val mIoU {metrics['miou'] * 100:.2f}")
    digest = file_sha256(out)
    print(f"register it in src/hyperseg/hub/weights.py: Weights(name={args.name!r}, file='weights/{out.name}', "
          f"sha256={digest!r}, metrics={{'val_miou': {metrics['miou']!r}, 'val_split': {meta['val_split']!r}, "
          f"'val_in_training': {meta['val_in_training']!r}, 'precision_miou': {evidence['precision_miou']!r}}}, "
          f"recipe={{'command': {args.command!r}, 'train_split': {data.get('train_split', 'train')!r}, "
          f"'iterations': {model.meta.get('step')!r}}}, ...)")
    if size > args.max_mb:
        raise SystemExit(f"{out} is {size:.1f} MB, over the {args.max_mb} MB limit")


if __name__ == "__main__":
    main()
