"""`hyperseg list`: the registered architectures and weights, with their scores and latency."""
from __future__ import annotations

import argparse
from typing import Optional


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'hyperseg_*camvid'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..model import list_models, model_cfg
    from ..hub.weights import get_weights, list_weights

    for name in list_models(args.pattern):
        cfg = model_cfg(name)
        extra = f"  ({cfg['dataset']}, {len(cfg['class_names'])} classes, {cfg['input_size'][1]}x{cfg['input_size'][0]})" if cfg else ""
        print(name + extra)
    from ..runtime.precision import CPU_KINDS

    machines: dict = {}
    for name in list_weights(args.pattern):  # records only: no weights file is opened
        weights = get_weights(name)
        metrics = weights.metrics
        details = [f"{'built-in' if weights.builtin else 'registered'} weights of {weights.architecture}",
                   f"{len(weights.class_names)} classes"]
        if weights.input_scale is not None:
            details.append(f"images seen at {weights.input_scale:g}x their size")
        if "unseen_miou" in metrics:
            details.append(f"unseen-street mIoU {metrics['unseen_miou'] * 100:.2f} on "
                           f"{metrics.get('unseen_split', '?')} (the recipe trained without it)")
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
    from ..runtime import installed_runtimes
    from ..runtime.precision import choose_precision, cpu_kind

    table = metrics.get("latency_ms") or {}
    if not table or not all(isinstance(v, dict) for v in table.values()):
        return None
    kind = cpu_kind() if cpu_kind() in table else next(iter(table))
    runtime = installed_runtimes()[0]
    precision = choose_precision(metrics, runtime, cpu=kind, has_calibration=True).precision
    ms = table[kind].get(f"{runtime} {precision}")
    return None if ms is None else (ms, f"{runtime} {precision}", kind)
