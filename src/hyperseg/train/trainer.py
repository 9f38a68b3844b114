"""The training loop: iteration-based, resumable, single-process or DDP through torchrun.

A :class:`Trainer` builds a run's parts from its config (the run folder is :mod:`.run`, the resumable
state :mod:`.state`, the batches :mod:`.loader`, the logs :mod:`.logs`) and :meth:`Trainer.fit`
trains to ``optim.max_iters``.
"""
from __future__ import annotations

import contextlib
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..hub.checkpoint import save_model
from ..data import build_dataset
from ..errors import DivergedError, HypersegError
from ..model import create_model, list_models
from ..model.smp_baseline import is_smp_name
from ..device import bf16_supported, resolve_device
from ..hub.resolve import resolve_model
from .allocator import keep_freed_memory
from .config import RunConfig
from .evaluate import evaluate
from .interrupt import StopRequest, TrainingInterrupted
from .distill import DistillationLoss, Teacher, teacher_sha256
from ..process.distributed import Process, init_process
from .loader import build_loader
from .logs import RunLogger
from .losses import build_loss
from ..process.runlock import RunLock
from .run import check_resume_config, check_teacher, create_run_dir, load_last, reopen_run_dir
from .state import SCHEDULE_KEYS, TrainState, apply_schedule, build_optimizer

__all__ = ["train", "Trainer", "TrainState", "Process", "resolve_device", "build_model_for"]


def _amp_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise HypersegError("train.amp=fp16 needs a CUDA device; use bf16 on the CPU")
        return torch.float16
    raise HypersegError(f"train.amp must be off, bf16 or fp16, got {amp!r}")


def emulated_bf16_warning(amp_dtype: Optional[torch.dtype], device: torch.device) -> Optional[str]:
    """Why bf16 autocast would be slow here, or None: without native bfloat16 (AVX-512 BF16, AMX)
    oneDNN emulates it, and a CPU step takes several times longer than in float32."""
    if amp_dtype != torch.bfloat16 or bf16_supported(device):
        return None
    return (f"hyperseg train: warning: train.amp=bf16, but this {device.type} has no native bfloat16 "
            f"(AVX-512 BF16 or AMX), so autocast emulates it and every step runs several times slower than "
            f"in float32; add train.amp=off")


def build_model_for(cfg: RunConfig, dataset) -> nn.Module:
    """The model a run trains: a registered architecture, an ``smp:<Arch>`` baseline, or weights to
    fine-tune (any source :func:`~hyperseg.hub.resolve.resolve_model` takes: a weights name, our
    checkpoint, the authors' .pth)."""
    name = cfg.model.name
    if name in list_models() or is_smp_name(name):
        model = create_model(name, num_classes=dataset.num_classes, pretrained_backbone=cfg.model.pretrained_backbone,
                             **cfg.model.options)
    else:
        model = resolve_model(name)
        if model.num_classes != dataset.num_classes:
            raise HypersegError(f"checkpoint {name} was trained for {model.num_classes} classes, but the "
                             f"{cfg.data.dataset} dataset has {dataset.num_classes}")
    model.meta.update(class_names=list(dataset.classes), palette=[list(c) for c in dataset.palette])
    model.meta.pop("input_scale", None)  # the scale this run trains at, not a fine-tuned checkpoint's
    if cfg.model.input_scale != 1:
        model.meta["input_scale"] = cfg.model.input_scale
    return model


def seed_everything(cfg: RunConfig) -> None:
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)  # nothing of ours draws from these two; seeded for users' own datasets
    np.random.seed(cfg.train.seed % 2**32)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


class Trainer:
    """One run: built from a config (and its folder when resuming), trained by :meth:`fit`."""

    def __init__(self, cfg: RunConfig, *, resume: bool = False) -> None:
        self.lock = RunLock(Path(cfg.train.out_dir))
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.lock.release()  # a refused resume leaves the run free for the next attempt
            raise

    def _setup(self, cfg: RunConfig, resume: bool) -> None:
        cfg.check()  # a config built in Python has not been through load_config's checks
        self.cfg, self.proc = cfg, init_process(cfg.train.device)
        self.out_dir = Path(cfg.train.out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        self.ema_path = self.out_dir / "ema.pt"
        self.amp_dtype = _amp_dtype(cfg.train.amp, self.proc.device)
        self._configure_process()
        data = cfg.data
        self.train_set = build_dataset(data.dataset, data.root, data.train_split, classes_file=data.classes_file,
                                       drives=data.train_drives, drive_pattern=data.drive_pattern)
        self.val_set = build_dataset(data.dataset, data.root, data.val_split, classes_file=data.classes_file,
                                     drives=data.val_drives, drive_pattern=data.drive_pattern) if data.val_split else None
        self.model = build_model_for(cfg, self.train_set)
        self.model.meta.update(recipe=cfg.to_dict())
        self.state = build_optimizer(cfg, self.model)
        self.teacher_sha256 = teacher_sha256(cfg.distill.teacher)  # what a resume must find again
        if resume and self.proc.main and self.out_dir.is_dir():
            self.lock.acquire()  # before last.pt is read: two resumes of one run would both write it
        changes = self._resume() if resume else {}
        self.net = self._place_model()
        self.ema = self._make_ema(resume)
        self.scaler = torch.amp.GradScaler(self.proc.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = build_loss(cfg.loss.name, class_weights=cfg.loss.class_weights, k=cfg.loss.k,
                                    threshold=cfg.loss.threshold, lovasz_weight=cfg.loss.lovasz_weight,
                                    lovasz_stride=cfg.loss.lovasz_stride).to(self.proc.device)
        self.teacher = self._make_teacher()
        if self.proc.main:
            self._open_run_dir(resume, changes)
        self.logger = RunLogger(self.out_dir, cfg.train.tensorboard, self.proc.main)
        if resume:
            self.logger.truncate_after(self.state.step)  # lines after the checkpoint are logged again
        progress = cfg.train.progress if cfg.train.progress is not None else sys.stderr.isatty()
        self.show_progress = self.proc.main and progress
        self.loader = build_loader(cfg, self.train_set, self.model.meta, self.state.step, self.proc)
        self._started = time.time()

    # -- setup ---------------------------------------------------------------------------------

    def _configure_process(self) -> None:
        """This process's torch settings: SyncBN's device check, threads, the allocator, the seeds."""
        cfg = self.cfg
        if cfg.train.sync_bn and self.proc.device.type != "cuda":
            raise HypersegError("train.sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                                "set train.sync_bn=false: on CPU each process keeps its own BatchNorm statistics")
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.keep_freed_memory and self.proc.device.type == "cpu":
            keep_freed_memory()
        seed_everything(cfg)

    def _open_run_dir(self, resume: bool, changes: dict[str, list]) -> None:
        """Rank 0's part: the bf16 warning, then the run folder created (and locked) or reopened."""
        warning = emulated_bf16_warning(self.amp_dtype, self.proc.device)
        if warning:
            tqdm.write(warning, file=sys.stderr)
        if resume:
            reopen_run_dir(self.out_dir, self.state.step, changes)
        else:
            create_run_dir(self.out_dir, self.cfg)
            self.lock.acquire()

    def _resume(self) -> dict[str, list]:
        """Weights and train state from ``last.pt``; returns the changes this resume makes to the config."""
        ckpt = load_last(self.last_path)
        saved = ckpt["train_state"]
        changes = check_resume_config(saved.get("run_config", {}), self.cfg, self.out_dir)
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise HypersegError(f"--resume: {self.last_path} holds another architecture than this run's model "
                                f"({self.cfg.model.name})") from None
        self.state.load_state_dict(saved, float(ckpt["meta"].get("train_seconds", 0.0)))
        self._resumed_ema = saved.get("ema")
        self._resumed_ema_decay = saved.get("run_config", {}).get("train", {}).get("ema_decay")
        check_teacher(saved.get("teacher_sha256"), self.teacher_sha256, self.cfg.distill.teacher, self.out_dir)
        if any(key in changes for key in SCHEDULE_KEYS):
            apply_schedule(self.state, self.cfg)
        return changes

    def _place_model(self) -> nn.Module:
        """The model on its device and memory layout, wrapped for DDP when there are several processes,
        and compiled when ``train.compile`` asks (the training steps only: validation runs eager)."""
        model, proc = self.model, self.proc
        model.to(proc.device)
        if self.cfg.train.channels_last:
            model.to(memory_format=torch.channels_last)
        if proc.distributed:
            if self.cfg.train.sync_bn:
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = DistributedDataParallel(model, device_ids=[proc.device.index] if proc.device.type == "cuda" else None)
        return torch.compile(model) if self.cfg.train.compile else model

    def _make_ema(self, resume: bool) -> Optional[AveragedModel]:
        """With ``train.ema_decay`` > 0, the moving average of the weights (BatchNorm statistics
        included) that validation scores and ``best.pt`` / ``ema.pt`` hold; restored on resume."""
        decay = self.cfg.train.ema_decay
        saved = self._resumed_ema if resume else None
        if not decay:
            if saved is not None:  # ema.pt would stay at this step while last.pt moved on
                old = self._resumed_ema_decay
                trained = f"train.ema_decay={old}" if old else "a moving average (train.ema_decay > 0)"
                raise HypersegError(f"--resume: {self.last_path} was trained with {trained}, this command gives "
                                    f"train.ema_decay={decay}; resume with the same value, or start a new run in "
                                    f"another train.out_dir to train without the moving average")
            return None
        ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        if resume:
            if saved is None:
                raise HypersegError(f"--resume: {self.last_path} was trained without train.ema_decay; a moving "
                                    f"average cannot start mid-run (start a new run to use it)")
            ema.load_state_dict(saved)
        return ema

    def _make_teacher(self) -> Optional[Teacher]:
        """The frozen teacher of ``distill``, with the criterion turned into its distillation loss."""
        distill, meta = self.cfg.distill, self.model.meta
        if distill.teacher is None:
            return None
        teacher = Teacher(distill.teacher, class_names=list(self.train_set.classes), mean=meta["mean"], std=meta["std"],
                          device=self.proc.device, amp_dtype=self.amp_dtype)
        self.criterion = DistillationLoss(self.criterion, temperature=distill.temperature, weight=distill.weight)
        return teacher

    # -- one step, validation, saving ------------------------------------------------------------

    def forward_backward(self, images: Tensor, labels: Tensor, sync: bool) -> float:
        """Loss of one (micro-)batch, gradients accumulated; ``sync=False`` skips DDP's all-reduce."""
        device = self.proc.device
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        no_sync = self.net.no_sync() if self.proc.distributed and not sync else contextlib.nullcontext()
        with no_sync:
            with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.net(images)
            targets = (labels,) if self.teacher is None else (labels, self.teacher(images))
            loss = self.criterion(logits.float(), *targets) / self.cfg.optim.accum_steps
            if not torch.isfinite(loss):
                raise DivergedError(f"loss became {loss.item()} at step {self.state.step}; lower optim.lr or check "
                                    f"the data")
            self.scaler.scale(loss).backward()
        return loss.item()

    def optimizer_step(self) -> None:
        state = self.state
        self.scaler.step(state.optimizer)
        self.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        state.step += 1
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def validate(self) -> Optional[dict]:
        if self.val_set is None:
            return None
        meta = self.model.meta
        scored = self.ema.module if self.ema is not None else self.model  # the weights that best.pt will hold
        metrics = evaluate(scored, self.val_set, mean=meta["mean"], std=meta["std"], device=self.proc.device,
                           batch_size=self.cfg.data.val_batch_size, amp_dtype=self.amp_dtype,
                           progress=self.show_progress, resize=self.cfg.data.val_resize)
        metrics.pop("confusion_matrix")
        self.logger.log(self.state.step, "val", metrics)
        if self.proc.main:
            tqdm.write(f"step {self.state.step}: val mIoU {metrics['miou'] * 100:.2f}  "
                       f"pixel acc {metrics['pixel_acc'] * 100:.2f}")
        return metrics

    def save(self, metrics: Optional[dict] = None) -> None:
        """``last.pt`` (weights + train state), and ``best.pt`` when ``metrics`` are the best so far."""
        if not self.proc.main:
            return
        state = self.state
        meta = {"train_seconds": state.seconds + time.time() - self._started, "step": state.step}
        is_best = metrics is not None and metrics["miou"] >= state.best_miou
        if metrics is not None:
            meta.update(val_miou=metrics["miou"], val_per_class_iou=metrics["per_class_iou"])
            state.best_miou = max(state.best_miou, metrics["miou"])
        train_state = {**state.state_dict(), "run_config": self.cfg.to_dict()}
        if self.teacher_sha256 is not None:
            train_state["teacher_sha256"] = self.teacher_sha256
        if self.ema is not None:
            train_state["ema"] = self.ema.state_dict()
            save_model(self.ema.module, self.ema_path, meta=meta)  # the averaged weights, ready to use or ship
        save_model(self.model, self.last_path, meta=meta, extra={"train_state": train_state})
        if is_best:
            save_model(self.ema.module if self.ema is not None else self.model, self.best_path, meta=meta)

    def _log_step(self, losses: list[float], images_per_s: float) -> None:
        loss = torch.tensor(float(sum(losses)))
        if self.proc.distributed:  # log the global batch's loss, not one shard's
            dist.all_reduce(loss)
            loss /= self.proc.world
        lr = self.state.optimizer.param_groups[0]["lr"]
        self.logger.log(self.state.step, "train", {"loss": loss.item(), "lr": lr, "images_per_s": images_per_s})

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``optim.max_iters``; returns the last validation metrics and the checkpoint paths."""
        cfg, state, proc = self.cfg, self.state, self.proc
        max_iters, accum, start = cfg.optim.max_iters, cfg.optim.accum_steps, state.step
        self.net.train()
        bar = tqdm(total=max_iters, initial=start, disable=not self.show_progress, desc="train", dynamic_ncols=True)
        losses: list[float] = []
        seen_t, seen_n, metrics = time.time(), 0, None
        batches = iter(self.loader)
        with StopRequest() as stop, _closing_workers(batches):  # Ctrl-C / SIGTERM: finish the step, save, stop
            for images, labels in batches:
                losses.append(self.forward_backward(images, labels, sync=len(losses) == accum - 1))
                seen_n += images.shape[0] * proc.world
                if len(losses) < accum:
                    continue
                self.optimizer_step()
                bar.update(1)
                step = state.step
                if step % cfg.train.log_interval == 0 or step == max_iters:
                    rate = seen_n / max(time.time() - seen_t, 1e-9)
                    self._log_step(losses, rate)
                    bar.set_postfix(loss=f"{sum(losses):.4f}", img_s=f"{rate:.1f}")
                    seen_t, seen_n = time.time(), 0
                losses = []
                interval = cfg.train.val_interval
                if step == max_iters or (interval > 0 and step % interval == 0):
                    metrics = self.validate()
                    self.save(metrics)
                elif step % cfg.train.ckpt_interval == 0:
                    self.save()
                if stop.agreed(proc.distributed) and step < max_iters:
                    if step % cfg.train.ckpt_interval:
                        self.save()
                    break
        bar.close()
        if stop.signal is not None and state.step < max_iters:
            raise TrainingInterrupted(f"stopped at step {state.step} of {max_iters}; {self.last_path} holds it. "
                                      f"Continue with the same command plus --resume")
        if state.step == start and start >= max_iters and proc.main:
            tqdm.write(f"nothing to do: the run already reached optim.max_iters={max_iters}")
        if proc.distributed:
            dist.barrier()
        best = str(self.best_path) if self.best_path.is_file() else None  # none without validation
        return {"step": state.step, "best_miou": state.best_miou, "last": str(self.last_path),
                "best": best, "val": metrics, "rank": proc.rank}


@contextlib.contextmanager
def _closing_workers(batches: Iterator) -> Iterator[None]:
    """Stops the DataLoader's worker processes when the loop ends, also on an error. Left to garbage
    collection, an error's traceback keeps the iterator alive until exit, where multiprocessing joins
    the workers after a SIGTERM that they ignore (:func:`ignore_stop_signals`): the process hung."""
    try:
        yield
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()


def train(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) a training; returns the final validation metrics and paths."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.lock.release()
