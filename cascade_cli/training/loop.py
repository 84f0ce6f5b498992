"""The epoch loop shared by pretraining and finetuning: one loop, any objective.

`fit` gives every stage the same guarantees: seeded data order, per-epoch checkpoints written
atomically, model selection on a validation split carved from the training split (never on test),
and exact resume. Every random draw is a function of (seed, epoch) except dropout, whose global RNG
state is saved with the trainer state, so 2 + 2 resumed epochs equal 4 straight ones bit for bit.
A resume that amends the config (run_dir.open_run) continues at the step it reached on the
schedule of its new length (training/optim.py) and writes the change into the metrics log.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from cascade_cli.checkpoint import load_checkpoint, load_trainer_state, save_checkpoint, save_trainer_state
from cascade_cli.config import Config, OptimConfig
from cascade_cli.data.format import PreparedDataset
from cascade_cli.data.pipeline import Batch, ClipDataset, collate_clips
from cascade_cli.data.sampler import LengthBucketSampler, item_lengths
from cascade_cli.data.splits import Splits
from cascade_cli.errors import UserError
from cascade_cli.progress import Reporter
from cascade_cli.runtime import choose_precision
from cascade_cli.training.distributed import Dist, barrier, sum_across
from cascade_cli.training.fast_dropout import use_fast_dropout
from cascade_cli.training.objectives import Objective
from cascade_cli.training.optim import apply_hyperparameters, build_optimizer, build_scheduler, replan, schedule_length
from cascade_cli.training.records import RunRecords, keep_epoch_checkpoint, require_tensorboard
from cascade_cli.training.run_dir import RunState, trainer_state_path

LAST_EMA = "last_ema.safetensors"  # the moving average of the last epoch's weights, with stage ema > 0


@dataclass
class StageSetup:
    cfg: Config
    run: RunState | None  # set once the run directory is open
    model: torch.nn.Module
    objective: Objective
    splits: Splits
    epochs: int
    batch_size: int
    optim: OptimConfig
    select: str  # "last" or "val"
    meta: dict


@dataclass
class Selection:
    """Which epoch is the selected one, and whether validation has stopped improving (patience).

    Validation splits are small (62 Penn Action clips, 51 N-UCLA), so top-1 takes few values and
    epochs often tie; a tie goes to the lower validation loss (the objective's tiebreak), not to
    whichever epoch came first."""

    select: str  # "val": the best validation score; "last": the latest epoch
    higher_is_better: bool
    patience: int  # epochs without a better validation score before the stage stops; 0 never
    best_epoch: int = 0  # of the selected checkpoint
    best_score: float | None = None  # its validation score, when select is val
    score_best: float | None = None  # the best validation score so far, whatever select says
    score_best_epoch: int = 0
    score_best_tiebreak: float | None = None  # the tiebreak (lower is better) of that epoch

    def update(self, epoch: int, score: float | None, tiebreak: float | None = None) -> bool:
        """Record an epoch's validation score (None without validation); True if it is now selected."""
        better = score is not None and (self.score_best is None or (
            score > self.score_best if self.higher_is_better else score < self.score_best) or (
            score == self.score_best and None not in (tiebreak, self.score_best_tiebreak)
            and tiebreak < self.score_best_tiebreak))
        if better:
            self.score_best, self.score_best_epoch, self.score_best_tiebreak = score, epoch, tiebreak
        selected = self.select == "last" or better
        if selected:
            self.best_epoch = epoch
            self.best_score = score if self.select == "val" else self.best_score
        return selected

    def exhausted(self, epoch: int) -> bool:
        return self.patience > 0 and self.score_best is not None and epoch - self.score_best_epoch >= self.patience

    def state(self) -> dict:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "score_best": self.score_best,
                "score_best_epoch": self.score_best_epoch, "score_best_tiebreak": self.score_best_tiebreak}

    def restore(self, state: dict) -> None:
        self.best_score, self.best_epoch = state["best_score"], state["best_epoch"]
        # Saved before patience existed: the selection score was the only one tracked.
        self.score_best = state.get("score_best", state["best_score"])
        self.score_best_epoch = state.get("score_best_epoch", state["best_epoch"])
        # Saved before ties were broken: a tie keeps the earlier epoch, as it did then.
        self.score_best_tiebreak = state.get("score_best_tiebreak")


def make_loader(ds: PreparedDataset, indices: np.ndarray, cfg: Config, *, train: bool, batch_size: int,
                epoch: int = 0, ctx: Dist = Dist(), pin_memory: bool = False, frame_budget: int = 0) -> DataLoader:
    """Batches of `batch_size` items (the global batch; each rank loads its share), or in training
    cut by `frame_budget` frames (see frame_budget), in a seeded order for training and, with
    bucketing, of similar lengths so little compute goes to padding."""
    # Validation selects on each clip's plain view: test-time flips (data.eval_flip) are for evaluation.
    items = ClipDataset(ds, indices, cfg.data if train else replace(cfg.data, eval_flip=False), train=train,
                        seed=cfg.seed)
    items.set_epoch(epoch)
    sampler = LengthBucketSampler(item_lengths(items), batch_size, seed=cfg.seed,
                                  max_frames_per_batch=frame_budget if train else 0,
                                  rank=ctx.rank, world_size=ctx.world_size, shuffle=train,
                                  bucket=cfg.data.bucketing)
    sampler.set_epoch(epoch)
    return DataLoader(items, batch_sampler=sampler, collate_fn=collate_clips, num_workers=cfg.workers,
                      pin_memory=pin_memory)


def frame_budget(setting: int, lengths: np.ndarray, batch_size: int, frames: int,
                 device: torch.device) -> tuple[int, str]:
    """Frames per training batch (0: batches of batch_size clips) for config key
    data.max_frames_per_batch = `setting`, given the training clips' own `lengths` and data.frames, and
    how it was chosen, for the run log. Auto (-1) caps batches on CPU only, where a batch of long
    clips outgrows the caches: its attention weights (clips x heads x frames^2) cost more per clip
    than in small batches. The cap is batch_size x the mean length, so an epoch keeps about its
    number of steps, and the recipe's learning rate and schedule stay as tuned."""
    if setting >= 0:
        return setting, (f"up to {setting} frames" if setting else f"{batch_size} clips") + " per batch"
    if frames > 0 or device.type != "cpu":
        return 0, f"{batch_size} clips per batch (data.max_frames_per_batch=-1, auto: " + (
            f"every clip has data.frames={frames} frames)" if frames > 0 else f"no cap on {device.type})")
    mean = float(np.mean(lengths))
    budget = max(1, round(batch_size * mean))
    return budget, (f"up to {budget} frames per batch (data.max_frames_per_batch=-1, auto on cpu: {batch_size} "
                    f"clips x {mean:.1f} mean frames; 0 batches {batch_size} clips of any length)")


def _micro_batches(batch: Batch, parts: int) -> list[Batch]:
    """Split a rank's batch for gradient accumulation (padding stays masked, so splitting is exact)."""
    if parts == 1:
        return [batch]
    return [Batch(*chunk) for chunk in zip(*(t.tensor_split(parts) for t in batch)) if len(chunk[2])]


def check_inputs(setup: StageSetup, ctx: Dist, reporter: Reporter) -> StageSetup:
    """What can be known wrong about a stage's inputs, checked before anything is written. A stage
    without validation clips keeps its last epoch, and says so."""
    name, splits, cfg = setup.objective.name, setup.splits, setup.cfg
    splits.dataset.check_before_use()
    if len(splits.train) == 0:
        raise UserError(f"{splits.dataset.path}: the training split of protocol '{splits.protocol}' is empty")
    if setup.batch_size < ctx.world_size * cfg.accumulate:
        raise UserError(f"{name}.batch_size={setup.batch_size} is the global batch: it must be at least "
                        f"processes x accumulate = {ctx.world_size * cfg.accumulate}")
    if splits.unvalidated:
        reporter.warn(f"{len(splits.unvalidated)} class(es) have too few training clips to hold one out for "
                      f"validation, so they stay in training and are not validated: "
                      f"{', '.join(splits.unvalidated_names())} (data.val_fraction={cfg.data.val_fraction})")
    stage_cfg = getattr(cfg, name)
    if stage_cfg.patience and len(splits.val) == 0:
        raise UserError(f"config key '{name}.patience': early stopping watches the validation split, and this "
                        "run has none; set data.val_fraction > 0 or patience=0")
    if cfg.log.tensorboard:
        require_tensorboard()
    if setup.select == "val" and len(splits.val) == 0:
        why = ("data.val_fraction is 0" if cfg.data.val_fraction == 0 else
               "no class has enough training clips to hold one out")
        reporter.warn(f"no validation split ({why}): {name} keeps its last epoch as the selected checkpoint")
        setup = replace(setup, select="last")
    make_loader(splits.dataset, splits.train, cfg, train=True, batch_size=setup.batch_size, ctx=ctx)
    return setup


def _amended_total(setup: StageSetup, state: dict, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> int:
    """Schedule length of a resumed run whose config was amended: the steps done plus those of the
    epochs now left. The amended optimiser settings are applied to the restored optimizer."""
    apply_hyperparameters(optimizer, setup.optim)
    left = schedule_length(setup.optim, max(setup.epochs - state["epoch"], 0), steps_per_epoch)
    return state["scheduler"]["last_epoch"] + left


def fit(setup: StageSetup, device: torch.device, reporter: Reporter, ctx: Dist = Dist()) -> Path:
    cfg, model, objective = setup.cfg, setup.model, setup.objective
    run_dir, resume = setup.run.path, setup.run.resumable
    ckpt_dir = run_dir / "checkpoints"
    ds = setup.splits.dataset

    if cfg.fast_cpu_dropout and device.type == "cpu":
        use_fast_dropout(model)  # same parameters and names; only the CPU training-time masks change
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, setup.optim)
    pin = device.type == "cuda"
    budget, batching = frame_budget(cfg.data.max_frames_per_batch, ds.lengths[setup.splits.train], setup.batch_size,
                                    cfg.data.frames, device)
    reporter.info(f"batches: {batching}")
    steps_per_epoch = len(make_loader(ds, setup.splits.train, cfg, train=True, batch_size=setup.batch_size,
                                      epoch=1, ctx=ctx, frame_budget=budget))
    total = schedule_length(setup.optim, setup.epochs, steps_per_epoch)
    precision = choose_precision(cfg.amp, device)
    if precision.warning:
        reporter.warn(precision.warning)
    reporter.info(f"precision: {precision.name}" + (" autocast" if precision.dtype else "")
                  + f" on {device.type} ({precision.reason})")
    amp_dtype = precision.dtype
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cuda" and cfg.data.frames > 0:
        torch.backends.cudnn.benchmark = True  # fixed shapes: tuning once pays off

    stage_cfg = getattr(cfg, objective.name)
    selection = Selection(setup.select, objective.higher_is_better, stage_cfg.patience)
    # The moving average of the weights (stage ema) is what validation selects and checkpoints hold.
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(stage_cfg.ema), use_buffers=True)
           if stage_cfg.ema > 0 else None)
    evaluated = model if ema is None else ema.module
    start_epoch, elapsed, stopped = 1, 0.0, None
    lr_before = optimizer.param_groups[0]["lr"]
    scheduler = build_scheduler(optimizer, setup.optim, total)
    if resume:
        state = load_trainer_state(trainer_state_path(run_dir))
        weights = load_checkpoint(ckpt_dir / "last.safetensors")
        if weights.meta.get("epoch") != state["epoch"]:
            raise UserError(f"{ckpt_dir}: last.safetensors (epoch {weights.meta.get('epoch')}) and "
                            f"trainer_state.pt (epoch {state['epoch']}) disagree; the run was interrupted "
                            "while saving and cannot resume exactly")
        model.load_state_dict(weights.state_dict)
        if ema is not None:
            ema.module.load_state_dict(load_checkpoint(ckpt_dir / LAST_EMA).state_dict)
            ema.n_averaged.fill_(1)  # averaging continues from the saved average
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        lr_before = optimizer.param_groups[0]["lr"]
        total = state.get("schedule_total", total)  # as saved, e.g. by an amended session
        if setup.run.amendment is not None:
            total = _amended_total(setup, state, optimizer, steps_per_epoch)
        replan(scheduler, setup.optim, total)
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start_epoch, elapsed = state["epoch"] + 1, state.get("elapsed_s", 0.0)
        selection.restore(state)
        # A stage that stopped early is finished, unless an amendment (a new patience, say) reopens it.
        stopped = state.get("stopped_early") if setup.run.amendment is None else None
        if stopped:
            reporter.info(f"{run_dir}: {objective.name} stopped early after epoch {stopped} (patience)")
        elif start_epoch > setup.epochs:
            reporter.info(f"{run_dir}: all {setup.epochs} {objective.name} epochs already done")
        else:
            reporter.info(f"resuming {run_dir} at epoch {start_epoch}/{setup.epochs}")
    records = RunRecords(run_dir, cfg.log.tensorboard) if ctx.is_main else None
    if setup.run.amended_now and ctx.is_main:
        _log_amendment(setup, records, lr_before, optimizer.param_groups[0]["lr"], total, reporter)

    train_model = model
    if ctx.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    val_loader = (make_loader(ds, setup.splits.val, cfg, train=False, batch_size=cfg.eval_batch_size)
                  if len(setup.splits.val) else None)
    for epoch in range(start_epoch, setup.epochs + 1 if not stopped else start_epoch):
        t0 = time.perf_counter()
        loader = make_loader(ds, setup.splits.train, cfg, train=True, batch_size=setup.batch_size, epoch=epoch,
                             ctx=ctx, pin_memory=pin, frame_budget=budget)
        mask_generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7 + 1_000_003 * ctx.rank)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=device)
        reporter.start_epoch(objective.name, epoch, setup.epochs, len(loader))
        nonfinite_input = None  # a batch whose inputs hold NaN or inf (checked on the CPU: no device sync)
        for step, batch in enumerate(loader, 1):
            if nonfinite_input is None and not torch.isfinite(batch.x).all():
                nonfinite_input = step
            optimizer.zero_grad(set_to_none=True)
            micro = _micro_batches(batch, cfg.accumulate)
            for i, part in enumerate(micro):
                # Only the last micro-batch all-reduces gradients; the others accumulate locally.
                sync = contextlib.nullcontext() if not ctx.enabled or i == len(micro) - 1 else train_model.no_sync()
                with sync, torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss, stats = objective.loss(train_model, part, device, mask_generator)
                    scaler.scale(loss * (len(part.labels) / len(batch.labels))).backward()
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value.float() * len(part.labels)
            if setup.optim.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, setup.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            if setup.optim.schedule_unit == "step":
                scheduler.step()
            seen += len(batch.labels)
            if step % LOG_EVERY == 0 or step == len(loader):
                running = {k: (v / seen).item() for k, v in sums.items()}
                if not math.isfinite(running["loss"]):
                    if nonfinite_input is not None:
                        raise UserError(f"{objective.name} epoch {epoch}: loss became {running['loss']} because "
                                        f"batch {nonfinite_input}'s inputs hold NaN or inf: check the data "
                                        f"(`cascade data info {ds.path}`) and the data.* settings that transform it")
                    raise UserError(f"{objective.name} epoch {epoch}: loss became {running['loss']}; lower "
                                    f"{objective.name}.optim.lr or enable {objective.name}.optim.grad_clip")
                reporter.step(running, int(seen.item()), advance=step - reporter.steps_done)
        lr = optimizer.param_groups[0]["lr"]
        if setup.optim.schedule_unit == "epoch":
            scheduler.step()
        # Epoch means over every rank's samples.
        totals = sum_across(torch.stack([seen, *sums.values()]), ctx)
        seen_all, means = totals[0].item(), {k: (v / totals[0]).item() for k, v in zip(sums, totals[1:])}

        epoch_time = time.perf_counter() - t0
        elapsed += epoch_time
        stop = False
        if ctx.is_main:
            evaluated.eval()
            val = objective.validate(evaluated, val_loader, device) if val_loader is not None else {}
            record = {"stage": objective.name, "epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in means.items()},
                      **val, "samples_per_s": seen_all / epoch_time, "epoch_time_s": epoch_time}
            improved = selection.update(epoch, *objective.score(val)) if val else selection.update(epoch, None)
            stop = selection.exhausted(epoch) and epoch < setup.epochs
            meta = {**setup.meta, "epoch": epoch, **({"stopped_early": True} if stop else {})}
            save_checkpoint(ckpt_dir / "last.safetensors", model, cfg, meta)
            if ema is not None:
                save_checkpoint(ckpt_dir / LAST_EMA, evaluated, cfg, {**meta, "ema": stage_cfg.ema})
            if improved:
                save_checkpoint(ckpt_dir / "best.safetensors", evaluated, cfg,
                                {**meta, "selected_by": "last epoch" if setup.select == "last" else
                                 f"validation {'top-1' if objective.higher_is_better else 'masked MSE'}",
                                 "val": val})
            keep_epoch_checkpoint(ckpt_dir, epoch, stage_cfg.keep_last, "last.safetensors" if ema is None else LAST_EMA)
            save_trainer_state(trainer_state_path(run_dir), {
                "epoch": epoch, **selection.state(), "elapsed_s": elapsed, **({"stopped_early": epoch} if stop else {}),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "schedule_total": total, "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
                **({"rng_cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            })
            records.epoch({**record, "best_epoch": selection.best_epoch})
            shown = {k: v for k, v in record.items() if k.startswith(("train_", "val_"))}
            reporter.end_epoch(shown, record["samples_per_s"],
                               (setup.epochs - epoch) * elapsed / (epoch - start_epoch + 1))
            if stop:
                records.event({"event": "early_stop", "stage": objective.name, "epoch": epoch,
                               "best_epoch": selection.score_best_epoch, "patience": stage_cfg.patience})
                reporter.result(f"{objective.name}: no better validation score for {stage_cfg.patience} epoch(s) "
                                f"since epoch {selection.score_best_epoch}; stopped early after epoch {epoch}")
        else:
            reporter.end_epoch({}, 0.0, 0.0)
        barrier(ctx)  # the next epoch (or a resume) starts from what rank 0 saved
        if sum_across(torch.tensor(float(stop)), ctx).item():  # every rank stops when rank 0 does
            break
    if records is not None:
        records.close()
    return ckpt_dir / "best.safetensors"


LOG_EVERY = 10  # steps between progress updates: each one reads values back from the device


def _log_amendment(setup: StageSetup, records: RunRecords, lr_before: float, lr_after: float, total: int,
                   reporter: Reporter) -> None:
    """What an amendment changed, with the learning rate before and after, in the metrics log and
    on screen."""
    amendment = setup.run.amendment
    records.event({"event": "amend", "stage": setup.objective.name, "epoch": amendment["epoch"],
                   "changes": amendment["changes"], "lr_before": lr_before, "lr_after": lr_after,
                   "schedule_steps": total})
    changed = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in amendment["changes"].items())
    reporter.result(f"amended after epoch {amendment['epoch']}: {changed}; the run continues on the schedule of "
                  f"{setup.epochs} epochs, learning rate {lr_before:.3g} -> {lr_after:.3g}")
