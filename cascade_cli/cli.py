"""The `cascade` command line: thin Typer functions that parse options and call the library."""

from __future__ import annotations

import functools
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

import cascade_cli
from cascade_cli.config import Config, dump_yaml, load_config
from cascade_cli.errors import UserError
from cascade_cli.progress import Reporter

app = typer.Typer(
    name="cascade",
    help="CascadeFormer for skeleton-based action recognition: prepare data, pretrain T1 with masked "
         "reconstruction, finetune T1 + T2 for classification, evaluate.\n\n"
         "Quick start (synthetic data, a few minutes on a laptop CPU):  cascade demo",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
prepare_app = typer.Typer(help="Turn raw skeleton data into a prepared dataset directory (manifest + "
                               "memory-mapped arrays) that every training command reads.",
                          no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def handles_user_errors(fn):
    """Turn UserError into `error: ...` and a non-zero exit code instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; the last finished epoch is saved, continue with --resume")
            raise typer.Exit(130) from None

    return wrapper


# ----------------------------------------------------------------------------------------------
# Options shared by the training commands

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset name under presets/ (e.g. demo) or a YAML file.")
SetOpt = typer.Option(None, "--set", "-s", metavar="KEY=VALUE",
                      help="Override one config key, dotted and typed, e.g. --set finetune.optim.lr=3e-5. Repeatable.")
PrintOpt = typer.Option(False, "--print-config", help="Print the resolved config as YAML and exit.")
DataOpt = typer.Option(None, "--data", "-d", help="Prepared dataset directory (sets data.path).")
RunDirOpt = typer.Option(None, "--run-dir", "-o", help="Run directory for config, metrics and checkpoints "
                                                       "\\[default: runs/<stage>-<time>].")
GpuOpt = typer.Option(None, "--gpu", help="Use CUDA device N (same as --device cuda:N).")
DeviceOpt = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (sets device) \\[default: auto].")
SeedOpt = typer.Option(None, "--seed", help="Random seed for init, data order, masks and augmentation (sets seed) "
                                            "\\[default: 42].")
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last finished epoch.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only warnings and the final result.")


def _resolve_config(preset: Optional[str], sets: Optional[List[str]], *, data: Optional[str] = None,
                    seed: Optional[int] = None, device: Optional[str] = None, gpu: Optional[int] = None,
                    base: dict | None = None) -> Config:
    cfg = load_config(preset, sets or (), base=base)
    if data is not None:
        cfg.data.path = data
    if seed is not None:
        cfg.seed = seed
    if gpu is not None:
        cfg.device = f"cuda:{gpu}"
    if device is not None:
        cfg.device = device
    return cfg


def _saved_config(run_dir: Path) -> dict:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: nothing to resume (no config.yaml)")
    return yaml.safe_load(path.read_text()) or {}


def _default_run_dir(stage: str) -> Path:
    return Path("runs") / f"{stage}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _print_config(cfg: Config) -> None:
    typer.echo(dump_yaml(cfg), nl=False)


def _print_report(report: dict, console: Console) -> None:
    table = Table(title=f"{report['dataset']} / {report['protocol']} / {report['split']} "
                        f"({report['clips']} clips)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1", f"{100 * report['top1']:.2f} %")
    table.add_row("top-5", f"{100 * report['top5']:.2f} %")
    table.add_row("model", f"CascadeFormer {report['model']['variant']}, epoch {report['model']['epoch']} "
                           f"({report['model']['selected_by']})")
    console.print(table)
    console.print(f"report written to {report['report_path']}", highlight=False)


# ----------------------------------------------------------------------------------------------
# Commands


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"cascade {cascade_cli.__version__}")
        raise typer.Exit()


@prepare_app.command("synthetic")
@handles_user_errors
def prepare_synthetic(
    out: Path = typer.Option(Path("data/synthetic"), "--out", "-o", help="Output dataset directory."),
    clips_per_class: int = typer.Option(None, "--clips-per-class", min=2,
                                        help="Clips of each class \\[default: the demo size]."),
    seed: int = typer.Option(0, "--seed", help="Generator seed; the same seed gives byte-identical data."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
    quiet: bool = QuietOpt,
) -> None:
    """Write the built-in synthetic dataset: NTU-25 3D skeletons performing distinct actions.

    Actions such as waving, squatting, jumping and kicking, performed by 1-2 persons of varying
    size, seen from varying viewpoints, at varying speed and with sensor noise; cross-subject
    protocol `xsub`. Useful to check an installation and to try recipes in minutes.

    Example:  cascade prepare synthetic --out data/synthetic
    """
    from cascade_cli.data.format import open_dataset
    from cascade_cli.data.synthetic import make_synthetic

    kwargs = {} if clips_per_class is None else {"clips_per_class": clips_per_class}
    path = make_synthetic(out, seed=seed, overwrite=overwrite, **kwargs)
    ds = open_dataset(path)
    Reporter(quiet).info(f"wrote {ds.num_clips} clips, {ds.num_classes} classes to {path}")


@app.command()
@handles_user_errors
def pretrain(
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, print_config: bool = PrintOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Masked pretraining of T1: hide 30% of (frame, joint) slots and learn to reconstruct them.

    Writes RUN_DIR/config.yaml, metrics.jsonl (one line per epoch) and checkpoints/{best,last}.safetensors.
    The masking strategy is pretrain.mask (joint_slots, joints, frames, none); the model is model.*.
    Defaults: see `cascade pretrain --print-config`.

    Example:  cascade pretrain --data data/synthetic --preset demo --run-dir runs/pre
    """
    from cascade_cli.train import pretrain as run_pretrain

    if resume and run_dir is None:
        raise UserError("--resume needs --run-dir of the run to continue")
    base = _saved_config(run_dir) if resume else None
    cfg = _resolve_config(preset, sets, data=data, seed=seed, device=device, gpu=gpu, base=base)
    if print_config:
        return _print_config(cfg)
    run_dir = run_dir or _default_run_dir("pretrain")
    best = run_pretrain(cfg, run_dir, Reporter(quiet), resume=resume)
    Reporter(quiet).info(f"pretrained T1: {best}")


@app.command()
@handles_user_errors
def finetune(
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Pretraining run directory or checkpoint "
                                             "(sets finetune.pretrained); its model.* settings are kept."),
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, print_config: bool = PrintOpt,
    quiet: bool = QuietOpt,
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

    if resume and run_dir is None:
        raise UserError("--resume needs --run-dir of the run to continue")
    if resume:
        base = _saved_config(run_dir)
    elif pretrained:
        base = to_dict(load_checkpoint(resolve_checkpoint(pretrained, "best")).config)
    else:
        raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
    cfg = _resolve_config(preset, sets, data=data, seed=seed, device=device, gpu=gpu, base=base)
    if pretrained:
        cfg.finetune.pretrained = pretrained
    if print_config:
        return _print_config(cfg)
    run_dir = run_dir or _default_run_dir("finetune")
    best = run_finetune(cfg, run_dir, Reporter(quiet), resume=resume)
    Reporter(quiet).info(f"finetuned model: {best}")


@app.command()
@handles_user_errors
def evaluate(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory (uses checkpoints/best.safetensors) "
                                               "or a checkpoint file."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    split: str = typer.Option("test", "--split", help="test, or val/train to inspect the training side."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report JSON path \\[default: RUN_DIR/eval_<split>.json]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size "
                                                                               "\\[default: the run's eval_batch_size]."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Top-1 and top-5 accuracy of a finetuned model on the test split, as a table and a JSON report.

    Results do not depend on batch size or order: padded frames are masked everywhere.

    Example:  cascade evaluate runs/ft
    """
    from cascade_cli.evaluate import evaluate as run_evaluate

    dev = f"cuda:{gpu}" if gpu is not None else device
    report = run_evaluate(checkpoint, data_path=data, split=split, device=dev, batch_size=batch_size, out=out)
    if quiet:
        typer.echo(f"top1 {100 * report['top1']:.2f}  top5 {100 * report['top5']:.2f}")
    else:
        _print_report(report, Console())


@app.command()
@handles_user_errors
def demo(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Directory for the demo's data and runs."),
    preset: str = typer.Option("demo", "--preset", "-p", help="Preset for both training stages."),
    sets: Optional[List[str]] = SetOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt,
    fresh: bool = typer.Option(False, "--fresh", help="Delete --out first instead of reusing finished steps."),
    quiet: bool = QuietOpt,
) -> None:
    """The whole lifecycle on built-in synthetic data: prepare -> pretrain -> finetune -> evaluate.

    Finished steps in --out are reused and interrupted ones resumed, so running it again is cheap.
    With the default preset it takes a few minutes on a 2-core CPU.

    Example:  cascade demo --out demo_out
    """
    from cascade_cli.data.synthetic import make_synthetic
    from cascade_cli.evaluate import evaluate as run_evaluate
    from cascade_cli.train import finetune as run_finetune
    from cascade_cli.train import pretrain as run_pretrain

    started = time.perf_counter()
    reporter = Reporter(quiet)
    if fresh and out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    if not (data_dir / "dataset.yaml").is_file():
        reporter.info(f"[1/4] preparing synthetic data in {data_dir}")
        make_synthetic(data_dir)
    cfg = _resolve_config(preset, sets, data=str(data_dir), seed=seed, device=device, gpu=gpu)
    pre_dir, ft_dir = out / "pretrain", out / "finetune"
    reporter.info("[2/4] masked pretraining of T1")
    run_pretrain(cfg, pre_dir, reporter, resume=(pre_dir / "config.yaml").is_file())
    reporter.info("[3/4] cascading finetuning")
    cfg.finetune.pretrained = str(pre_dir)
    run_finetune(cfg, ft_dir, reporter, resume=(ft_dir / "config.yaml").is_file())
    reporter.info("[4/4] evaluating on the test split")
    report = run_evaluate(ft_dir)
    if not quiet:
        _print_report(report, Console())
    typer.echo(f"demo test top-1: {100 * report['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")


def main() -> None:
    app()
