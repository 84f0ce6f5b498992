"""The two training stages of CascadeFormer, each from a fully resolved config to a run directory.

Masked pretraining trains T1 and its reconstruction decoder; cascading finetuning loads the
pretrained T1 (without the decoder) and trains it with a new T2, fusion and head. How a stage's
config is resolved (a finetune inherits its pretraining run's, presets, --set) is the lifecycle's
business (cascade_cli/lifecycle.py); here the config is taken as the whole truth of the run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from cascade_cli.checkpoint import git_commit, load_checkpoint, resolve_checkpoint
from cascade_cli.config import Config
from cascade_cli.data.pipeline import model_input_shape
from cascade_cli.data.splits import Splits, run_splits
from cascade_cli.errors import UserError
from cascade_cli.model import build_classifier, build_t1, set_t1_trainable
from cascade_cli.model.exits import add_exits, exit_names
from cascade_cli.progress import Reporter
from cascade_cli.runtime import resolve_device
from cascade_cli.training.distributed import Dist, barrier, init_distributed
from cascade_cli.training.loop import StageSetup, check_inputs, fit
from cascade_cli.training.objectives import FinetuneObjective, PretrainObjective
from cascade_cli.training.run_dir import RUN_LOG, RunState, open_run, pending_amendment, trainer_state_path


def _dataset_meta(splits: Splits, cfg: Config) -> dict:
    """What a checkpoint needs to be used without its run: the head has an output for every one of
    class_names, but knows only trained_classes (a subset run never saw the others)."""
    ds = splits.dataset
    num_joints, in_channels = model_input_shape(ds, cfg.data)
    return {"git_commit": git_commit(), "dataset": ds.name, "dataset_path": str(ds.path), "protocol": splits.protocol,
            "layout": ds.layout.to_dict(), "class_names": list(ds.class_names), "trained_classes": splits.class_names(),
            "representation": cfg.data.representation, "person": cfg.data.person,
            "num_joints": num_joints, "in_channels": in_channels, "confidence": ds.has_confidence}


def _launch(cfg: Config, reporter: Reporter) -> tuple[torch.device, Dist, Reporter]:
    """The device of this process and its place among torchrun's processes (if any); only rank 0 talks."""
    device = resolve_device(cfg.device)
    ctx = init_distributed(device.type)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device, ctx, reporter if ctx.is_main else Reporter(quiet=True)


def _fit_in_run_dir(setup: StageSetup, run_dir: Path, device: torch.device, ctx: Dist, reporter: Reporter,
                    resume: bool, amend: bool, announce: str) -> Path:
    """Check the inputs, then rank 0 opens (locks, checks, amends) the run directory and trains; the
    other ranks wait for it to be ready, then train with the same view of it."""
    setup = check_inputs(setup, ctx, reporter)
    if ctx.is_main:
        with open_run(run_dir, setup.cfg, setup.objective.name, resume=resume, amend=amend) as run, \
                reporter.logging_to(run_dir / RUN_LOG):
            reporter.info(announce)
            barrier(ctx)
            return fit(replace(setup, run=run), device, reporter, ctx)
    barrier(ctx)
    resumable = resume and trainer_state_path(run_dir).is_file()
    run = RunState(run_dir, resumable, pending_amendment(run_dir) if resumable else None)
    return fit(replace(setup, run=run), device, reporter, ctx)


def _model_error(exc: ValueError) -> UserError:
    """Model builders raise ValueError naming the config keys at fault; for the CLI that is user input."""
    return UserError(str(exc))


def _count(model: torch.nn.Module) -> str:
    return f"{sum(p.numel() for p in model.parameters()):,}"


def pretrain(cfg: Config, run_dir: str | Path, reporter: Reporter, resume: bool = False,
             amend: bool = False) -> Path:
    """Masked pretraining of T1 (+ reconstruction decoder). Returns the selected checkpoint."""
    run_dir = Path(run_dir)
    splits = run_splits(cfg)
    device, ctx, reporter = _launch(cfg, reporter)
    ds = splits.dataset
    torch.manual_seed(cfg.seed)
    try:
        model = build_t1(cfg.model, *model_input_shape(ds, cfg.data), with_decoder=True)
    except ValueError as exc:
        raise _model_error(exc) from None
    announce = (f"pretraining CascadeFormer {cfg.model.variant} T1 ({_count(model)} parameters) on "
                f"{ds.name}/{splits.protocol}: {len(splits.train)} train, {len(splits.val)} val clips, {device}")
    meta = {"kind": "pretrain", "variant": cfg.model.variant, **_dataset_meta(splits, cfg)}
    setup = StageSetup(cfg, None, model, PretrainObjective(cfg), splits, cfg.pretrain.epochs, cfg.pretrain.batch_size,
                       cfg.pretrain.optim, cfg.pretrain.select, meta)
    return _fit_in_run_dir(setup, run_dir, device, ctx, reporter, resume, amend, announce)


def finetune(cfg: Config, run_dir: str | Path, reporter: Reporter, resume: bool = False,
             amend: bool = False) -> Path:
    """Cascading finetuning from the pretrained T1 named by cfg.finetune.pretrained. Returns the
    checkpoint selected on validation."""
    run_dir = Path(run_dir)
    if not cfg.finetune.pretrained:
        raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
    source = load_checkpoint(resolve_checkpoint(cfg.finetune.pretrained, "best", kind="pretrain"))
    if source.meta.get("kind") != "pretrain":
        raise UserError(f"{cfg.finetune.pretrained}: expected a pretraining checkpoint, got '{source.meta.get('kind')}'")
    splits = run_splits(cfg)
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
        if cfg.finetune.exit_loss_weight > 0:
            add_exits(model, exit_names(model, cfg.finetune.exits))
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
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    announce = (f"finetuning CascadeFormer {cfg.model.variant} ({_count(model)} parameters, {trainable:,} "
                f"trainable, T1 {cfg.finetune.t1}) on {ds.name}/{splits.protocol}: {len(splits.train)} train, "
                f"{len(splits.val)} val clips, {device}")
    meta = {"kind": "finetune", "variant": cfg.model.variant, "num_classes": ds.num_classes,
            "pretrained": str(cfg.finetune.pretrained), **_dataset_meta(splits, cfg)}
    setup = StageSetup(cfg, None, model, FinetuneObjective(cfg), splits, cfg.finetune.epochs, cfg.finetune.batch_size,
                       cfg.finetune.optim, cfg.finetune.select, meta)
    return _fit_in_run_dir(setup, run_dir, device, ctx, reporter, resume, amend, announce)
