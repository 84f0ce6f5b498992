"""Optimisers and learning-rate schedules, including how a schedule continues when a resumed run
changes its length.

A schedule is a function of (step, total steps). When `--resume --amend` changes the number of
epochs (or the steps per epoch), the run continues at the step it reached on the schedule of its
new length, exactly as if it had been planned with that length from the start: the remaining steps
follow the curve a fresh run of the new length would follow. The learning rate moves to that curve's
value at once (a longer cosine sits higher at the same step); the run log and the metrics log show
it before and after. Nothing restarts: the step count, the optimizer's moments and the warm-up done
are all kept.
"""

from __future__ import annotations

import math

import torch

from cascade_cli.config import OptimConfig


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    # The fused kernel updates every tensor in one pass: on CPU about 5x faster than the default
    # per-op update, which otherwise costs as much as a small batch's forward and backward.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def apply_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> None:
    """Set the config's weight decay (and SGD momentum) on a restored optimizer: loading its state
    brings back the values it was saved with, which an amended run must not keep."""
    for group in optimizer.param_groups:
        group["weight_decay"] = cfg.weight_decay
        if cfg.name == "sgd":
            group["momentum"], group["nesterov"] = cfg.momentum, cfg.nesterov


def lr_factor(cfg: OptimConfig, step: float, total: int) -> float:
    """Multiplier of the base LR: linear warm-up from 0, then constant or half a cosine to min_lr."""
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return step / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(1, total - warmup), 1.0)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _factor(cfg: OptimConfig, total: int):
    # A lambda rather than a callable object: LambdaLR then keeps no Python object in its state_dict,
    # which stays loadable with torch.load(weights_only=True).
    return lambda i: lr_factor(cfg, i, total)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _factor(cfg, total))


def replan(scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: OptimConfig, total: int) -> None:
    """Continue at the scheduler's current step on the schedule of `total` steps (and of `cfg`, whose
    base learning rate may be amended too), from the next optimiser step on."""
    scheduler.lr_lambdas = [_factor(cfg, total) for _ in scheduler.optimizer.param_groups]
    scheduler.base_lrs = [cfg.lr for _ in scheduler.optimizer.param_groups]
    factor = lr_factor(cfg, scheduler.last_epoch, total)
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * factor


def schedule_length(cfg: OptimConfig, epochs: int, steps_per_epoch: int) -> int:
    """Scheduler steps in `epochs` epochs: one per optimiser step, or one per epoch."""
    return epochs * steps_per_epoch if cfg.schedule_unit == "step" else epochs
