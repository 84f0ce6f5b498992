"""`cascade continual` (a class-incremental run) and `cascade continual report` (runs side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from cascade_cli.cli.common import (AmendOpt, DataOpt, DeviceOpt, GpuOpt, PresetOpt, PrintOpt, QuietOpt, ResumeOpt,
                                    SeedOpt, SetOpt, choice_enum, cli_command, device_of, print_config)
from cascade_cli.config import CONTINUAL_METHODS as METHODS
from cascade_cli.progress import Reporter

Method = choice_enum("Method", METHODS)
continual_app = typer.Typer()  # its help is the callback's docstring


@continual_app.callback(invoke_without_command=True)
@cli_command
def continual(
    ctx: typer.Context,
    data: Optional[str] = DataOpt,
    tasks: Optional[int] = typer.Option(None, "--tasks", min=1, help="Tasks (sets continual.tasks)."),
    class_order: Optional[str] = typer.Option(None, "--class-order", help="sorted, random:SEED, charon-ntu60 or a "
                                              "file of class names (sets continual.class_order)."),
    method: Optional[Method] = typer.Option(None, "--method", help="Sets continual.method."),
    buffer: Optional[int] = typer.Option(None, "--buffer", min=1, help="Buffer size in full clips (sets "
                                         "continual.buffer)."),
    preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", "-o", help="Where the run goes \\[default: "
                                           "runs/continual-<time>]; with --seeds, one folder per seed inside."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Runs with seeds 42, 43, ...; FAA as mean ± std."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, seed: Optional[int] = SeedOpt,
    resume: bool = ResumeOpt, amend: bool = AmendOpt, show_config: bool = PrintOpt, quiet: bool = QuietOpt,
) -> None:
    """Class-incremental learning: a dataset's classes task by task, one head, a memory buffer.

    Methods: ft, joint, er, der, derpp and charon (CHARON, ICPR 2024, on the CascadeFormer
    backbone). Run with the options below; `cascade continual report` compares finished runs.

    Writes RUN_DIR/continual.json (the accuracy matrix a(i, j) after task i on task j's test clips,
    FAA, forgetting, backward transfer, average incremental accuracy, buffer bytes, seconds per
    task), accuracy.csv and accuracy.png. A killed run resumes with --resume where it stopped,
    buffer and random states included.

    Example:  cascade continual --data data/penn --preset continual/penn_action-5x3 --method charon --buffer 50
              cascade continual report runs/ft runs/er runs/charon
    """
    if ctx.invoked_subcommand is not None:
        return
    from cascade_cli import lifecycle
    from cascade_cli.continual.learner import run_continual

    overrides = [*(sets or ()), *(f"continual.{key}={value}" for key, value in
                                  (("tasks", tasks), ("class_order", class_order), ("buffer", buffer),
                                   ("method", method.value if method else None)) if value is not None)]
    saved = run_dir / "seed-0" if run_dir is not None and seeds > 1 else run_dir  # where a resumed config lives
    cfg = lifecycle.stage_config("pretrain", run_dir=saved, resume=resume, preset=preset, overrides=overrides,
                                 data=data, seed=seed, device=device_of(gpu, device))
    if show_config:
        return print_config(cfg)
    run_dir = run_dir or lifecycle.default_run_dir("continual")
    reporter = Reporter(quiet)
    results = []
    for s in range(seeds):
        cfg.seed = (seed if seed is not None else 42) + s if seeds > 1 else cfg.seed
        results.append(run_continual(cfg, run_dir / f"seed-{s}" if seeds > 1 else run_dir, reporter,
                                     resume=resume, amend=amend))
    from cascade_cli.metrics import mean_std

    mean, std = mean_std([r["faa"] for r in results])
    reporter.result(f"{cfg.continual.method}: FAA {100 * mean:.2f} %" + (f" ± {100 * std:.2f}" if seeds > 1 else "")
                    + f" over {len(results[0]['accuracy'][-1])} tasks; results in {run_dir}")


@continual_app.command("report")
@cli_command
def report(runs: List[Path] = typer.Argument(..., help="Finished continual run directories.")) -> None:
    """Methods side by side: FAA, forgetting, backward transfer, buffer bytes, and the paper's FAA
    where the run is one of its benchmarks (Split NTU-60, 6 tasks), "not comparable" elsewhere.

    Example:  cascade continual report runs/penn-ft runs/penn-derpp runs/penn-charon
    """
    from cascade_cli.continual.report import report as collect

    grid = Table(title="continual learning (FAA, forgetting, BWT in %)")
    for column in ("run", "method", "buffer", "FAA", "forgetting", "BWT", "KiB", "paper FAA"):
        grid.add_column(column, justify="left" if column in ("run", "method") else "right",
                        overflow="fold" if column == "run" else "ellipsis")
    fmt = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    rows = collect(runs)
    for row in rows:
        grid.add_row(row["run"], row["method"], str(row["buffer"]), fmt(row["faa"]), fmt(row["forgetting"]),
                     fmt(row["bwt"]), f"{row['buffer_bytes'] / 1024:,.0f}",
                     f"{row['paper_faa']:.2f}" if row["comparable"] else "n/c")
    console = Console()
    console.print(grid)
    if not all(row["comparable"] for row in rows):
        console.print("n/c: not comparable; the paper reports Split NTU-60 and Split NTU-120 only", highlight=False)
