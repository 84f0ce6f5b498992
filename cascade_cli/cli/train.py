"""`cascade pretrain`, `cascade finetune` and `cascade demo`: the commands that train a model."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console

from cascade_cli.cli.common import (CompileOpt, DataOpt, DeviceOpt, GpuOpt, PresetOpt, PrintOpt, QuietOpt, ResumeOpt,
                                    RunDirOpt, SeedOpt, SetOpt, default_run_dir, handles_user_errors, print_config,
                                    print_report, resolve_config, saved_config)
from cascade_cli.config import Config
from cascade_cli.errors import UserError
from cascade_cli.progress import Reporter


def _print_config_or_train(stage: str, run: Callable, cfg: Config, run_dir: Optional[Path], *, resume: bool,
                           show_config: bool, quiet: bool, result_label: str) -> None:
    """The tail pretrain and finetune share once each has its config: print it, or train and say where."""
    if show_config:
        return print_config(cfg)
    run_dir = run_dir or default_run_dir(stage)
    best = run(cfg, run_dir, Reporter(quiet), resume=resume)
    Reporter(quiet).info(f"{result_label}: {best}")


@handles_user_errors
def pretrain(
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, show_config: bool = PrintOpt,
    quiet: bool = QuietOpt, compile_model: bool = CompileOpt,
) -> None:
    """Masked pretraining of T1: hide 30% of (frame, joint) slots and learn to reconstruct them.

    Writes RUN_DIR/config.yaml, metrics.jsonl (one line per epoch) and checkpoints/{best,last}.safetensors.
    The masking strategy is pretrain.mask (joint_slots, joints, frames, none); the model is model.*.
    Defaults: see `cascade pretrain --print-config`.

    Example:  cascade pretrain --data data/synthetic --preset demo --run-dir runs/pre
    """
    from cascade_cli.train import pretrain as run_pretrain

    base = saved_config(run_dir) if resume else None
    cfg = resolve_config(preset, sets, data=data, seed=seed, device=device, gpu=gpu, base=base,
                         compile_model=compile_model)
    _print_config_or_train("pretrain", run_pretrain, cfg, run_dir, resume=resume, show_config=show_config, quiet=quiet,
                           result_label="pretrained T1")


@handles_user_errors
def finetune(
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretraining run directory or checkpoint "
                                             "(sets finetune.pretrained); its model.* settings are kept."),
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, show_config: bool = PrintOpt,
    quiet: bool = QuietOpt, compile_model: bool = CompileOpt,
) -> None:
    """Cascading finetuning: pretrained T1, a new T2, cross-attention fusion and a classification head.

    The best epoch is chosen by top-1 on a validation split carved (stratified, seeded) from the
    training split; the test split is never looked at. T1 can be trained fully, frozen or only its
    last k layers (finetune.t1). The dataset and model settings default to the pretraining run's.

    Example:  cascade finetune --pretrained runs/pre --preset demo --run-dir runs/ft
    """
    from cascade_cli.checkpoint import load_checkpoint, resolve_checkpoint
    from cascade_cli.config import to_dict
    from cascade_cli.train import finetune as run_finetune

    if resume:
        base = saved_config(run_dir)
    elif pretrained:
        base = to_dict(load_checkpoint(resolve_checkpoint(pretrained, "best")).config)
    else:
        raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
    cfg = resolve_config(preset, sets, data=data, seed=seed, device=device, gpu=gpu, base=base,
                         compile_model=compile_model)
    if pretrained:
        cfg.finetune.pretrained = pretrained
    _print_config_or_train("finetune", run_finetune, cfg, run_dir, resume=resume, show_config=show_config, quiet=quiet,
                           result_label="finetuned model")


@handles_user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Directory for the demo's data and runs."),
    data: Optional[Path] = typer.Option(None, "--data", "-d", help="Run on this prepared dataset instead of the "
                                        "synthetic one (prepare is skipped), to sanity-check your data in minutes."),
    preset: str = typer.Option("demo", "--preset", "-p", help="Preset for both training stages."),
    sets: Optional[List[str]] = SetOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt,
    fresh: bool = typer.Option(False, "--fresh", help="Delete --out first instead of reusing finished steps."),
    quiet: bool = QuietOpt,
) -> None:
    """The whole lifecycle on built-in synthetic data: prepare -> pretrain -> finetune -> evaluate.

    Finished steps in --out are reused and interrupted ones resumed, so running it again is cheap.
    With the default preset it takes well under a minute on a 2-core CPU. With --data it runs the
    same small model on your prepared dataset (its first protocol unless --set data.protocol=...).

    Example:  cascade demo --out demo_out
              cascade demo --data data/penn --out demo_penn
    """
    from cascade_cli.data.format import open_dataset
    from cascade_cli.data.synthetic import make_synthetic
    from cascade_cli.evaluate import evaluate as run_evaluate
    from cascade_cli.train import finetune as run_finetune
    from cascade_cli.train import pretrain as run_pretrain

    started = time.perf_counter()
    reporter = Reporter(quiet)
    if fresh and out.exists():
        shutil.rmtree(out)
    data_dir = data or out / "data"
    if data is None and not (data_dir / "dataset.yaml").is_file():
        reporter.info(f"[1/4] preparing synthetic data in {data_dir}")
        make_synthetic(data_dir)
    cfg = resolve_config(preset, sets, data=str(data_dir), seed=seed, device=device, gpu=gpu)
    if not cfg.data.protocol:
        protocols = list(open_dataset(data_dir).protocols)
        cfg.data.protocol = protocols[0]
        if len(protocols) > 1:
            reporter.info(f"using protocol {protocols[0]} of {', '.join(protocols)} (choose with --set data.protocol=...)")
    pre_dir, ft_dir = out / "pretrain", out / "finetune"
    reporter.info("[2/4] masked pretraining of T1")
    run_pretrain(cfg, pre_dir, reporter, resume=(pre_dir / "config.yaml").is_file())
    reporter.info("[3/4] cascading finetuning")
    cfg.finetune.pretrained = str(pre_dir)
    run_finetune(cfg, ft_dir, reporter, resume=(ft_dir / "config.yaml").is_file())
    reporter.info("[4/4] evaluating on the test split")
    report = run_evaluate(ft_dir)
    if not quiet:
        print_report(report, Console())
    typer.echo(f"demo test top-1: {100 * report['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")
