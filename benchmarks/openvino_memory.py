"""Does OpenVINO itself grow a process's memory per compiled size? (serve's remaining growth, issue 23)

    python benchmarks/openvino_memory.py cachedir   # as hyperseg's runtime compiles: CACHE_DIR set
    python benchmarks/openvino_memory.py nocache    # the same without OpenVINO's model cache

Exports a small HyperSeg at 8 static sizes first, then for 5 cycles reads, compiles and runs each
file, keeping the 4 most recent compiled models (as a runtime does), with gc + malloc_trim after
each, and prints the resident memory after every cycle. No torch export happens during the loop.
"""
import gc, ctypes, sys, tempfile, os, collections
cache = tempfile.mkdtemp()
import torch, hyperseg
from hyperseg.runtime import export_onnx
import openvino as ov
def rss():
    for l in open("/proc/self/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024
m = hyperseg.create_model("hyperseg", num_classes=11, encoder_name="tf_efficientnet_lite0", encoder_reductions=[0.25]*5, decoder_kernel_sizes=[1,1,1,3], decoder_channels=[64,32,16,16], weight_groups=[64,32,32,16]).eval()
sizes = [(384,512),(320,448),(448,576),(256,320),(512,640),(192,256),(320,704),(512,384)]
files = {s: export_onnx(m, os.path.join(cache, f"m{s[0]}x{s[1]}.onnx"), size=s) for s in sizes}
torch._dynamo.reset(); gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
mode = sys.argv[1]
core = ov.Core()
if mode == "cachedir":
    core.set_property({"CACHE_DIR": os.path.join(cache, "ov")})
engines = collections.OrderedDict(); out = []
for cycle in range(5):
    for s in sizes:
        g = core.read_model(str(files[s]))
        req = core.compile_model(g, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        req.infer({0: torch.randn(1,3,*s).numpy()})
        engines[s] = req
        while len(engines) > 4: engines.popitem(last=False)
        del g, req
        gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
    out.append(round(rss(), 1)); print(mode, cycle, out[-1], flush=True)
print(mode, "per compile MB", round((out[-1]-out[0])/32, 2))
