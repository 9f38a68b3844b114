"""Does OpenVINO itself grow a process's memory per compiled size? (serve's remaining growth, issue 23)

    python benchmarks/openvino_memory.py cachedir [--cycles 12]  # static file per size, CACHE_DIR set
    python benchmarks/openvino_memory.py nocache  [--cycles 12]  # static file per size, no CACHE_DIR
    python benchmarks/openvino_memory.py dynamic  [--cycles 12]  # one dynamic file, reshaped per size

Exports a small HyperSeg first (8 static sizes, or one dynamic-shape file), then for ``--cycles``
cycles reads (or reshapes), compiles and runs each size, keeping the 4 most recent compiled models
(as a runtime does), with gc + malloc_trim after each, and prints the resident memory after every
cycle. No torch export happens during the loop, so any growth is OpenVINO's.
"""
import argparse
import collections
import ctypes
import gc
import os
import tempfile

import openvino as ov
import torch

import hyperseg
from hyperseg.runtime import export_onnx

SIZES = [(384, 512), (320, 448), (448, 576), (256, 320), (512, 640), (192, 256), (320, 704), (512, 384)]


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def trim() -> None:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["cachedir", "nocache", "dynamic"])
    p.add_argument("--cycles", type=int, default=12)
    args = p.parse_args()
    tmp = tempfile.mkdtemp()
    model = hyperseg.create_model("hyperseg", num_classes=11, encoder_name="tf_efficientnet_lite0",
                                  encoder_reductions=[0.25] * 5, decoder_kernel_sizes=[1, 1, 1, 3],
                                  decoder_channels=[64, 32, 16, 16], weight_groups=[64, 32, 32, 16]).eval()
    if args.mode == "dynamic":
        dynamic = export_onnx(model, os.path.join(tmp, "dynamic.onnx"), dynamic=True)
    else:
        files = {s: export_onnx(model, os.path.join(tmp, f"m{s[0]}x{s[1]}.onnx"), size=s) for s in SIZES}
    torch._dynamo.reset()
    trim()
    core = ov.Core()
    if args.mode == "cachedir":
        core.set_property({"CACHE_DIR": os.path.join(tmp, "ov")})
    graph = core.read_model(str(dynamic)) if args.mode == "dynamic" else None
    compiled: "collections.OrderedDict" = collections.OrderedDict()
    out = []
    for cycle in range(args.cycles):
        for size in SIZES:
            if graph is not None:
                g = graph.clone()
                g.reshape({g.input(0).get_any_name(): [1, 3, *size]})
            else:
                g = core.read_model(str(files[size]))
            request = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
            request.infer({0: torch.randn(1, 3, *size).numpy()})
            compiled[size] = request
            while len(compiled) > 4:
                compiled.popitem(last=False)
            del g, request
            trim()
        out.append(round(rss_mb(), 1))
        print(args.mode, "cycle", cycle + 1, "rss MB", out[-1], flush=True)
    half = len(out) // 2
    print(args.mode, "MB per compile, all cycles:", round((out[-1] - out[0]) / (8 * (len(out) - 1)), 2),
          "second half:", round((out[-1] - out[half]) / (8 * max(1, len(out) - 1 - half)), 2))


if __name__ == "__main__":
    main()
