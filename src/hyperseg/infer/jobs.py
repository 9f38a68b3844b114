"""A ``predict`` job over many inputs: sharded over torchrun processes, resumable, summarised once.

Every rank plans the outputs of the whole input list (names depend on all of it), agrees with the
others on whether ``--out`` may be written (see :mod:`.predict_manifest`), then segments its share
(``inputs[rank::world]``) minus the inputs already finished. Outputs do not depend on which rank
made them, so a 2-process run writes the same bytes as a 1-process run.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

import torch.distributed as dist

from ..hub.checkpoint import refuse_replacing_inputs
from ..errors import HypersegError, OutputExistsError
from ..process.distributed import Process, gather, shard
from .predictor import Predictor
from .manifest import DoneLog, PredictManifest, remove_stale_temporaries

__all__ = ["PredictSummary", "predict_job", "job_options"]

T = TypeVar("T")


@dataclass
class PredictSummary:
    """What a job did, over all ranks (``written`` and ``failures`` are this rank's own)."""

    inputs: int
    segmented: int
    skipped: int
    failed: int
    seconds: float
    world: int
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # every rank's, on every rank

    @property
    def per_second(self) -> float:
        return self.segmented / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.segmented} inputs segmented, {self.skipped} already done, {self.failed} failed, "
                f"{self.per_second:.2f} inputs/s over {self.world} process{'es' if self.world > 1 else ''} "
                f"({self.seconds:.1f} s)")


def _model_identity(source: Any) -> Any:
    """How the manifest names the model: a file by its absolute path and SHA-256, anything else by name."""
    if isinstance(source, (str, Path)) and Path(source).expanduser().is_file():
        path = Path(source).expanduser().resolve()
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return {"file": str(path), "sha256": h.hexdigest()}
    return source if isinstance(source, str) else type(source).__name__


def job_options(predictor: Predictor, model: Any, *, alpha: float, legend: Optional[bool], video_labels: bool,
                batch_size: int, calibration: Optional[str] = None) -> dict[str, Any]:
    """Everything that decides the bytes of the outputs, as the manifest records it."""
    return {"model": _model_identity(model), "runtime": predictor.runtime.name,
            "precision": predictor.runtime.precision, "flip": predictor.flip, "scales": list(predictor.scales),
            "window": list(predictor.window) if predictor.window else None, "max_size": predictor.max_size,
            "alpha": alpha, "legend": legend, "video_labels": video_labels, "batch_size": batch_size,
            "calibration": os.path.abspath(calibration) if calibration else None}


def _agreed(fn: Callable[[], T], proc: Process) -> T:
    """``fn()`` on every rank; if it raised a HypersegError on any rank, every rank raises the
    first rank's error (so none waits for the others at the next collective)."""
    try:
        result, error = fn(), None
    except HypersegError as exc:
        result, error = None, exc
    errors = [e for e in gather(error, proc) if e is not None]
    if errors:
        raise errors[0]
    return result


def predict_job(predictor: Predictor, files: Sequence[Path], out: Union[str, Path], *, options: dict[str, Any],
                proc: Process, resume: bool = False, overwrite: bool = False, alpha: float = 0.5,
                legend: Optional[bool] = None, video_labels: bool = False, batch_size: int = 1,
                overlap: bool = True, progress: bool = False) -> PredictSummary:
    """Segment this rank's share of ``files`` into ``out``; see the module's docstring."""
    out = Path(out)
    files = list(files)
    plan = predictor.output_plan(files, out)
    planned = [target for targets in plan.values() for target in targets]
    manifest = PredictManifest(out, options, files)

    def check() -> str:
        refuse_replacing_inputs(planned, files, "--out")
        return manifest.check(planned, resume=resume, overwrite=overwrite)

    mode = _agreed(check, proc)
    if proc.distributed:
        dist.barrier()  # every rank has read the old manifest before rank 0 replaces it

    def begin() -> None:
        if proc.main:
            manifest.start(mode)
            if mode == "resume":
                remove_stale_temporaries(out, planned)

    _agreed(begin, proc)
    mine = shard(files, proc)
    todo = mine if mode != "resume" else [p for p in mine if not all(t.exists() for t in plan[p])]
    failures: list[tuple[Path, str]] = []
    log = DoneLog(out, proc.rank)
    start = time.perf_counter()
    written: list[Path] = []

    def work() -> None:
        written.extend(predictor.predict_files(
            files, out, alpha=alpha, progress=progress and proc.main, video_labels=video_labels, legend=legend,
            failures=failures, todo=todo, on_done=log.add, batch_size=batch_size, overlap=overlap))

    try:
        _agreed(work, proc)
    finally:
        log.close()
    seconds = time.perf_counter() - start
    counts = gather({"segmented": len(todo) - len(failures), "skipped": len(mine) - len(todo),
                     "failures": [(str(p), m) for p, m in failures], "seconds": seconds}, proc)
    every_failure = [f for c in counts for f in c["failures"]]
    return PredictSummary(inputs=len(files), segmented=sum(c["segmented"] for c in counts),
                          skipped=sum(c["skipped"] for c in counts), failed=len(every_failure),
                          seconds=max(c["seconds"] for c in counts), world=proc.world, written=written,
                          failures=every_failure)


def check_output_folder(out: Union[str, Path]) -> Path:
    """``--out`` must be a folder (or not exist yet)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file; expected a folder for the outputs")
    return out
