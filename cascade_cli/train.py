"""Masked pretraining of T1 and cascading finetuning of T1 + T2: one epoch loop, two objectives.

Both stages share `fit`: seeded data order, per-epoch checkpoints written atomically, model
selection on a validation split carved from the training split (never on test), and exact
resume. Every random draw is a function of (seed, epoch) except dropout, whose global RNG state
is saved with the trainer state, so 2 + 2 resumed epochs equal 4 straight ones bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from cascade_cli.atomic import append_line, write_text
from cascade_cli.checkpoint import (git_commit, load_checkpoint, load_trainer_state, resolve_checkpoint,
                                    save_checkpoint, save_trainer_state)
from cascade_cli.config import Config, OptimConfig, dump_yaml
from cascade_cli.data.format import PreparedDataset, open_dataset
from cascade_cli.data.pipeline import Batch, ClipDataset, collate_clips, model_input_shape, stratified_split
from cascade_cli.data.sampler import LengthBucketSampler, item_lengths
from cascade_cli.distributed import Dist, barrier, init_distributed, sum_across
from cascade_cli.errors import UserError
from cascade_cli.masking import apply_mask, draw_mask, masked_mse
from cascade_cli.model import build_classifier, build_t1, padding_mask, set_t1_trainable
from cascade_cli.progress import Reporter

VAL_MASK_SEED = 1234  # validation masks are fixed so that epochs compare fairly


# ----------------------------------------------------------------------------------------------
# Devices, optimisers, schedules


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"config key 'device': {spec!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"config key 'device': {spec!r} requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"config key 'device': {spec!r} but only {torch.cuda.device_count()} GPU(s) visible")
    return device


def build_optimizer(params: list[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    # The fused kernel updates every tensor in one pass: on CPU about 5x faster than the default
    # per-op update, which otherwise costs as much as a small batch's forward and backward.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None)


def lr_factor(cfg: OptimConfig, step: int, total: int) -> float:
    """Multiplier of the base LR: linear warm-up from 0, then constant or half a cosine to min_lr."""
    warmup = int(cfg.warmup * total)
    if step < warmup:
        return step / warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = min((step - warmup) / max(1, total - warmup), 1.0)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = epochs * steps_per_epoch if cfg.schedule_unit == "step" else epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(cfg, i, total))


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class Splits:
    dataset: PreparedDataset
    train: np.ndarray
    val: np.ndarray
    protocol: str


def training_splits(cfg: Config) -> Splits:
    """Train / validation indices, both carved from the protocol's training split."""
    if not cfg.data.path:
        raise UserError("no dataset given: pass --data DIR (a prepared dataset, e.g. from `cascade prepare synthetic`)")
    ds = open_dataset(cfg.data.path)
    protocol = ds.resolve_protocol(cfg.data.protocol)
    train_all = ds.split_indices(protocol, "train")
    train, val = stratified_split(ds.labels, train_all, cfg.data.val_fraction, cfg.seed)
    return Splits(ds, train, val, protocol)


def make_loader(ds: PreparedDataset, indices: np.ndarray, cfg: Config, *, train: bool, batch_size: int,
                epoch: int = 0, ctx: Dist = Dist(), pin_memory: bool = False) -> DataLoader:
    """Batches of `batch_size` items (the global batch; each rank loads its share), in a seeded order
    for training and, with bucketing, of similar lengths so little compute goes to padding."""
    items = ClipDataset(ds, indices, cfg.data, train=train, seed=cfg.seed)
    items.set_epoch(epoch)
    sampler = LengthBucketSampler(item_lengths(items), batch_size, seed=cfg.seed,
                                  max_frames_per_batch=cfg.data.max_frames_per_batch if train else 0,
                                  rank=ctx.rank, world_size=ctx.world_size, shuffle=train,
                                  bucket=cfg.data.bucketing)
    sampler.set_epoch(epoch)
    return DataLoader(items, batch_sampler=sampler, collate_fn=collate_clips, num_workers=cfg.workers,
                      pin_memory=pin_memory)


def to_device(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = batch.x.to(device, non_blocking=True)
    lengths = batch.lengths.to(device)
    return x, lengths, padding_mask(lengths, x.shape[1]), batch.labels.to(device)


# ----------------------------------------------------------------------------------------------
# The two objectives


class PretrainObjective:
    """Reconstruct hidden coordinates from the visible ones; lower validation MSE is better."""

    name = "pretrain"
    higher_is_better = False

    def __init__(self, cfg: Config):
        self.cfg = cfg.pretrain

    def loss(self, model, batch, device, generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, lengths, pad, _ = to_device(batch, device)
        hidden, scored = draw_mask(self.cfg.mask, self.cfg.mask_ratio, lengths, x.shape[1], x.shape[2], generator)
        recon = model(apply_mask(x, hidden), pad, reconstruct=True)
        loss = masked_mse(recon.float(), x, scored)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def validate(self, model, loader, device) -> dict[str, float]:
        generator = torch.Generator().manual_seed(VAL_MASK_SEED)
        total, count = 0.0, 0
        for batch in loader:
            loss, _ = self.loss(model, batch, device, generator)
            total += loss.item() * len(batch.labels)  # validation may sync: it runs once per epoch
            count += len(batch.labels)
        return {"val_loss": total / max(count, 1)}

    def score(self, val: dict[str, float]) -> float:
        return val["val_loss"]


class FinetuneObjective:
    """Cross-entropy on clip labels; higher validation top-1 is better."""

    name = "finetune"
    higher_is_better = True

    def __init__(self, cfg: Config):
        self.cfg = cfg.finetune

    def loss(self, model, batch, device, generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _, pad, labels = to_device(batch, device)
        logits = model(x, pad).float()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.cfg.label_smoothing)
        return loss, {"loss": loss.detach(), "acc": (logits.argmax(-1) == labels).float().mean()}

    @torch.no_grad()
    def validate(self, model, loader, device) -> dict[str, float]:
        total_loss, correct, count = 0.0, 0, 0
        for batch in loader:
            x, _, pad, labels = to_device(batch, device)
            logits = model(x, pad).float()
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            count += len(labels)
        return {"val_loss": total_loss / max(count, 1), "val_top1": correct / max(count, 1)}

    def score(self, val: dict[str, float]) -> float:
        return val["val_top1"]


# ----------------------------------------------------------------------------------------------
# The shared loop


@dataclass
class StageSetup:
    cfg: Config
    run_dir: Path
    model: torch.nn.Module
    objective: PretrainObjective | FinetuneObjective
    splits: Splits
    epochs: int
    batch_size: int
    optim: OptimConfig
    select: str  # "last" or "val"
    meta: dict


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool) -> bool:
    """Create the run directory; return whether there is a finished epoch to resume from."""
    if resume:
        if (run_dir / "checkpoints" / "trainer_state.pt").is_file():
            return True
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{run_dir}: nothing to resume (no config.yaml)")
        return False  # interrupted before its first epoch ended: start over with the saved config
    if (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}: run directory already holds a run; pass --resume to continue it "
                        "or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", dump_yaml(cfg))
    return False


def cpu_has_native_bf16() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later) multiply bf16 matrices several times faster than
    float32; without them CPU bf16 is emulated and slower, so auto stays in float32 there."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def autocast_dtype(amp: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for config key `amp` on `device` (None: float32), and a warning if the
    request cannot be honoured. auto: bf16 on GPUs that have it (no loss scaling needed), else fp16
    with a scaler; bf16 on CPUs with AMX; float32 on other CPUs."""
    if amp == "off":
        return None, None
    if device.type == "cuda":
        if amp == "auto":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16), None
        return (torch.bfloat16 if amp == "bf16" else torch.float16), None
    if amp == "fp16":
        return None, f"amp=fp16 needs CUDA; training in float32 on {device}"
    if amp == "auto":
        return (torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None), None
    return torch.bfloat16, None


def _micro_batches(batch: Batch, parts: int) -> list[Batch]:
    """Split a rank's batch for gradient accumulation (padding stays masked, so splitting is exact)."""
    if parts == 1:
        return [batch]
    return [Batch(*chunk) for chunk in zip(*(t.tensor_split(parts) for t in batch)) if len(chunk[2])]


LOG_EVERY = 10  # steps between progress updates: each one reads values back from the device


def fit(setup: StageSetup, device: torch.device, reporter: Reporter, resume: bool, ctx: Dist = Dist()) -> Path:
    cfg, run_dir, model, objective = setup.cfg, setup.run_dir, setup.model, setup.objective
    ckpt_dir = run_dir / "checkpoints"
    ds = setup.splits.dataset
    if setup.select == "val" and len(setup.splits.val) == 0:
        raise UserError(f"config key '{objective.name}.select': 'val' needs a validation split; "
                        "set data.val_fraction > 0 or select=last")
    if len(setup.splits.train) == 0:
        raise UserError(f"{ds.path}: the training split of protocol '{setup.splits.protocol}' is empty")
    if setup.batch_size < ctx.world_size * cfg.accumulate:
        raise UserError(f"{objective.name}.batch_size={setup.batch_size} is the global batch: it must be at least "
                        f"processes x accumulate = {ctx.world_size * cfg.accumulate}")

    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, setup.optim)
    pin = device.type == "cuda"
    steps_per_epoch = len(make_loader(ds, setup.splits.train, cfg, train=True, batch_size=setup.batch_size,
                                      epoch=1, ctx=ctx))
    scheduler = build_scheduler(optimizer, setup.optim, setup.epochs, steps_per_epoch)
    amp_dtype, amp_warning = autocast_dtype(cfg.amp, device)
    if amp_warning:
        reporter.warn(amp_warning)
    if amp_dtype is not None:
        reporter.info(f"mixed precision: {str(amp_dtype).removeprefix('torch.')} autocast on {device.type} "
                      "(config key amp; amp=off trains in float32)")
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    if device.type == "cuda" and cfg.data.frames > 0:
        torch.backends.cudnn.benchmark = True  # fixed shapes: tuning once pays off

    start_epoch, best_score, best_epoch, elapsed = 1, None, 0, 0.0
    if resume:
        state = load_trainer_state(ckpt_dir / "trainer_state.pt")
        weights = load_checkpoint(ckpt_dir / "last.safetensors")
        if weights.meta.get("epoch") != state["epoch"]:
            raise UserError(f"{ckpt_dir}: last.safetensors (epoch {weights.meta.get('epoch')}) and "
                            f"trainer_state.pt (epoch {state['epoch']}) disagree; the run was interrupted "
                            "while saving and cannot resume exactly")
        model.load_state_dict(weights.state_dict)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        start_epoch, best_score, best_epoch = state["epoch"] + 1, state["best_score"], state["best_epoch"]
        elapsed = state.get("elapsed_s", 0.0)
        if start_epoch > setup.epochs:
            reporter.info(f"{run_dir}: all {setup.epochs} {objective.name} epochs already done")
        else:
            reporter.info(f"resuming {run_dir} at epoch {start_epoch}/{setup.epochs}")

    train_model = model
    if ctx.enabled:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    val_loader = make_loader(ds, setup.splits.val, cfg, train=False, batch_size=cfg.eval_batch_size)
    for epoch in range(start_epoch, setup.epochs + 1):
        t0 = time.perf_counter()
        loader = make_loader(ds, setup.splits.train, cfg, train=True, batch_size=setup.batch_size, epoch=epoch,
                             ctx=ctx, pin_memory=pin)
        mask_generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 7 + 1_000_003 * ctx.rank)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = torch.zeros((), device=device)
        reporter.start_epoch(objective.name, epoch, setup.epochs, len(loader))
        for step, batch in enumerate(loader, 1):
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
            if setup.optim.schedule_unit == "step":
                scheduler.step()
            seen += len(batch.labels)
            if step % LOG_EVERY == 0 or step == len(loader):
                running = {k: (v / seen).item() for k, v in sums.items()}
                if not math.isfinite(running["loss"]):
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
        if ctx.is_main:
            model.eval()
            val = objective.validate(model, val_loader, device) if len(setup.splits.val) else {}
            record = {"stage": objective.name, "epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in means.items()},
                      **val, "samples_per_s": seen_all / epoch_time, "epoch_time_s": epoch_time}
            improved = setup.select == "last"
            if setup.select == "val":
                score = objective.score(val)
                improved = best_score is None or (score > best_score if objective.higher_is_better
                                                  else score < best_score)
                best_score = score if improved else best_score
            best_epoch = epoch if improved else best_epoch
            meta = {**setup.meta, "epoch": epoch}
            save_checkpoint(ckpt_dir / "last.safetensors", model, cfg, meta)
            if improved:
                save_checkpoint(ckpt_dir / "best.safetensors", model, cfg,
                                {**meta, "selected_by": "last epoch" if setup.select == "last" else
                                 f"validation {'top-1' if objective.higher_is_better else 'masked MSE'}",
                                 "val": val})
            save_trainer_state(ckpt_dir / "trainer_state.pt", {
                "epoch": epoch, "best_score": best_score, "best_epoch": best_epoch, "elapsed_s": elapsed,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng_cpu": torch.get_rng_state(),
                **({"rng_cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            })
            append_line(run_dir / "metrics.jsonl", json.dumps({**record, "best_epoch": best_epoch}))
            shown = {k: v for k, v in record.items() if k.startswith(("train_", "val_"))}
            reporter.end_epoch(shown, record["samples_per_s"],
                               (setup.epochs - epoch) * elapsed / (epoch - start_epoch + 1))
        else:
            reporter.end_epoch({}, 0.0, 0.0)
        barrier(ctx)  # the next epoch (or a resume) starts from what rank 0 saved
    return ckpt_dir / "best.safetensors"


def _dataset_meta(splits: Splits, cfg: Config) -> dict:
    ds = splits.dataset
    num_joints, in_channels = model_input_shape(ds, cfg.data)
    return {"git_commit": git_commit(), "dataset": ds.name, "dataset_path": str(ds.path), "protocol": splits.protocol,
            "layout": ds.layout.to_dict(), "class_names": list(ds.class_names),
            "representation": cfg.data.representation, "person": cfg.data.person,
            "num_joints": num_joints, "in_channels": in_channels}


def _launch(cfg: Config, reporter: Reporter) -> tuple[torch.device, Dist, Reporter]:
    """The device of this process and its place among torchrun's processes (if any); only rank 0 talks."""
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device, ctx, reporter if ctx.is_main else Reporter(quiet=True)


def _prepare_run_dir_once(run_dir: Path, cfg: Config, resume: bool, ctx: Dist) -> bool:
    """Rank 0 creates (or checks) the run directory; the others wait, then see the same answer."""
    answer = prepare_run_dir(run_dir, cfg, resume) if ctx.is_main else False
    barrier(ctx)
    return answer if ctx.is_main else (run_dir / "checkpoints" / "trainer_state.pt").is_file() and resume


def _model_error(exc: ValueError) -> UserError:
    """Model builders raise ValueError naming the config keys at fault; for the CLI that is user input."""
    return UserError(str(exc))


def pretrain(cfg: Config, run_dir: str | Path, reporter: Reporter, resume: bool = False) -> Path:
    """Masked pretraining of T1 (+ reconstruction decoder). Returns the selected checkpoint."""
    run_dir = Path(run_dir)
    splits = training_splits(cfg)
    device, ctx, reporter = _launch(cfg, reporter)
    ds = splits.dataset
    torch.manual_seed(cfg.seed)
    try:
        model = build_t1(cfg.model, *model_input_shape(ds, cfg.data), with_decoder=True)
    except ValueError as exc:
        raise _model_error(exc) from None
    resume = _prepare_run_dir_once(run_dir, cfg, resume, ctx)
    reporter.info(f"pretraining CascadeFormer {cfg.model.variant} T1 ({_count(model)} parameters) on "
                  f"{ds.name}/{splits.protocol}: {len(splits.train)} train, {len(splits.val)} val clips, {device}")
    setup = StageSetup(cfg, run_dir, model, PretrainObjective(cfg), splits, cfg.pretrain.epochs,
                       cfg.pretrain.batch_size, cfg.pretrain.optim, cfg.pretrain.select,
                       {"kind": "pretrain", "variant": cfg.model.variant, **_dataset_meta(splits, cfg)})
    return fit(setup, device, reporter, resume, ctx)


def finetune(cfg: Config, run_dir: str | Path, reporter: Reporter, resume: bool = False) -> Path:
    """Cascading finetuning from a pretrained T1. Returns the checkpoint selected on validation."""
    run_dir = Path(run_dir)
    if not cfg.finetune.pretrained:
        raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
    source = load_checkpoint(resolve_checkpoint(cfg.finetune.pretrained, "best"))
    if source.meta.get("kind") != "pretrain":
        raise UserError(f"{cfg.finetune.pretrained}: expected a pretraining checkpoint, got '{source.meta.get('kind')}'")
    splits = training_splits(cfg)
    ds = splits.dataset
    shape = model_input_shape(ds, cfg.data)
    if (source.meta["num_joints"], source.meta["in_channels"]) != shape:
        raise UserError(f"{cfg.finetune.pretrained}: pretrained on inputs of {source.meta['num_joints']} joints x "
                        f"{source.meta['in_channels']} channels but {ds.path} with these data.* settings gives "
                        f"{shape[0]} x {shape[1]}")
    device, ctx, reporter = _launch(cfg, reporter)
    torch.manual_seed(cfg.seed)
    try:
        model = build_classifier(cfg.model, *shape, ds.num_classes)
        set_t1_trainable(model, cfg.finetune.t1, cfg.finetune.t1_trainable_layers)
    except ValueError as exc:
        raise _model_error(exc) from None
    t1_weights = {k: v for k, v in source.state_dict.items() if not k.startswith("reconstruction_head.")}
    try:
        model.t1.load_state_dict(t1_weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"{cfg.finetune.pretrained}: its T1 does not fit model settings of this run "
                        f"({first[1].strip() if len(first) > 1 else first[0]}); keep the model.* keys of pretraining") from None
    resume = _prepare_run_dir_once(run_dir, cfg, resume, ctx)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    reporter.info(f"finetuning CascadeFormer {cfg.model.variant} ({_count(model)} parameters, {trainable:,} trainable, "
                  f"T1 {cfg.finetune.t1}) on {ds.name}/{splits.protocol}: {len(splits.train)} train, "
                  f"{len(splits.val)} val clips, {device}")
    setup = StageSetup(cfg, run_dir, model, FinetuneObjective(cfg), splits, cfg.finetune.epochs,
                       cfg.finetune.batch_size, cfg.finetune.optim, cfg.finetune.select,
                       {"kind": "finetune", "variant": cfg.model.variant, "num_classes": ds.num_classes,
                        "pretrained": str(cfg.finetune.pretrained), **_dataset_meta(splits, cfg)})
    return fit(setup, device, reporter, resume, ctx)


def _count(model: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()):,}"

