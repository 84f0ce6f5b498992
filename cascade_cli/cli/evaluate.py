"""`cascade evaluate` and `cascade predict`: what a finetuned model does on a split or on raw files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.cli.common import (DeviceOpt, GpuOpt, QuietOpt, choice_enum, device_of, err_console,
                                    cli_command, print_report)
from cascade_cli.data.splits import SPLITS
from cascade_cli.config import EXIT_RULES


Split = choice_enum("Split", SPLITS)
ExitRule = choice_enum("ExitRule", EXIT_RULES)
ExitRuleOpt = typer.Option(ExitRule("max_softmax"), "--rule", metavar="RULE", help="How the exit head's confidence is "
                           "measured: max_softmax (top probability) or entropy (1 - entropy / log K).")


@cli_command
def evaluate(
    checkpoints: List[str] = typer.Argument(..., help="Finetuning run directory (uses checkpoints/best.safetensors) "
                                                      "or checkpoint file; several (e.g. seeds) give mean ± std."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    split: Split = typer.Option(Split("test"), "--split", help="test, or val/train to inspect the training side."),
    breakdown: bool = typer.Option(False, "--per-class-breakdown", help="Per-class table, confusion matrix (CSV "
                                   "and PNG) and, for NTU, the single- vs two-person breakdown."),
    clips: int = typer.Option(1, "--clips", min=1, help="Average the logits of K deterministic temporal views per clip."),
    save_scores: bool = typer.Option(False, "--save-scores", help="Save per-clip logits, labels and predictions "
                                     "(eval_<split>_scores.npz) for ensembling."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report JSON path \\[default: eval_<split>.json in the run "
                                       "directory; with several runs, the mean ± std report]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size "
                                                                               "\\[default: the run's eval_batch_size]."),
    early_exit: bool = typer.Option(False, "--early-exit", help="Evaluate the cascade with its exit head after T1 "
                                    "(from `cascade exits fit`): threshold chosen on validation, then test top-1, "
                                    "GFLOPs, time, exit shares and calibration with and without exits "
                                    "(a JSON report and a PNG beside the checkpoint)."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="With --early-exit: the most top-1 "
                                   "points (of 100) the exits may cost on the validation clips."),
    budget: Optional[float] = typer.Option(None, "--budget", help="With --early-exit, instead of --max-drop: the "
                                           "GFLOPs per clip allowed, as a fraction of the full model's (e.g. 0.6); "
                                           "the best validation top-1 within it is chosen."),
    exit_rule: ExitRule = ExitRuleOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Top-1, top-5 and class-mean accuracy of a finetuned model on the test split, as tables and JSON.

    Results do not depend on batch size or order: padded frames are masked everywhere.

    Example:  cascade evaluate runs/ft --per-class-breakdown
              cascade evaluate runs/ft-seed1 runs/ft-seed2 runs/ft-seed3
    """
    import json

    from cascade_cli.atomic import write_text
    from cascade_cli.evaluate import aggregate_reports
    from cascade_cli.evaluate import evaluate as run_evaluate

    dev = device_of(gpu, device)
    if early_exit:
        if breakdown or clips != 1 or save_scores or split.value != "test":
            from cascade_cli.errors import UserError
            raise UserError("--early-exit reports on the test split with one view per clip: it does not combine "
                            "with --split, --clips, --per-class-breakdown or --save-scores")
        return _early_exit(checkpoints, data, max_drop, budget, exit_rule.value, batch_size, out, dev, quiet)
    several = len(checkpoints) > 1
    reports = [run_evaluate(c, data_path=data, split=split.value, device=dev, batch_size=batch_size,
                            out=None if several else out, breakdown=breakdown, clips=clips, save_scores=save_scores)
               for c in checkpoints]
    console = Console()
    if several:
        summary = aggregate_reports(reports)
        if out:
            write_text(out, json.dumps(summary, indent=2) + "\n")
        if quiet:
            typer.echo(f"top1 {100 * summary['top1']['mean']:.2f} ± {100 * summary['top1']['std']:.2f}")
            return
        grid = Table(title=f"{summary['dataset']} / {summary['protocol']} / {summary['split']}: "
                           f"{summary['runs']} runs, mean ± std")
        grid.add_column("metric")
        grid.add_column("value", justify="right")
        for metric in ("top1", "top5", "macro"):
            grid.add_row(metric, f"{100 * summary[metric]['mean']:.2f} ± {100 * summary[metric]['std']:.2f} %")
        console.print(grid)
        return
    report = reports[0]
    if quiet:
        typer.echo(f"top1 {100 * report['top1']:.2f}  top5 {100 * report['top5']:.2f}  macro {100 * report['macro']:.2f}")
        return
    print_report(report, console)


def _early_exit(checkpoints: list[str], data: str | None, max_drop: float, budget: float | None, rule: str,
                batch_size: int | None, out: Path | None, device: str | None, quiet: bool) -> None:
    from cascade_cli.errors import UserError
    from cascade_cli.exits.report import evaluate_early_exit

    if len(checkpoints) > 1:
        raise UserError("--early-exit takes one checkpoint")
    r, out = evaluate_early_exit(checkpoints[0], data=data, device=device, out=out, max_drop=max_drop,
                                 budget=budget, rule=rule, batch_size=batch_size or 64)
    t = r["test"]
    if quiet:
        typer.echo(f"top1 {100 * t['top1_early_exit']:.2f} (full {100 * t['top1_full']:.2f})  "
                   f"exits {100 * t['exit_share']['t1']:.1f} %")
        return
    grid = Table(title=f"{r['dataset']} / {r['protocol']} / test: early exit after T1 at {rule} "
                       f">= {r['threshold']:.3f} (chosen on val, " + (f"max drop {max_drop:g} points)"
                       if budget is None else f"budget {100 * budget:g} % of the full model's GFLOPs)"))
    grid.add_column("")
    grid.add_column("full model", justify="right")
    grid.add_column("early exit", justify="right")
    grid.add_row("top-1 %", f"{100 * t['top1_full']:.2f}", f"{100 * t['top1_early_exit']:.2f}")
    grid.add_row("GFLOPs / clip", f"{t['gflops_per_clip_full']:.4f}", f"{t['gflops_per_clip_early_exit']:.4f}")
    grid.add_row("clips / s (batched)", f"{t['clips_per_second_full']:.1f}", f"{t['clips_per_second_early_exit']:.1f}")
    grid.add_row("batch-1 ms, mean / p95", *(f"{t[k]['mean']:.2f} / {t[k]['p95']:.2f}" for k in
                                             ("batch1_latency_ms_full", "batch1_latency_ms_early_exit")))
    grid.add_row("clips leaving after T1", "0 %", f"{100 * t['exit_share']['t1']:.1f} %")
    grid.add_row("ECE (early: the exit head)", f"{t['ece_full']:.3f}", f"{t['ece_exit_head']:.3f}")
    Console().print(grid)
    err_console.print(f"report: {escape(str(out))} (and {escape(out.with_suffix('.png').name)})")


@cli_command
def predict(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory, checkpoint file, or converted official checkpoint."),
    inputs: List[Path] = typer.Argument(..., help=".skeleton, .npy ((T,J,C) one clip, (B,T,J,C) a batch), .npz "
                                                  "(data [+ lengths]) or .json files."),
    top_k: int = typer.Option(5, "--top-k", "-k", min=1, help="How many classes to show per clip."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON: per clip the top-k, all probabilities and logits."),
    raw: bool = typer.Option(False, "--raw", help="Feed the arrays to the model exactly as given: no person "
                             "selection, resampling, centring or normalisation (debugging, parity checks)."),
    image_size: Optional[tuple[float, float]] = typer.Option(None, "--image-size", metavar="W H",
                                                             help="Image width and height, for models that "
                                                                  "normalise pixels by image size (Penn Action)."),
    without_confidence: bool = typer.Option(False, "--without-confidence", help="Accept inputs without the "
                                            "per-joint confidence channel the model's pipeline uses (Penn Action's "
                                            "visibility): every joint then counts as visible, and the output says so."),
    clips: int = typer.Option(1, "--clips", min=1, help="Average the logits of K deterministic temporal views per clip."),
    early_exit: Optional[float] = typer.Option(None, "--early-exit", metavar="THRESHOLD", help="Run the early-exit "
                                               "cascade (a checkpoint from `cascade exits fit`): clips whose exit "
                                               "head is this confident leave after T1. Use the threshold that "
                                               "`cascade evaluate --early-exit` chose on validation."),
    exit_rule: ExitRule = ExitRuleOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
) -> None:
    """Classify raw skeleton files with a trained model, through the model's own preprocessing.

    Example:  cascade predict runs/ft S001C001P001R001A001.skeleton my_clip.npy --top-k 3
    """
    import json

    from cascade_cli.predict import predict as run_predict

    results = run_predict(checkpoint, inputs, top_k=top_k, raw=raw, device=device_of(gpu, device), image_size=image_size,
                          views=clips, without_confidence=without_confidence, exit_threshold=early_exit,
                          exit_rule=exit_rule.value)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    grid = Table(title=f"predictions ({len(results)} clip(s))")
    grid.add_column("input")
    for rank in range(1, min(top_k, len(results[0]["top"])) + 1):
        grid.add_column(f"#{rank}")
    for r in results:
        grid.add_row(escape(Path(r["input"]).name), *(f"{escape(t['class'])} ({100 * t['prob']:.1f} %)" for t in r["top"]))
    Console().print(grid)
    if early_exit is not None:
        left = sum(r["exit"] == "t1" for r in results)
        err_console.print(f"early exit: {left} of {len(results)} clip(s) left after T1 ({exit_rule.value} >= {early_exit:g})")
    if notes := sorted({r["note"] for r in results if "note" in r}):
        err_console.print(f"note: {escape('; '.join(notes))}")
