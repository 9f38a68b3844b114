"""One dynamic-shape ONNX file for every size, against one static file per size, in one runtime.

    hyperseg export -m camvid --size 384x512 --out /tmp/ovd/static.onnx
    hyperseg export -m camvid --dynamic --out /tmp/ovd/dynamic.onnx
    python benchmarks/dynamic_shapes.py /tmp/ovd/static.onnx /tmp/ovd/dynamic.onnx --runtime openvino [--rounds 30]
    python benchmarks/dynamic_shapes.py /tmp/ovd/static.onnx /tmp/ovd/dynamic.onnx --runtime onnxruntime

Why: serve meets a new image size per request. Compiling a new static file per size grew the
process by 1-2 MB per compile; reshaping one dynamic graph did not (docs/deployment.md).
This measures what the dynamic graph costs at run time (in OpenVINO once reshaped to the static
size; onnxruntime runs it with symbolic shapes): the two are timed in interleaved rounds in one
process (one runtime per process), their outputs compared, and the dynamic graph's first run
(OpenVINO: reshape and compile) reported. Run it idle.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("static")
    p.add_argument("dynamic")
    p.add_argument("--runtime", choices=["openvino", "onnxruntime"], default="openvino")
    p.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds (default: 30)")
    args = p.parse_args()
    import torch

    from hyperseg.bench import interleaved, machine_info
    from hyperseg.runtime.onnx_runtimes import ONNX_RUNTIMES

    engine = ONNX_RUNTIMES[args.runtime]
    static = engine(args.static, precision="fp32")
    dynamic = engine(args.dynamic, precision="fp32")
    h, w = static.meta["input_size"]
    x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
    start = time.perf_counter()
    out_d = dynamic.run(x)  # reshape + compile + first run
    first = time.perf_counter() - start
    out_s = static.run(x)
    diff = float(np.abs(out_d - out_s).max())
    seconds = interleaved([lambda: static.run(x), lambda: dynamic.run(x)], args.rounds)
    times = {name: [t * 1000 for t in ts] for name, ts in zip(("static", "dynamic"), seconds)}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.runtime}; CPU: {machine_info()['cpu']}, {torch.get_num_threads()} threads; input {h}x{w}; rounds {args.rounds}")
    print(f"max |static - dynamic| logits: {diff:.2e}; dynamic first run: {first:.2f} s")
    for k, v in times.items():
        print(f"{k:8s} median {med[k]:.1f} ms  min {min(v):.1f} ms")
    print(f"dynamic / static (median): {med['dynamic'] / med['static']:.3f}")


if __name__ == "__main__":
    main()
