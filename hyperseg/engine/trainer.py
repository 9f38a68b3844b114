"""The training loop: iteration-based, resumable, single-process or DDP through torchrun."""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import atomic_write_text, load_training_checkpoint, save_model
from ..data import build_dataset
from ..data.sampler import KeyedDataset, StepSampler
from ..data.transforms import TrainTransform
from ..errors import DivergedError, HypersegError, NotFoundError, OutputExistsError
from ..model import HyperSeg, create_model, list_models
from ..runtime import resolve_model
from ..runtime.torch_runtime import resolve_device
from .config import RunConfig
from .evaluate import evaluate
from .interrupt import StopRequest, TrainingInterrupted, ignore_stop_signals
from .losses import build_loss

__all__ = ["train", "resolve_device", "build_model_for"]


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


def build_model_for(cfg: RunConfig, dataset) -> HyperSeg:
    """The model a run trains: a registered architecture, or weights to fine-tune (any source
    :func:`~hyperseg.runtime.resolve_model` takes: a weights name, our checkpoint, the authors' .pth)."""
    name = cfg.model.name
    if name in list_models():
        model = create_model(name, num_classes=dataset.num_classes, pretrained_backbone=cfg.model.pretrained_backbone,
                             **cfg.model.options)
    else:
        model = resolve_model(name)
        if model.num_classes != dataset.num_classes:
            raise HypersegError(f"checkpoint {name} was trained for {model.num_classes} classes, but the "
                             f"{cfg.data.dataset} dataset has {dataset.num_classes}")
    model.meta.update(class_names=list(dataset.classes), palette=[list(c) for c in dataset.palette])
    return model


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _logged_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize  # a torn last line of a killed run: dropped with the lines after the checkpoint


class _Logger:
    """JSONL always, TensorBoard when installed and enabled; rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.csv = out_dir / "val.csv"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                pass

    def truncate_after(self, step: int) -> None:
        """Drop the lines of steps after ``step``: a resumed run repeats them."""
        if not self.enabled:
            return
        if self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            atomic_write_text(self.path, "".join(line for line in lines if _logged_step(line) <= step))
        if self.csv.exists():
            lines = self.csv.read_text().splitlines(keepends=True)
            atomic_write_text(self.csv, "".join(lines[:1] + [line for line in lines[1:]
                                                             if int(line.split(",", 1)[0]) <= step]))

    def log(self, step: int, kind: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "kind": kind, **values}) + "\n")
        if kind == "val":
            new = not self.csv.exists()
            with self.csv.open("a") as f:
                if new:
                    f.write("step,miou,pixel_acc,mean_class_acc\n")
                f.write(f"{step},{values['miou']:.6f},{values['pixel_acc']:.6f},{values['mean_class_acc']:.6f}\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.writer.add_scalar(f"{kind}/{k}", v, step)
            self.writer.flush()


# Files a run writes into train.out_dir; a new run refuses a folder holding anything else.
_STALE_TEMPS = (".last.pt.*.tmp", ".best.pt.*.tmp", ".config.yaml.*.tmp", ".resumes.jsonl.*.tmp")
# Sections a resume may change: the schedule and the run's mechanics, not what is trained on what.
_FROZEN_ON_RESUME = ("model", "data", "loss")
_DATA_FREE_ON_RESUME = ("workers", "val_batch_size", "root")


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list]:
    """``section.key -> [old, new]`` for every value that differs between two run configs."""
    changes = {}
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes[f"{section}.{key}"] = [a.get(key), b.get(key)]
    return changes


def _check_resume_config(saved: dict[str, Any], cfg: RunConfig, out_dir: Path) -> dict[str, list]:
    """The changes a resume makes to the run's config; refuses changes to the model, data or loss."""
    changes = _config_changes(saved, cfg.to_dict())
    frozen = [k for k in changes if k.split(".")[0] in _FROZEN_ON_RESUME
              and not (k.startswith("data.") and k.split(".", 1)[1] in _DATA_FREE_ON_RESUME)]
    if frozen:
        old, new = changes[frozen[0]]
        raise HypersegError(f"--resume: {out_dir} was trained with {frozen[0]}={old!r}, this command gives {new!r}; "
                            f"a resumed run keeps its model, data and loss (start a new run in another train.out_dir)")
    return changes


def _prepare_run_dir(out_dir: Path, cfg: RunConfig, resumed_step: Optional[int], changes: dict[str, list]) -> None:
    """Create or reopen the run folder, touching only files the trainer wrote (rank 0 only)."""
    if resumed_step is None:
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputExistsError(f"train.out_dir {out_dir} is a file; expected a new or empty folder")
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise OutputExistsError(f"train.out_dir {out_dir} is not empty; a new run needs a new or empty folder "
                                    f"(continue a run there with --resume)")
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return
    for pattern in _STALE_TEMPS:  # half-written files of a run that was killed mid-save
        for stale in out_dir.glob(pattern):
            stale.unlink()
    if changes:  # config.yaml stays the run's original; each resume that changed something is recorded
        with (out_dir / "resumes.jsonl").open("a") as f:
            f.write(json.dumps({"step": resumed_step, "changes": changes}) + "\n")


def train(cfg: RunConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run (or resume) a training; returns the final validation metrics and paths."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = resolve_device(cfg.train.device)
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    main = rank == 0
    out_dir = Path(cfg.train.out_dir)
    amp_dtype = _amp_dtype(cfg.train.amp, device)

    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    np.random.seed(cfg.train.seed % 2**32)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    train_set = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.train_split, classes_file=cfg.data.classes_file)
    val_set = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split, classes_file=cfg.data.classes_file) \
        if cfg.data.val_split else None
    model = build_model_for(cfg, train_set)
    mean, std = model.meta["mean"], model.meta["std"]
    model.meta.update(recipe=cfg.to_dict())

    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay)
    max_iters, power = cfg.optim.max_iters, cfg.optim.poly_power
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1 - it / max_iters) ** power)
    start, best, elapsed = 0, -1.0, 0.0
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if not resume and (last_path.exists() or best_path.exists()):
        raise OutputExistsError(f"{out_dir} already holds a run (last.pt/best.pt); continue it with --resume, "
                              f"or choose another train.out_dir")
    changes: dict[str, list] = {}
    if resume:
        if not last_path.is_file():
            raise NotFoundError(f"--resume: no checkpoint at {last_path}")
        ckpt = load_training_checkpoint(last_path)
        changes = _check_resume_config(ckpt["train_state"].get("run_config", {}), cfg, out_dir)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise HypersegError(f"--resume: {last_path} holds another architecture than this run's model "
                                f"({cfg.model.name})") from None
        state = ckpt["train_state"]
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best = state["step"], state["best_miou"]
        elapsed = float(ckpt["meta"].get("train_seconds", 0.0))
        _set_rng_state(state["rng"])
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.train.sync_bn and device.type != "cuda":
        raise HypersegError("train.sync_bn=true needs CUDA devices (torch's SyncBatchNorm has no CPU kernel); "
                            "set train.sync_bn=false: on CPU each process keeps its own BatchNorm statistics")
    if distributed and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net: nn.Module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if distributed else model
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = build_loss(cfg.loss.name, class_weights=cfg.loss.class_weights, k=cfg.loss.k,
                           threshold=cfg.loss.threshold).to(device)

    if main:
        _prepare_run_dir(out_dir, cfg, start if resume else None, changes)
    logger = _Logger(out_dir, cfg.train.tensorboard, main)
    show_progress = main and (cfg.train.progress if cfg.train.progress is not None else sys.stderr.isatty())
    if resume:
        logger.truncate_after(start)  # lines logged after the checkpoint are logged again by this run

    transform = TrainTransform(mean=mean, std=std, crop_size=cfg.data.crop_size, scale_range=cfg.data.scale_range,
                               scale_prob=cfg.data.scale_prob, hflip=cfg.data.hflip, color_jitter=cfg.data.color_jitter,
                               rotation=cfg.data.rotation, pad_only=cfg.data.pad_only)
    sampler = StepSampler(len(train_set), batch_size=cfg.data.batch_size, accum_steps=cfg.optim.accum_steps,
                          seed=cfg.train.seed, start_step=start, max_steps=max_iters, rank=rank, world_size=world)
    # Its own generator: creating the loader must not consume the global RNG that dropout uses,
    # or a resumed run would draw different dropout masks from an uninterrupted one.
    loader = DataLoader(KeyedDataset(train_set, transform, cfg.train.seed), batch_sampler=sampler,
                        num_workers=cfg.data.workers, persistent_workers=False, pin_memory=device.type == "cuda",
                        worker_init_fn=ignore_stop_signals,
                        generator=torch.Generator().manual_seed(cfg.train.seed))

    def save(step: int, metrics: Optional[dict] = None) -> None:
        nonlocal best
        if not main:
            return
        meta = {"train_seconds": elapsed + time.time() - t0, "step": step}
        is_best = metrics is not None and metrics["miou"] >= best
        if metrics is not None:
            meta.update(val_miou=metrics["miou"], val_per_class_iou=metrics["per_class_iou"])
            best = max(best, metrics["miou"])
        train_state = {"step": step, "best_miou": best, "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "rng": _rng_state(), "run_config": cfg.to_dict()}
        save_model(model, last_path, meta=meta, extra={"train_state": train_state})
        if is_best:
            save_model(model, best_path, meta=meta)

    def validate(step: int) -> Optional[dict]:
        if val_set is None:
            return None
        metrics = evaluate(model, val_set, mean=mean, std=std, device=device, batch_size=cfg.data.val_batch_size,
                           amp_dtype=amp_dtype, progress=show_progress, resize=cfg.data.val_resize)
        metrics.pop("confusion_matrix")
        logger.log(step, "val", metrics)
        if main:
            tqdm.write(f"step {step}: val mIoU {metrics['miou'] * 100:.2f}  pixel acc {metrics['pixel_acc'] * 100:.2f}")
        return metrics

    t0 = time.time()
    net.train()
    step, micro, running = start, 0, []
    bar = tqdm(total=max_iters, initial=start, disable=not show_progress, desc="train",
               dynamic_ncols=True)
    seen_t, seen_n = time.time(), 0
    metrics = None
    with StopRequest() as stop:  # Ctrl-C / SIGTERM: finish the step, save, then stop
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = micro == cfg.optim.accum_steps - 1 or not distributed
            ctx = net.no_sync() if distributed and not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits = net(images)
                loss = criterion(logits.float(), labels) / cfg.optim.accum_steps
                if not torch.isfinite(loss):
                    raise DivergedError(f"loss became {loss.item()} at step {step}; lower optim.lr or check the data")
                scaler.scale(loss).backward()
            running.append(loss.item())
            seen_n += images.shape[0] * world
            micro += 1
            if micro < cfg.optim.accum_steps:
                continue
            micro = 0
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_interval == 0 or step == max_iters:
                rate = seen_n / max(time.time() - seen_t, 1e-9)
                step_loss = torch.tensor(float(sum(running)))
                if distributed:  # log the global batch's loss, not one shard's
                    dist.all_reduce(step_loss)
                    step_loss /= world
                values = {"loss": step_loss.item(), "lr": optimizer.param_groups[0]["lr"], "images_per_s": rate}
                bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}", img_s=f"{rate:.1f}")
                logger.log(step, "train", values)
                seen_t, seen_n = time.time(), 0
            running = []
            interval = cfg.train.val_interval
            if step == max_iters or (interval > 0 and step % interval == 0):
                metrics = validate(step)
                save(step, metrics)
            elif step % cfg.train.ckpt_interval == 0:
                save(step)
            if stop.agreed(distributed) and step < max_iters:
                if step % cfg.train.ckpt_interval:
                    save(step)
                break
    bar.close()
    if stop.signal is not None and step < max_iters:
        raise TrainingInterrupted(f"stopped at step {step} of {max_iters}; {last_path} holds it. Continue with the "
                                  f"same command plus --resume")
    if step == start and start >= max_iters and main:
        tqdm.write(f"nothing to do: the run already reached optim.max_iters={max_iters}")
    if distributed:
        dist.barrier()
    return {"step": step, "best_miou": best, "last": str(last_path), "best": str(best_path), "val": metrics}
