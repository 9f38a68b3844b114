"""What a resume restores besides the weights: Adam, the poly schedule, the step, the best val mIoU,
the random streams and the training time so far."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import RunConfig

__all__ = ["TrainState", "build_optimizer", "apply_schedule", "SCHEDULE_KEYS"]

# The config keys that apply_schedule puts a resumed run on.
SCHEDULE_KEYS = ("optim.lr", "optim.max_iters", "optim.poly_power", "optim.betas", "optim.weight_decay")


def _rng_state() -> dict[str, Any]:
    """The random streams a step draws from: torch's (dropout, drop-path; CUDA's on GPUs). Augmentation
    draws from per-sample generators keyed by the seed (``data.sampler``), so it needs no state."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])  # Python and NumPy states, where a checkpoint holds them, go unused
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainState:
    """Everything a resume restores besides the weights: optimizer, LR schedule, step, best val
    mIoU, the random streams, and the training time so far."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
        self.optimizer, self.scheduler = optimizer, scheduler
        self.step, self.best_miou, self.seconds = 0, -1.0, 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "best_miou": self.best_miou, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": _rng_state()}

    def load_state_dict(self, state: dict[str, Any], seconds: float = 0.0) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.best_miou, self.seconds = int(state["step"]), float(state["best_miou"]), seconds
        _set_rng_state(state["rng"])


def build_optimizer(cfg: RunConfig, model: nn.Module) -> TrainState:
    """Adam and the per-iteration poly schedule of the paper, in a fresh :class:`TrainState`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=cfg.optim.max_iters,
                                                      power=cfg.optim.poly_power)
    return TrainState(optimizer, scheduler)


def apply_schedule(state: TrainState, cfg: RunConfig) -> None:
    """Put a resumed run on the schedule ``cfg`` gives: the poly learning rate of the current step in
    closed form (``lr * (1 - step / max_iters) ** power``), and Adam's betas and weight decay.
    PolynomialLR computes each step's rate from the last one, so without this a longer
    ``max_iters`` would continue from the old schedule's final rate of 0."""
    sched, cfg_optim = state.scheduler, cfg.optim
    sched.total_iters, sched.power = cfg_optim.max_iters, cfg_optim.poly_power
    sched.base_lrs = [cfg_optim.lr for _ in sched.base_lrs]
    rate = cfg_optim.lr * max(0.0, 1 - state.step / cfg_optim.max_iters) ** cfg_optim.poly_power
    for group in state.optimizer.param_groups:
        group.update(lr=rate, initial_lr=cfg_optim.lr, betas=tuple(cfg_optim.betas), weight_decay=cfg_optim.weight_decay)
    sched._last_lr = [rate for _ in sched.base_lrs]
