"""Screen recipe changes on a drive the model never saw, with val next to it.

    python experiments/recipe_screens.py --data ../shared/data/camvid [--iters 1000] [--only ema,jitter]
        [--fold 0006R0|0001TP] [--json results/<machine>-<date>/recipe_screens.json] [--report-only]

Each candidate is the fast recipe (configs/camvid_fast.yaml) plus a few overrides, trained for
``--iters`` steps on two of the train split's three drives. Its last checkpoint is then scored on the
third (``--fold``, a street it never saw) and on val (101 frames of 0016E5, a street it did see).
The folds measure two different gaps: 0006R0 is a daytime drive (train on 0001TP + 0016E5, 266
frames), 0001TP is the dusk drive (train on 0006R0 + 0016E5, 225 frames), whose light no other
drive has. One run per candidate, same seed, same
budget: a screen, to decide which changes earn a long run, not a result to quote alone.

No teacher (the recipe has none): a teacher that saw the held-out drive would leak it into the student.
Runs live in ``runs/screens/<name>``; an interrupted screen is resumed (``--resume``) and a finished one
is not run again, so the script can be rerun until every row is filled. It prints a Markdown table and
writes the JSON given.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRIVES = ["0001TP", "0006R0", "0016E5"]  # the train split's drives; 0016E5 is also val's
THIN = ["pole", "sign/symbol", "fence", "pedestrian", "bicyclist"]
RARE = "[" + ",".join(THIN) + "]"
# Every candidate is configs/camvid_fast.yaml plus its overrides. PLAIN takes out the three changes the
# screens chose (features padding, Lovasz, colour jitter): the base the first rows were measured against.
PLAIN = ["model.options.context_padding=image", "loss.lovasz_weight=0.0", "data.color_jitter=0.0"]
NO_JITTER = ["data.color_jitter=0.0"]
CANDIDATES: dict[str, list[str]] = {
    "today": [*PLAIN],
    "today_seed1": [*PLAIN, "train.seed=1"],  # the control: how far a second seed moves the row
    "scales_0.5_2": [*PLAIN, "data.scale_range=[0.5,2.0]"],
    "full_crops": [*PLAIN, "data.crop_size=[288,384]"],  # 360x480 seen at 0.8
    "ema": [*PLAIN, "train.ema_decay=0.995"],  # a ~200-step window: 0.999 would still hold the first steps at 1000
    "color_jitter": [*PLAIN, "data.color_jitter=0.3"],
    "rare_crops": [*PLAIN, f"data.focus_classes={RARE}", "data.focus_prob=0.5"],
    # the two changes that each gained most in the first screens, together
    "scales_rare": [*PLAIN, "data.scale_range=[0.5,2.0]", f"data.focus_classes={RARE}", "data.focus_prob=0.5"],
    # a per-class IoU surrogate next to the bootstrapped CE: every class counts once, as in mIoU
    "lovasz": [*PLAIN, "loss.lovasz_weight=1.0"],
    "lovasz_seed1": [*PLAIN, "loss.lovasz_weight=1.0", "train.seed=1"],  # does the gain survive another seed?
    # features padding and Lovasz, without jitter: the control of the jitter rows
    "shipped": [*NO_JITTER],
    "shipped_seed1": [*NO_JITTER, "train.seed=1"],
    # photometric robustness, for the dusk drive: brightness/contrast/saturation +-30 % (the config as it is)
    "shipped_jitter": [],
    "shipped_jitter_seed1": ["train.seed=1"],
    # the image at full size (the same weights gained 2.1 val at 1.0); the crop keeps its field of view
    "shipped_scale1": ["model.input_scale=1.0", "data.crop_size=[320,400]"],
}


def hyperseg(*args: str) -> None:
    cmd = [sys.executable, "-m", "hyperseg", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def train(name: str, overrides: list[str], args: argparse.Namespace) -> Path:
    out = args.runs / name
    if (out / "done.json").is_file():  # trained and scored
        return out
    seen = [d for d in DRIVES if d != args.fold]
    config = ["--config", "configs/camvid_fast.yaml", f"data.root={args.data}",
              "data.train_split=train", f"data.train_drives=[{','.join(seen)}]",
              "data.val_split=train", f"data.val_drives=[{args.fold}]",
              f"optim.max_iters={args.iters}", f"train.val_interval={args.iters}", f"train.out_dir={out}",
              *overrides]
    hyperseg("train", *config, *(["--resume"] if (out / "last.pt").is_file() else []))
    return out


def score(out: Path, split: str, drives: list[str], args: argparse.Namespace) -> dict:
    """mIoU and the thin classes' IoU of the run's final weights (its EMA when it kept one)."""
    path = out / f"eval_{split}_{'_'.join(drives) or 'all'}.json"
    weights = out / "ema.pt" if (out / "ema.pt").is_file() else out / "last.pt"
    if not path.is_file():
        hyperseg("eval", str(weights), "--data", str(args.data), "--split", split, "--runtime", "torch",
                 *(["--drives", ",".join(drives)] if drives else []), "--out", str(path))
    metrics = json.loads(path.read_text())
    return {"miou": metrics["miou"], **{c: metrics["per_class_iou"][c] for c in THIN}}


def markdown(rows: dict[str, dict]) -> str:
    head = "| recipe | unseen drive mIoU | val mIoU | " + " | ".join(f"{c} (unseen)" for c in THIN) + " |"
    lines = [head, "|" + "---|" * (3 + len(THIN))]
    for name, r in rows.items():
        u, v = r["unseen"], r["val"]
        lines.append(f"| {name} | {u['miou']:.2f} | {v['miou']:.2f} | "
                     + " | ".join("n/a" if u[c] is None else f"{u[c]:.1f}" for c in THIN) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the CamVid folder")
    p.add_argument("--iters", type=int, default=1000, help="training steps per candidate")
    p.add_argument("--only", default=None, help="comma-separated candidates (default: all)")
    p.add_argument("--fold", default="0006R0", choices=["0006R0", "0001TP"],
                   help="the held-out drive: 0006R0 (daytime, the default) or 0001TP (dusk)")
    p.add_argument("--runs", type=Path, default=None,
                   help="where the runs live (default runs/screens, runs/screens_0001TP for the dusk fold)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--report-only", action="store_true", help="train nothing: report the finished rows")
    args = p.parse_args()

    if args.runs is None:
        args.runs = ROOT / "runs" / ("screens" if args.fold == "0006R0" else f"screens_{args.fold}")
    names = args.only.split(",") if args.only else list(CANDIDATES)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--only {','.join(unknown)}: expected some of {', '.join(CANDIDATES)}")
    rows = {}
    for name in names:
        out = args.runs / name
        if args.report_only and not (out / "done.json").is_file():
            continue
        try:
            train(name, CANDIDATES[name], args)
            rows[name] = {"overrides": CANDIDATES[name], "fold": args.fold,
                           "unseen": score(out, "train", [args.fold], args),
                          "val": score(out, "val", [], args)}
        except (subprocess.CalledProcessError, KeyboardInterrupt):  # the trainer saved; keep the rows so far
            write_report(rows, args)
            raise SystemExit(f"screen {name!r} stopped before its scores; rerun the same command to resume it") from None
        (out / "done.json").write_text(json.dumps(rows[name], indent=2))
        write_report(rows, args)
    print(markdown(rows))


def write_report(rows: dict[str, dict], args: argparse.Namespace) -> None:
    """Write the finished rows to --json (atomically), so an interrupted screen keeps them."""
    from hyperseg.bench import write_record

    if rows and args.json:
        # the report is rebuilt whole from the runs folder on every pass: replacing it loses nothing
        write_record(args.json, {"iters": args.iters, "fold": args.fold, "rows": rows}, overwrite=True)


if __name__ == "__main__":
    main()
