"""End-to-end CPU inference latency of a model, with and without BatchNorm fusion, side by side.

    python benchmarks/inference.py [--model camvid] [--height 360] [--width 480] [--repeats 20]

Batch 1, float32, torch.inference_mode, after warm-up; prints the machine, medians and the ratio.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import hyperseg


def median_ms(model, x, repeats):
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="camvid", help="built-in name, checkpoint, or registered model name")
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    model = (hyperseg.create_model(args.model) if args.model in hyperseg.list_models() else
             hyperseg.load_model(args.model)).eval()
    fused = hyperseg.fuse_bn(model)
    x = torch.randn(1, 3, args.height, args.width)
    with torch.inference_mode():
        err = (fused(x) - model(x)).abs().max().item()
    plain_ms = median_ms(model, x, args.repeats)
    fused_ms = median_ms(fused, x, args.repeats)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.model} at {args.width}x{args.height}, batch 1, float32, median of {args.repeats}:")
    print(f"  unfused   {plain_ms:8.1f} ms  {1e3 / plain_ms:6.1f} FPS")
    print(f"  fuse_bn   {fused_ms:8.1f} ms  {1e3 / fused_ms:6.1f} FPS   {plain_ms / fused_ms:.2f}x   max|diff| {err:.1e}")


if __name__ == "__main__":
    main()
