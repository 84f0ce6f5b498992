"""`cascade ablate` and `cascade report`: the paper's ablation studies, run and tabulated."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from cascade_cli.ablate import BUDGETS, STUDIES, load_study, render_report, run_study, study_title
from cascade_cli.cli.common import DeviceOpt, GpuOpt, QuietOpt, SetOpt, choice_enum, device_of, cli_command
from cascade_cli.progress import Reporter

StudyName = choice_enum("StudyName", STUDIES)


Budget = choice_enum("Budget", BUDGETS)


@cli_command
def ablate(
    study: StudyName = typer.Argument(..., metavar="STUDY", help="variant, pretrain-epochs, masking, "
                                      "representation, decoder, freezing or streams."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study directory \\[default: studies/<study>-<budget>]."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Prepared dataset to run on \\[default: "
                                           "data/<the paper's dataset>, e.g. data/penn_action]."),
    budget: Budget = typer.Option(Budget.quick, "--budget", help="quick: small model and few epochs, minutes on a "
                                  "CPU; paper: the published recipe."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Runs per arm (seeds 42, 43, ...); mean ± std are reported."),
    sets: Optional[List[str]] = SetOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Run one paper ablation (all its arms: pretrain -> finetune -> evaluate) and compare with the paper.

    Studies: variant (Table 1), pretrain-epochs (6), masking (7), representation (8), decoder (9),
    freezing (10); and streams, the joint, bone and motion streams each trained alone, then fused
    with weights chosen on validation (a `fused` row beside the paper's joint-only number). Arms share seeds and data; finished arms are skipped when re-run, and a failing
    arm is reported while the others go on. Writes results.{md,csv,json} into the study directory.
    With --budget quick or a dataset other than the paper's, the table says the numbers are not
    comparable with the paper's.

    Example:  cascade ablate decoder --dataset data/penn_action --budget quick
    """
    out = out or Path("studies") / f"{study.value}-{budget.value}"
    run_study(study.value, out, dataset=dataset, budget=budget.value, seeds=seeds, device=device_of(gpu, device),
              overrides=tuple(sets or ()), reporter=Reporter(quiet))
    asked, rows = load_study(out)
    grid = Table(title=study_title(asked))
    for column in ("arm", "ours top-1 (%)", "paper (%)", "delta", "wall time", "notes"):
        grid.add_column(column, justify="left" if column in ("arm", "notes") else "right")
    for r in rows:
        ours = "-" if r["top1"] is None else f"{r['top1']:.2f}" + (f" ± {r['top1_std']:.2f}" if r["top1_std"] else "")
        delta = "-" if r["delta"] is None else f"{r['delta']:+.2f}" + ("" if r["comparable"] else " (n/c)")
        notes = "; ".join(x for x in (r["note"], "" if r["status"] == "ok" else r["status"]) if x)
        grid.add_row(r["arm"], ours, "-" if r["paper_top1"] is None else f"{r['paper_top1']:.2f}", delta,
                     f"{r['wall_s']:.0f} s", notes)
    Console().print(grid)
    Console().print(f"results in {out}/results.md, .csv, .json", highlight=False, markup=False)


@cli_command
def report(
    studies: List[Path] = typer.Argument(..., help="One or more finished study directories."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where report.md and report.png go "
                                       "\\[default: the study directory, or reports/ for several]."),
) -> None:
    """Paper-style Markdown tables of finished ablation studies and a bar chart of ours vs the paper.

    Example:  cascade report studies/masking-quick studies/decoder-quick --out reports/penn
    """
    out = out or (studies[0] if len(studies) == 1 else Path("reports"))
    md, png = render_report(studies, out)
    typer.echo(md.read_text())
    typer.echo(f"written: {md}, {png}")
