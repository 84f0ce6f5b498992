"""What the command modules share: error handling, option definitions, config resolution, rendering.

Options live here as module-level `typer.Option` objects so that every command that takes, say,
--seed documents and parses it the same way.
"""

from __future__ import annotations

import functools
import inspect
from enum import Enum
from typing import Iterable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.config import EXIT_RULES, INFERENCE_PRECISIONS, Config, dump_yaml
from cascade_cli.errors import UserError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def cli_command(fn):
    """What every command gets: a UserError becomes `error: ...` and its exit code instead of a
    traceback, and the docstring's paragraphs flow (see flowing_help) at any terminal width."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished work is kept: run the same command again to continue "
                              "(training commands with --resume)")
            raise typer.Exit(130) from None

    wrapper.__doc__ = flowing_help(fn.__doc__ or "")
    return wrapper


def flowing_help(doc: str) -> str:
    """Join the lines of each prose paragraph, so that help wraps at the terminal's width instead of
    breaking where the source did; example paragraphs ("Example:" and indented lines) keep theirs."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("Example") or "\n " in p else " ".join(p.split("\n"))
                        for p in paragraphs)


def choice_enum(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum over a library table, so --help lists the choices and Typer rejects others itself.

    Built from the table rather than spelled out so that a choice added to the library reaches the
    command line without a second edit.
    """
    return Enum(name, [(value, value) for value in values], type=str)


# ----------------------------------------------------------------------------------------------
# Options shared by the training commands

PresetOpt = typer.Option(None, "--preset", "-p", help="Preset name under cascade_cli/presets/ (e.g. demo) or a YAML file.")
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
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last finished epoch, with the "
                         "config its config.yaml records; other settings are refused unless --amend.")
AmendOpt = typer.Option(False, "--amend", help="With --resume: apply changed settings (e.g. --set finetune.epochs=40) "
                        "and record them in config.yaml's history and the metrics log; the learning-rate schedule "
                        "continues at the current step on the schedule of the new length.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only warnings and the final result.")
CompileOpt = typer.Option(False, "--compile", help="Compile the model with torch.compile (sets compile=true).")

# ----------------------------------------------------------------------------------------------
# Options shared by the prepare commands

OutOpt = typer.Option(..., "--out", "-o", help="Output dataset directory (must not exist unless --overwrite).")
WorkersOpt = typer.Option(None, "--workers", "-j", min=1, help="Parallel worker processes \\[default: all cores].")
StrictOpt = typer.Option(False, "--strict", help="Fail (non-zero exit, no dataset) at the first rejected file "
                                                 "instead of reporting and skipping it.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out once the new one is complete.")


# ----------------------------------------------------------------------------------------------
# Small helpers


def print_config(cfg: Config) -> None:
    typer.echo(dump_yaml(cfg), nl=False)


def device_of(gpu: Optional[int], device: Optional[str]) -> Optional[str]:
    """The device for commands that take no config: --gpu N wins over --device."""
    return f"cuda:{gpu}" if gpu is not None else device


# ----------------------------------------------------------------------------------------------
# Rendering


def print_report(report: dict, console: Console) -> None:
    """The evaluation report as tables; `evaluate` and `demo` both end with it."""
    table = Table(title=f"{report['dataset']} / {report['protocol']} / {report['split']} "
                        f"({report['clips']} clips" + (f", {report['views']} views each" if report.get("views", 1) > 1
                                                       else "") + ")")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("top-1", f"{100 * report['top1']:.2f} %")
    table.add_row("top-5", f"{100 * report['top5']:.2f} %")
    if "macro" in report:
        table.add_row("class-mean", f"{100 * report['macro']:.2f} %")
    for group, numbers in (report.get("person_breakdown") or {}).items():
        table.add_row(f"{group.replace('_', '-')} (macro / weighted)",
                      f"{100 * numbers['macro']:.2f} / {100 * numbers['weighted']:.2f} %")
    table.add_row("model", f"CascadeFormer {report['model']['variant']}, epoch {report['model']['epoch']} "
                           f"({report['model']['selected_by']})")
    console.print(table)
    if report.get("per_class"):
        classes = Table(title="per class")
        for column in ("class", "support", "accuracy", "most confused with"):
            classes.add_column(column, justify="left" if column in ("class", "most confused with") else "right")
        for row in report["per_class"]:
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f} %"
            confused = "" if not row.get("confused_with") else f"{row['confused_with']} ({row['confused_count']})"
            classes.add_row(escape(row["class"]), str(row["support"]), accuracy, escape(confused))
        console.print(classes)
    for key in ("confusion_png", "confusion_csv", "scores_path", "report_path"):
        if report.get(key):
            console.print(f"{key.replace('_', ' ')}: {report[key]}", highlight=False, markup=False)


ExitRule = choice_enum("ExitRule", EXIT_RULES)
ExitRuleOpt = typer.Option(ExitRule("max_softmax"), "--rule", metavar="RULE", help="When a clip leaves at an exit: "
                           "max_softmax (its top probability reaches the threshold), entropy (1 - entropy / log K "
                           "does) or patience (the last THRESHOLD exits agree on the class).")

Precision = choice_enum("Precision", INFERENCE_PRECISIONS)
PrecisionOpt = typer.Option(Precision("fp32"), "--precision", metavar="fp32|bf16|fp16", help="Inference "
                            "precision: fp32 (the figures reports mean), or bf16 / fp16 autocast (fp16 on CUDA "
                            "only), faster where the hardware computes in bf16 (GPUs, AMX, AVX-512 BF16); a near "
                            "tie between two classes can then flip.")
