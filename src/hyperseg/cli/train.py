"""`hyperseg train`: a training run from a YAML recipe and section.key=value overrides."""
from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (YAML config + section.key=value overrides)")
    p.add_argument("--config", default=None, help="YAML recipe, e.g. configs/camvid_cpu.yaml")
    p.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    p.add_argument("overrides", nargs="*", help="e.g. optim.max_iters=200 data.root=data/camvid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..train.config import load_config
    from ..train.trainer import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume)
    if result["rank"] != 0:  # under torchrun the summary is rank 0's to print
        return
    val = result["val"] or {}
    best_miou = result["best_miou"] if result["best_miou"] >= 0 else None  # a run without validation has none
    print(json.dumps({"step": result["step"], "best_miou": best_miou, "last_miou": val.get("miou"),
                      "best": result["best"], "last": result["last"]}))
