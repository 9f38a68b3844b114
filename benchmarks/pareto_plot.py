"""The speed-accuracy picture from measured data only: docs/pareto.png.

    python benchmarks/pareto_plot.py results/epyc-avx2-2026-12-03/pareto.json --out docs/pareto.png \\
        --model camvid_train=camvid --model camvid_fast_train=lite0_4lv@0.8 \\
        --point "SMP FPN (Lite2)=peer:smp_fpn_lite2:76.57"

x: end-to-end latency (uint8 image -> label map) on the machine ``pareto.py`` ran on, each model in
its fastest runtime; y: val mIoU of a run trained on train only. ``--model WEIGHTS=CANDIDATE`` takes
the accuracy from a registered weights record (refusing one whose val number is a fit of data it
trained on) and the latency of the candidate with the same architecture; ``--point
LABEL=CANDIDATE:MIOU`` adds a trained baseline whose accuracy comes from its own run. Every peer
row of the JSON becomes a vertical line at its latency: there is no accuracy for them at this
setting.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def points(result: dict, models: list[str], extra: list[str]) -> list[tuple[str, float, float, str]]:
    """(label, latency ms, val mIoU %, runtime) for every shipped model and trained baseline asked for."""
    import hyperseg

    fastest = result["fastest"]
    out = []
    for spec in models:
        name, _, candidate = spec.partition("=")
        record = hyperseg.get_weights(name)
        if record.metrics.get("val_in_training", True):
            raise SystemExit(f"--model {name}: its val mIoU is a fit of data it trained on; give a train-only record")
        if candidate not in fastest:
            raise SystemExit(f"--model {spec}: no timed candidate {candidate!r} in the JSON")
        out.append((name, fastest[candidate]["end_to_end_ms"], 100 * record.metrics["val_miou"],
                    fastest[candidate]["runtime"]))
    for spec in extra:
        label, _, rest = spec.partition("=")
        candidate, _, miou = rest.rpartition(":")
        if candidate not in fastest:
            raise SystemExit(f"--point {spec}: no timed candidate {candidate!r} in the JSON")
        out.append((label, fastest[candidate]["end_to_end_ms"], float(miou), fastest[candidate]["runtime"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="the output of benchmarks/pareto.py --json")
    parser.add_argument("--out", type=Path, default=Path("docs/pareto.png"))
    parser.add_argument("--model", action="append", default=[], help="WEIGHTS=CANDIDATE (a train-only record)")
    parser.add_argument("--point", action="append", default=[], help="LABEL=CANDIDATE:VAL_MIOU (a trained baseline)")
    args = parser.parse_args()
    result = json.loads(args.json.read_text())
    dots = points(result, args.model, args.point)
    from hyperseg.errors import require

    matplotlib = require("matplotlib", "viz", "the Pareto plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for label, ms, miou, runtime in dots:
        shipped = not label.startswith("SMP")
        ax.scatter([ms], [miou], s=60, marker="o" if shipped else "s", color="tab:blue" if shipped else "tab:gray",
                   zorder=3)
        ax.annotate(f"{label}\n{runtime}", (ms, miou), textcoords="offset points", xytext=(6, 4), fontsize=8)
    plotted = {spec.partition("=")[2].rpartition(":")[0] for spec in args.point}  # baselines drawn as points
    lines = [(name, best) for name, best in result["fastest"].items() if name.startswith("peer:") and name not in plotted]
    xs = [ms for _, ms, _, _ in dots] + [best["end_to_end_ms"] for _, best in lines]
    ax.set_xlim(min(xs) * 0.85, max(xs) * 1.12)
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.15 * (high - low), high + 0.08 * (high - low))
    previous = None
    for name, best in sorted(lines, key=lambda item: item[1]["end_to_end_ms"]):
        smp, ms = name.startswith("peer:smp"), best["end_to_end_ms"]
        color = "tab:gray" if smp else "tab:orange"
        ax.axvline(ms, color=color, linestyle=":" if smp else "--", linewidth=1)
        crowded = previous is not None and ms - previous < 0.04 * (max(xs) - min(xs))
        y = ax.get_ylim()[1] if crowded else ax.get_ylim()[0]  # a close neighbour's label goes to the top
        ax.text(ms, y, f" {name[5:]} (speed only)\n {best['runtime']}", rotation=90, fontsize=6.5,
                va="top" if crowded else "bottom", ha="left" if crowded else "right", color=color)
        previous = ms
    machine = result["machine"]
    ax.set_xlabel(f"end-to-end latency, ms (480x360, batch 1, fastest runtime; {machine['cpu']}, "
                  f"{machine['cores']} cores)", fontsize=8)
    ax.set_ylabel("CamVid val mIoU, %, trained on train only")
    ax.set_title(f"Speed and accuracy on this CPU ({result['date']})", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
