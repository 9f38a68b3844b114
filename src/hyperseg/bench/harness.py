"""Latency benchmark in the paper's protocol: batch 1, uint8 image in host memory -> label map in host memory.

Candidates (runtime x precision) are warmed up, then timed in interleaved rounds whose order
alternates, so that drift of the machine (turbo, other load) hits all of them alike. The model
alone (normalised tensor in, logits out) is timed the same way, on the tensor the end-to-end path
feeds the network (the image brought down to ``max_size``, then resized by the model's input scale).
On CUDA, times include the upload, synchronisation and download.

A registered architecture name is timed with random weights, which is fine for speed; the report
says so, since its labels mean nothing.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from ..data.io import read_image
from ..data.transforms import normalize
from ..errors import HypersegError, ResourceError
from ..hub.resolve import is_untrained_architecture, resolve_model
from ..runtime.inference import limited_size, model_input_size, predict_logits
from ..runtime.options import RuntimeOptions
from ..infer.predictor import DEFAULT_MAX_SIZE, Predictor

__all__ = ["benchmark", "machine_info", "format_report", "interleaved", "model_input"]

_ASSETS = Path(__file__).resolve().parents[1] / "assets"


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "onnxruntime", "openvino", "timm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "versions": versions}


def _resized(img: np.ndarray, size: Sequence[int], resample: int = Image.BILINEAR) -> np.ndarray:
    if tuple(img.shape[:2]) == tuple(size):
        return img
    return np.asarray(Image.fromarray(img).resize((int(size[1]), int(size[0])), resample))


def _image(path: Optional[Union[str, Path]], size: tuple[int, int]) -> np.ndarray:
    """The benchmark's input: a real image (default: the bundled CamVid sample) resized to ``size``."""
    return _resized(read_image(path or _ASSETS / "camvid_sample_1.png"), size)


def model_input(predictor: Predictor, img: np.ndarray) -> torch.Tensor:
    """The normalised batch the predictor's network is run on for ``img``: the image brought down to
    the predictor's ``max_size`` and resized by the model's input scale, as :meth:`Predictor.segment` does."""
    seen = model_input_size(predictor.runtime, limited_size(img.shape[:2], predictor.max_size))
    return predictor.preprocess(_resized(img, seen)).to(predictor.device)


def _stats(times: Sequence[float]) -> dict[str, float]:
    ms = sorted(t * 1e3 for t in times)
    return {"median": statistics.median(ms), "min": ms[0], "p90": ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))]}


def interleaved(fns: Sequence[Callable[[], Any]], rounds: int, sync: Callable[[], None] = lambda: None) -> list[list[float]]:
    """Seconds per call of each of ``fns``, ``rounds`` times, the order alternating between rounds so
    that drift of the machine hits every candidate alike; ``sync`` waits for the device after a call."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            start = time.perf_counter()
            fns[i]()
            sync()
            times[i].append(time.perf_counter() - start)
    return times


def _eager_reference(predictor: Predictor, img: np.ndarray) -> Callable[[], np.ndarray]:
    """The "eager" reference end to end, with none of a runtime's preparation, so that the ratios show
    what the runtimes buy: the model as built, ``normalize`` from the data transforms and ``argmax(1)``;
    an image over the predictor's ``max_size`` is segmented at that size, like the other candidates do."""
    small = _resized(img, limited_size(img.shape[:2], predictor.max_size))

    def run() -> np.ndarray:
        x = normalize(torch.from_numpy(np.array(small)).permute(2, 0, 1), predictor.mean, predictor.std).unsqueeze(0)
        with torch.no_grad():
            logits = predict_logits(predictor.runtime.model, x.to(predictor.device))
        return _resized(logits.argmax(1)[0].to(torch.uint8).cpu().numpy(), img.shape[:2], Image.NEAREST)
    return run


def benchmark(source: Union[str, Path, torch.nn.Module], *, size: Sequence[int] = (360, 480),
              candidates: Sequence[tuple[str, str]] = (("eager", "fp32"), ("torch", "fp32")), rounds: int = 15,
              warmup: int = 3, image: Optional[Union[str, Path]] = None, device: str = "auto",
              calibration: Optional[str] = None, progress: Optional[Callable[[str], None]] = None,
              max_size: Optional[int] = DEFAULT_MAX_SIZE) -> dict[str, Any]:
    """Time every (runtime, precision) candidate on one image; the first one is the reference for ratios.

    ``max_size``: an image whose longer side is larger is segmented at that size, end to end and
    model only alike, as :class:`~hyperseg.infer.predictor.Predictor` does (``None``: full size).
    """
    size = (int(size[0]), int(size[1]))
    if rounds < 1 or warmup < 0:
        raise HypersegError(f"--rounds {rounds} / --warmup {warmup}: expected rounds >= 1 and warmup >= 0")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 32):
        raise HypersegError(f"--max-size {max_size!r}: expected a number of pixels >= 32, or no limit "
                            f"(0 on the command line, None in Python)")
    # every name checked before anything loads; a valid combination this machine cannot run is skipped below
    plans = [RuntimeOptions(runtime=runtime, precision=precision, device=device, calibration=calibration)
             for runtime, precision in candidates]
    img = _image(image, size)
    model = source
    untrained = is_untrained_architecture(source)
    if untrained and progress:
        progress(f"note: {source} is an architecture without weights: timed with random weights, "
                 f"so its labels mean nothing")
    if not str(model).lower().endswith(".onnx"):
        # once: every candidate runs the same weights; random ones are fine for timing
        model = resolve_model(model, allow_untrained=True)
    predictors: list[Predictor] = []
    entries: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for options in plans:
        runtime, precision = options.runtime, options.precision
        start = time.perf_counter()
        try:
            predictor = Predictor(model, options=options, max_size=max_size)
            labels = predictor(img)  # converts (and caches) on first use
        except ResourceError:
            raise  # the machine, not the combination: every other one would fail alike
        except HypersegError as exc:  # a combination this machine or runtime does not offer
            skipped.append({"runtime": runtime, "precision": precision, "reason": str(exc)})
            if progress:
                progress(f"skipped: {runtime} {precision}: {exc}")
            continue
        setup = time.perf_counter() - start
        predictors.append(predictor)
        choice = predictor.runtime.precision_choice
        entries.append({"runtime": predictor.runtime.name, "requested_runtime": runtime,
                        "precision": predictor.runtime.precision, "requested_precision": precision,
                        "precision_reason": getattr(choice, "reason", None),
                        "setup_s": round(setup, 3), "conversion_s": round(predictor.runtime.conversion_seconds, 3),
                        "labels": labels})
        if progress:
            progress(f"ready: {predictor.runtime.statement()} ({setup:.1f} s to load/convert)")
    if not predictors:
        raise HypersegError("none of the requested runtime/precision combinations can run here: "
                            + "; ".join(s["reason"] for s in skipped))
    sync = torch.cuda.synchronize if any(p.device.type == "cuda" for p in predictors) else (lambda: None)
    inputs = [model_input(p, img) for p in predictors]
    end_to_end = [_eager_reference(p, img) if p.runtime.name == "eager" else (lambda p=p: p(img)) for p in predictors]
    model_only = [lambda p=p, x=x: p.runtime(x) for p, x in zip(predictors, inputs)]
    for fns in (end_to_end, model_only):
        for _ in range(warmup):
            for fn in fns:
                fn()
        sync()
    e2e_times = interleaved(end_to_end, rounds, sync)
    model_times = interleaved(model_only, rounds, sync)
    reference = entries[0]["labels"]
    for entry, e2e, alone in zip(entries, e2e_times, model_times):
        labels = entry.pop("labels")
        entry["end_to_end_ms"] = _stats(e2e)
        entry["model_ms"] = _stats(alone)
        entry["fps"] = 1e3 / entry["end_to_end_ms"]["median"]
        entry["ratio"] = entry["end_to_end_ms"]["median"] / entries[0]["end_to_end_ms"]["median"]
        entry["label_agreement"] = float((labels == reference).mean())
    return {"model": str(source) if isinstance(source, (str, Path)) else type(source).__name__,
            "size": list(size), "max_size": max_size, "batch": 1, "rounds": rounds, "warmup": warmup,
            "untrained": untrained, "machine": machine_info(), "entries": entries, "skipped": skipped}


def _limited(result: dict[str, Any]) -> str:
    """Where the image was segmented smaller than its size, the size it was segmented at."""
    h, w = limited_size(result["size"], result.get("max_size"))
    return "" if [h, w] == list(result["size"]) else f" (segmented at {w}x{h}: --max-size {result['max_size']})"


def format_report(result: dict[str, Any]) -> str:
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [f"machine: {m['cpu']} ({m['machine']}, {m['cores']} cores, {m['torch_threads']} torch threads"
             f"{', ' + m['gpu'] if m['gpu'] else ''}); {versions}",
             f"{result['model']} at {result['size'][1]}x{result['size'][0]}{_limited(result)}, batch 1, "
             f"uint8 image -> label map, median of {result['rounds']} interleaved rounds",
             f"  {'runtime':<12} {'precision':<9} {'median':>9} {'min':>9} {'p90':>9} {'FPS':>7} {'ratio':>7} "
             f"{'model only':>11} {'labels =':>9}"]
    for e in result["entries"]:
        t = e["end_to_end_ms"]
        precision = e["precision"] + ("*" if e.get("precision_reason") else "")
        lines.append(f"  {e['runtime']:<12} {precision:<9} {t['median']:7.1f}ms {t['min']:7.1f}ms {t['p90']:7.1f}ms "
                     f"{e['fps']:7.1f} {e['ratio']:6.2f}x {e['model_ms']['median']:9.1f}ms {e['label_agreement'] * 100:8.2f}%")
    for e in result["entries"]:
        if e.get("precision_reason"):
            lines.append(f"  * {e['runtime']} {e['precision']}: chosen by --precision auto ({e['precision_reason']})")
    if result.get("untrained"):
        lines.append(f"  {result['model']} is an architecture without weights: these are the times of random "
                     f"weights (the same as trained ones'), and its labels mean nothing")
    return "\n".join(lines)
