"""``--precision auto``: the fastest precision whose accuracy stays within a tolerance of fp32, for
these weights on this CPU.

Which precision is fastest depends on the CPU, and the rule below was measured on three kinds
(docs/deployment.md, "Precision"):

- ``bf16`` only where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX). There it was the
  fastest precision of every built-in model; elsewhere bfloat16 is emulated and several times slower
  than fp32, so it is never chosen.
- ``int8`` only where the weights' record measured it, on this kind of CPU, faster than what the
  rule would otherwise take (it was slower than fp32 for the fast model on AVX-512, faster for
  ``camvid`` on AVX2), and only with calibration images at hand.
- ``fp32`` otherwise, and always on CUDA, where nothing else has been measured.

Accuracy comes from the weights' record (``metrics["precision_miou"]``, measured on the record's
validation split when the weights are packaged): a precision is eligible when its mIoU is within
:data:`MIOU_TOLERANCE` of fp32's. Weights without that evidence (a user's checkpoint) may still run
in bf16 if their labels agree with fp32's on at least :data:`MIN_AGREEMENT` of the pixels of the
bundled sample images; that agreement is measured once per weights, runtime and CPU kind and cached.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .options import OFFERED

__all__ = ["MIOU_TOLERANCE", "MIN_AGREEMENT", "CPU_KINDS", "cpu_kind", "PrecisionChoice", "choose_precision",
           "cached_agreement", "label_agreement"]

MIOU_TOLERANCE = 0.003  # a fraction: 0.3 mIoU points below fp32 at most
# Label agreement with fp32, on the sample images, that a checkpoint without measurements needs for
# bf16. On the four built-in models bf16 agreed on 99.85-99.91 % of the pixels with val mIoU within
# 0.06 of fp32, and int8 on 99.44-99.69 % with val mIoU within 0.13 (scripts/package_weights.py
# --measure-only): at 99.5 % a checkpoint is as close to fp32 as those whose accuracy stayed well
# inside 0.3.
MIN_AGREEMENT = 0.995

# what decides the fastest precision, and how each kind is described next to a measurement
CPU_KINDS = {
    "bf16": "native bf16 (AVX-512 BF16 or AMX)",
    "vnni": "AVX-512 or AVX VNNI, no native bf16",
    "avx2": "AVX2, no VNNI",
    "basic": "neither AVX2 nor native bf16",
}


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=None)
def cpu_kind() -> str:
    """This CPU's kind (a key of :data:`CPU_KINDS`): what decides which precision is fastest."""
    import torch

    flags = _cpu_flags()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if flags & {"avx512_bf16", "amx_bf16"} or (not flags and check is not None and check()):
        return "bf16"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    capability = torch.backends.cpu.get_cpu_capability()
    if "avx2" in flags or capability in ("AVX2", "AVX512"):
        return "avx2"
    return "basic"


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``auto`` took, and why, in words for one line of output."""

    precision: str
    reason: str

    def line(self, runtime: str) -> str:
        return f"precision auto: {runtime} {self.precision} ({self.reason})"


def _points(miou: float) -> str:
    return f"{100 * miou:.2f}"


def choose_precision(meta: dict[str, Any], runtime: str, *, device_type: str = "cpu", cpu: Optional[str] = None,
                     has_calibration: bool = False,
                     agreement: Optional[Callable[[str], float]] = None) -> PrecisionChoice:
    """The precision ``auto`` runs ``runtime`` at, for a model whose ``meta`` may carry its record's
    evidence (``precision_miou``, ``latency_ms`` per CPU kind). ``agreement(precision)`` measures
    label agreement with fp32 for weights without evidence (called only when it could change the
    answer). Deterministic for the same inputs."""
    if device_type != "cpu":
        return PrecisionChoice("fp32", f"on {device_type} only fp32 has been measured")
    cpu = cpu or cpu_kind()
    candidates = [p for p in OFFERED.get(runtime, ("fp32",)) if p != "bf16" or cpu == "bf16"]
    miou = meta.get("precision_miou") or {}
    base = miou.get("fp32")
    latency = (meta.get("latency_ms") or {}).get(cpu) or {}

    def faster(p: str, than: str) -> bool:
        a, b = latency.get(f"{runtime} {p}"), latency.get(f"{runtime} {than}")
        return a is not None and b is not None and a < b

    if base is not None:  # the record measured each precision's accuracy
        eligible = [p for p in candidates if p == "fp32" or (miou.get(p) is not None
                                                             and miou[p] >= base - MIOU_TOLERANCE)]
        if "int8" in eligible and not has_calibration:
            eligible.remove("int8")
        rule = "bf16" if "bf16" in eligible else "fp32"
        pick = "int8" if "int8" in eligible and faster("int8", rule) else rule
        if pick == "fp32":
            why = ("no native bf16 on this CPU" if cpu != "bf16" and "bf16" in OFFERED.get(runtime, ()) else
                   "no lower precision measured within 0.3 mIoU and faster here")
            return PrecisionChoice("fp32", why)
        speed = ("native bf16 on this CPU" if pick == "bf16" else
                 f"measured faster than {rule} on {CPU_KINDS[cpu]} CPUs")
        return PrecisionChoice(pick, f"{speed}; val mIoU {_points(miou[pick])} vs {_points(base)} in fp32")
    # no record: bf16 only, and only if its labels agree with fp32's
    if "bf16" in candidates and agreement is not None:
        share = agreement("bf16")
        if share >= MIN_AGREEMENT:
            return PrecisionChoice("bf16", f"native bf16 on this CPU; {100 * share:.2f} % of pixels agree with fp32 "
                                           f"on the sample images")
        return PrecisionChoice("fp32", f"bf16 agreed with fp32 on only {100 * share:.2f} % of pixels "
                                       f"(at least {100 * MIN_AGREEMENT:.1f} % needed)")
    if cpu != "bf16" and "bf16" in OFFERED.get(runtime, ()):
        return PrecisionChoice("fp32", "no native bf16 on this CPU")
    return PrecisionChoice("fp32", "the weights carry no accuracy measurements of other precisions")


def cached_agreement(cache: Path, key: dict[str, Any], measure: Callable[[], float]) -> float:
    """``measure()``, remembered in ``cache`` under ``key`` across processes. An entry that does not
    read back as a share in [0, 1] for the same key is measured again and replaced."""
    from ..hub.checkpoint import atomic_write_text

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = cache / f"agreement-{digest}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key, default=str)) and 0 <= float(stored["agreement"]) <= 1:
            return float(stored["agreement"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass  # missing or damaged: measured again below
    share = float(measure())
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "agreement": share}, default=str) + os.linesep)
    return share


def label_agreement(reference: Any, other: Any, folder: Path) -> float:
    """The share of pixels on which runtime ``other`` labels the images in ``folder`` as
    ``reference`` does (both runtimes of the same weights; each image seen at the weights' input
    scale and labelled at its own size, by each runtime's own labels path, as predict does)."""
    import torch

    from ..data.io import IMAGE_EXTENSIONS, read_image
    from ..data.transforms import normalize
    from .base import to_seen_size

    same = total = 0
    for path in sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        x = normalize(torch.from_numpy(read_image(path).copy()).permute(2, 0, 1), reference.mean, reference.std)[None]
        size = (int(x.shape[-2]), int(x.shape[-1]))
        x = to_seen_size(reference, x)
        with torch.inference_mode():
            a = reference.labels(x, size)
            b = other.labels(x, size)
        same += int((a == b).sum())
        total += a.numel()
    if not total:
        raise ValueError(f"{folder}: no images to compare the precisions on")
    return same / total
