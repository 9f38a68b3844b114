"""Val mIoU of one model's weights run at several input scales (``model.input_scale`` overridden).

    python experiments/input_scales.py runs/camvid_fast_4000/best.pt --data ../shared/data/camvid \\
        --split val --scales 0.667,0.8,0.9,1.0

A model trained at one input scale can run at another: this says what that costs in accuracy, per
class for the thin ones, so that a faster or a more accurate operating point can be chosen without
retraining. ``--context-padding features`` says what padding only the context head's input (rather
than the image) costs the same weights. The torch runtime, single scale, no flip.
"""
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="any model source load_model takes")
    parser.add_argument("--data", required=True, help="dataset root")
    parser.add_argument("--dataset", default="camvid")
    parser.add_argument("--split", default="val")
    parser.add_argument("--scales", default="0.667,0.8,1.0", help="comma-separated input scales")
    parser.add_argument("--context-padding", choices=("image", "features"), default=None,
                        help="override the model's context_padding (where a size the head cannot halve is padded)")
    parser.add_argument("--classes", default="pole,sign/symbol,fence,pedestrian,bicyclist",
                        help="classes whose IoU is printed beside the mean")
    args = parser.parse_args()
    from hyperseg.data import build_dataset
    from hyperseg.train.evaluate import evaluate
    from hyperseg.runtime import load_runtime, resolve_model

    dataset = build_dataset(args.dataset, root=args.data, split=args.split)
    shown = [c for c in args.classes.split(",") if c]
    print("| input scale | mIoU | " + " | ".join(shown) + " |\n|---|---|" + "---|" * len(shown))
    for scale in (float(s) for s in args.scales.split(",")):
        model = resolve_model(args.model).eval()
        model.meta["input_scale"] = scale
        if args.context_padding:
            model.config.context_padding = args.context_padding
        metrics = evaluate(load_runtime(model, runtime="torch"), dataset, batch_size=1, workers=1)
        per_class = metrics["per_class_iou"]
        cells = " | ".join(f"{100 * per_class[c]:.1f}" if per_class.get(c) is not None else "n/a" for c in shown)
        print(f"| {scale:g} | {100 * metrics['miou']:.2f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
