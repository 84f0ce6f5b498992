"""`cascade pretrain`, `cascade finetune` and `cascade demo`: the commands that train a model.

Config resolution and the chain of stages live in cascade_cli.lifecycle, which the library's own
pretrain/finetune use too, so both behave the same.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from cascade_cli.cli.common import (AmendOpt, CompileOpt, DataOpt, DeviceOpt, GpuOpt, PresetOpt, PrintOpt, QuietOpt,
                                    ResumeOpt, RunDirOpt, SeedOpt, SetOpt, device_of, cli_command,
                                    print_config, print_report)
from cascade_cli.progress import Reporter


def _config_or_train(stage: str, run_dir: Optional[Path], show_config: bool, quiet: bool, result_label: str,
                     resume: bool, amend: bool, **settings) -> None:
    """Print the resolved config, or train the stage and say where its selected checkpoint is."""
    from cascade_cli import lifecycle

    if show_config:
        return print_config(lifecycle.stage_config(stage, run_dir=run_dir, resume=resume, **settings))
    best = getattr(lifecycle, stage)(run_dir, resume=resume, amend=amend, reporter=Reporter(quiet), **settings)
    Reporter(quiet).result(f"{result_label}: {best}")


@cli_command
def pretrain(
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, amend: bool = AmendOpt, show_config: bool = PrintOpt,
    quiet: bool = QuietOpt, compile_model: bool = CompileOpt,
) -> None:
    """Masked pretraining of T1: hide 30% of (frame, joint) slots and learn to reconstruct them.

    Writes RUN_DIR/config.yaml, metrics.jsonl (one line per epoch) and checkpoints/{best,last}.safetensors.
    The masking strategy is pretrain.mask (joint_slots, joints, frames, none); the model is model.*.
    Defaults: see `cascade pretrain --print-config`.

    Example:  cascade pretrain --data data/synthetic --preset demo --run-dir runs/pre
    """
    _config_or_train("pretrain", run_dir, show_config, quiet, "pretrained T1", resume, amend, preset=preset,
                     overrides=sets or (), data=data, seed=seed, device=device_of(gpu, device), compile=compile_model)


@cli_command
def finetune(
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretraining run directory or checkpoint "
                                             "(sets finetune.pretrained); its model.* settings are kept."),
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, amend: bool = AmendOpt, show_config: bool = PrintOpt,
    quiet: bool = QuietOpt, compile_model: bool = CompileOpt,
) -> None:
    """Cascading finetuning: pretrained T1, a new T2, cross-attention fusion and a classification head.

    The best epoch is chosen by top-1 on a validation split carved (stratified, seeded) from the
    training split; the test split is never looked at. T1 can be trained fully, frozen or only its
    last k layers (finetune.t1). The dataset and model settings default to the pretraining run's.

    Example:  cascade finetune --pretrained runs/pre --preset demo --run-dir runs/ft
    """
    _config_or_train("finetune", run_dir, show_config, quiet, "finetuned model", resume, amend, pretrained=pretrained,
                     preset=preset, overrides=sets or (), data=data, seed=seed, device=device_of(gpu, device),
                     compile=compile_model)


@cli_command
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
    from cascade_cli import lifecycle

    started = time.perf_counter()
    result = lifecycle.run(out, data=data, preset=preset, overrides=sets or (), seed=seed,
                           device=device_of(gpu, device), fresh=fresh, reporter=Reporter(quiet))
    if not quiet:
        print_report(result.report, Console())
    typer.echo(f"demo test top-1: {100 * result.report['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")
