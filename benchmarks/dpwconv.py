"""DPWConv speed: our kernels against the authors' grouped-conv formulation, side by side.

Runs the patch-wise inverted residual of a decoder level (window semantics of the authors'
v1_0: pw1 on the padded windows, valid depthwise, pw2) at the paper's real shapes, with each
combination of pointwise/depthwise backend timed in interleaved rounds (``hyperseg.bench``), and
prints median times and ratios to the oracle.

    python benchmarks/dpwconv.py [--repeats 20] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch

from hyperseg.bench import interleaved, machine_info
from hyperseg.model.decoder.dpwconv import merge_patches, patch_depthwise, patch_pointwise, split_windows

# (label, batch, in, hidden, out, H, W, grid) -- the block input sizes of the paper models.
SHAPES = [
    ("HyperSeg-M 1024x512 level 3", 1, 24, 48, 16, 128, 256, (16, 32)),
    ("HyperSeg-M 1024x512 level 4", 1, 34, 68, 19, 256, 512, (16, 32)),
    ("CamVid-L 1024x768 level 5", 1, 21, 42, 12, 768, 1024, (24, 32)),
]


def block(x, w1, wd, w2, grid, pw_backend, dw_backend):
    batch = x.shape[0]
    y = split_windows(x, grid, 1)  # (P, in, ph+2, pw+2)
    y = patch_pointwise(y, w1, backend=pw_backend).clamp_(0, 6)
    y = patch_depthwise(y, wd, backend=dw_backend).clamp_(0, 6)
    y = patch_pointwise(y, w2, backend=pw_backend)
    return merge_patches(y, batch, grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds (default: 15)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {machine_info()['cpu']}, {args.threads} threads, torch {torch.__version__}")
    combos = [("grouped", "grouped"), ("bmm", "grouped"), ("grouped", "shifted"), ("bmm", "shifted")]
    for label, b, cin, hid, cout, h, w, grid in SHAPES:
        p = b * grid[0] * grid[1]
        x = torch.randn(b, cin, h, w)
        w1, wd, w2 = torch.randn(p, hid, cin), torch.randn(p, hid, 3, 3), torch.randn(p, cout, hid)
        print(f"\n{label}: input {b}x{cin}x{h}x{w}, grid {grid[0]}x{grid[1]}, patch {h // grid[0]}x{w // grid[1]}")
        with torch.inference_mode():
            runs = [partial(block, x, w1, wd, w2, grid, pw_b, dw_b) for pw_b, dw_b in combos]
            outputs = [run() for run in runs]  # also the warm-up
            medians = [statistics.median(times) for times in interleaved(runs, args.repeats)]
        ref = outputs[0]
        for (pw_b, dw_b), out, t in zip(combos, outputs, medians):
            err = (out - ref).abs().max().item() / ref.abs().max().item()
            print(f"  pointwise={pw_b:8s} depthwise={dw_b:8s} {t * 1e3:8.2f} ms  "
                  f"{medians[0] / t:5.2f}x vs grouped oracle   rel.err {err:.1e}")


if __name__ == "__main__":
    main()
