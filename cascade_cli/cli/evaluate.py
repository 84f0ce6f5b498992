"""`cascade evaluate` and `cascade predict`: what a finetuned model does on a split or on raw files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.cli.common import (DeviceOpt, ExitRule, ExitRuleOpt, GpuOpt, Precision, PrecisionOpt, QuietOpt,
                                    choice_enum, device_of, err_console, cli_command, print_report)
from cascade_cli.config import BACKENDS
from cascade_cli.data.splits import SPLITS


Split = choice_enum("Split", SPLITS)
Backend = choice_enum("Backend", BACKENDS)

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
    early_exit: bool = typer.Option(False, "--early-exit", help="Evaluate the cascade with its exit heads (from "
                                    "`cascade exits fit`, or trained jointly in finetuning): threshold chosen "
                                    "on validation, then test top-1, "
                                    "GFLOPs, time, exit shares and calibration with and without exits "
                                    "(a JSON report and a PNG beside the checkpoint)."),
    max_drop: float = typer.Option(0.5, "--max-drop", help="With --early-exit: the most top-1 "
                                   "points (of 100) the exits may cost on the validation clips."),
    budget: Optional[float] = typer.Option(None, "--budget", help="With --early-exit, instead of --max-drop: the "
                                           "GFLOPs per clip allowed, as a fraction of the full model's (e.g. 0.6); "
                                           "the best validation top-1 within it is chosen."),
    exit_rule: ExitRule = ExitRuleOpt,
    ensemble: bool = typer.Option(False, "--ensemble", help="Fuse the runs (e.g. joint, bone and motion streams) "
                                  "into one classifier: a weighted sum of their probabilities, the weights "
                                  "chosen on the shared validation split; writes eval_test_ensemble.json."),
    precision: Precision = PrecisionOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Top-1, top-5 and class-mean accuracy of a finetuned model on the test split, as tables and JSON.

    Results do not depend on batch size or order: padded frames are masked everywhere.

    Example:  cascade evaluate runs/ft --per-class-breakdown
              cascade evaluate runs/ft-seed1 runs/ft-seed2 runs/ft-seed3
              cascade evaluate runs/joints runs/bone_motion --ensemble
    """
    import json

    from cascade_cli.atomic import write_text
    from cascade_cli.evaluate import aggregate_reports
    from cascade_cli.evaluate import evaluate as run_evaluate

    dev = device_of(gpu, device)
    if ensemble:
        if early_exit or breakdown or clips != 1 or save_scores or split.value != "test":
            from cascade_cli.errors import UserError
            raise UserError("--ensemble reports on the test split with each run's own views: it does not combine "
                            "with --early-exit, --split, --clips, --per-class-breakdown or --save-scores")
        return _ensemble(checkpoints, batch_size, out, dev, precision.value, quiet)
    if early_exit:
        if precision.value != "fp32":
            from cascade_cli.errors import UserError
            raise UserError("--early-exit measures compute and time in float32; leave out --precision")
        if breakdown or clips != 1 or save_scores or split.value != "test":
            from cascade_cli.errors import UserError
            raise UserError("--early-exit reports on the test split with one view per clip: it does not combine "
                            "with --split, --clips, --per-class-breakdown or --save-scores")
        return _early_exit(checkpoints, data, max_drop, budget, exit_rule.value, batch_size, out, dev, quiet)
    several = len(checkpoints) > 1
    reports = [run_evaluate(c, data_path=data, split=split.value, device=dev, batch_size=batch_size,
                            out=None if several else out, breakdown=breakdown, clips=clips, save_scores=save_scores,
                            precision=precision.value)
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


def _ensemble(checkpoints: list[str], batch_size: int | None, out: Path | None, device: str | None,
              precision: str, quiet: bool) -> None:
    from cascade_cli.ensemble import ensemble_report

    r = ensemble_report(checkpoints, device=device, batch_size=batch_size, out=out, precision=precision)
    if quiet:
        typer.echo(f"top1 {100 * r['top1']:.2f}  top5 {100 * r['top5']:.2f}  macro {100 * r['macro']:.2f}")
        return
    grid = Table(title=f"{r['dataset']} / {r['protocol']} / test: ensemble of {len(r['ensemble'])} runs, "
                       "weights chosen on val")
    for column in ("run", "input", "weight", "val top-1 %", "test top-1 %"):
        grid.add_column(column, justify="left" if column in ("run", "input") else "right")
    for run in r["ensemble"]:
        grid.add_row(escape(run["checkpoint"]), run["representation"], f"{run['weight']:.2f}",
                     f"{100 * run['val_top1']:.2f}", f"{100 * run['test_top1']:.2f}")
    grid.add_row("fused", "", "", f"{100 * r['val_top1']:.2f}", f"{100 * r['top1']:.2f}")
    Console().print(grid)


def _early_exit(checkpoints: list[str], data: str | None, max_drop: float, budget: float | None, rule: str,
                batch_size: int | None, out: Path | None, device: str | None, quiet: bool) -> None:
    from cascade_cli.errors import UserError
    from cascade_cli.exits.report import evaluate_early_exit

    if len(checkpoints) > 1:
        raise UserError("--early-exit takes one checkpoint")
    r, out = evaluate_early_exit(checkpoints[0], data=data, device=device, out=out, max_drop=max_drop,
                                 budget=budget, rule=rule, batch_size=batch_size or 64)
    t = r["test"]
    early = 1.0 - t["exit_share"]["final"]
    if quiet:
        typer.echo(f"top1 {100 * t['top1_early_exit']:.2f} (full {100 * t['top1_full']:.2f})  "
                   f"exits {100 * early:.1f} %")
        return
    grid = Table(title=f"{r['dataset']} / {r['protocol']} / test: early exits at {', '.join(r['exits'])}, {rule} "
                       f">= {r['threshold']:.3g} (chosen on val, " + (f"max drop {max_drop:g} points)"
                       if budget is None else f"budget {100 * budget:g} % of the full model's GFLOPs)"))
    grid.add_column("")
    grid.add_column("full model", justify="right")
    grid.add_column("early exit", justify="right")
    grid.add_row("top-1 %", f"{100 * t['top1_full']:.2f}", f"{100 * t['top1_early_exit']:.2f}")
    grid.add_row("GFLOPs / clip", f"{t['gflops_per_clip_full']:.4f}", f"{t['gflops_per_clip_early_exit']:.4f}")
    grid.add_row("clips / s (batched)", f"{t['clips_per_second_full']:.1f}", f"{t['clips_per_second_early_exit']:.1f}")
    grid.add_row("batch-1 ms, mean / p95", *(f"{t[k]['mean']:.2f} / {t[k]['p95']:.2f}" for k in
                                             ("batch1_latency_ms_full", "batch1_latency_ms_early_exit")))
    grid.add_row("clips leaving early", "0 %", f"{100 * early:.1f} %")
    Console().print(grid)
    exits = Table(title="where clips leave (test)")
    for column in ("exit", "clips leaving", "top-1 % alone", "ECE", "GFLOPs if leaving"):
        exits.add_column(column, justify="left" if column == "exit" else "right")
    for place, share in t["exit_share"].items():
        exits.add_row(place, f"{100 * share:.1f} %", f"{100 * t['top1_alone'][place]:.2f}", f"{t['ece'][place]:.3f}",
                      f"{t['gflops_if_leaving_at'][place]:.4f}")
    Console().print(exits)
    err_console.print(f"report: {escape(str(out))} (and {escape(out.with_suffix('.png').name)})")


@cli_command
def predict(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory, checkpoint file, or converted official "
                                               "checkpoint; with --backend onnx, a `cascade export` folder."),
    inputs: Optional[List[Path]] = typer.Argument(None, metavar="[FILE]...", help=".skeleton, .npy ((T,J,C) one clip, (B,T,J,C) a batch), "
                                                            ".npz (data [+ lengths]) or .json files."),
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
                                               "cascade (a checkpoint with exit heads): a clip leaves at the first "
                                               "exit this confident (for --rule patience: where this many exits in "
                                               "a row agree). Use the threshold `cascade evaluate --early-exit` "
                                               "chose on validation."),
    exit_rule: ExitRule = ExitRuleOpt,
    stream: Optional[str] = typer.Option(None, "--stream", metavar="FILE|-", help="Classify a pose stream instead of "
                                         "files: JSON lines, one frame each (README, 'Live streams'), from FILE or "
                                         "- (standard input, read live: windows that come due while the model is "
                                         "busy are skipped and counted). One JSON line per window."),
    layout: Optional[str] = typer.Option(None, "--layout", metavar="LAYOUT", help="With --stream: the layout of the "
                                         "stream's joints (coco17, openpose25, mediapipe33, ntu25, ...), mapped to "
                                         "the checkpoint's \\[default: the checkpoint's own]."),
    window: int = typer.Option(32, "--window", min=1, help="With --stream: frames per window."),
    stride: int = typer.Option(4, "--stride", min=1, help="With --stream: frames between the ends of two windows."),
    detector: Optional[Path] = typer.Option(None, "--detector", metavar="DIR", help="With --stream: add the LOG/ALERT "
                                            "decision of an anomaly detector fitted on this checkpoint."),
    strict: bool = typer.Option(False, "--strict", help="With --stream: stop at the first malformed line instead "
                                "of reporting and skipping it."),
    backend: Backend = typer.Option(Backend("torch"), "--backend", metavar="torch|onnx", help="What runs the "
                                    "model: torch (the checkpoint, in PyTorch) or onnx (a `cascade export` folder "
                                    "given as CHECKPOINT, in ONNX Runtime on the CPU); preprocessing is the same."),
    precision: Precision = PrecisionOpt,
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
) -> None:
    """Classify raw skeleton files, or a live pose stream, with a trained model, through the model's
    own preprocessing.

    Example:  cascade predict runs/ft S001C001P001R001A001.skeleton my_clip.npy --top-k 3
              my_pose_tool | cascade predict runs/ft --stream - --layout coco17 --image-size 1280 720
              cascade predict runs/ft/onnx my_clip.npy --backend onnx
    """
    import json

    from cascade_cli.errors import UserError
    from cascade_cli.predict import predict as run_predict

    if stream is not None:
        if inputs:
            raise UserError("give input files or --stream, not both")
        return _predict_stream(checkpoint, stream, layout=layout, window=window, stride=stride, detector=detector,
                               strict=strict, top_k=top_k, image_size=image_size, without_confidence=without_confidence,
                               exit_threshold=early_exit, exit_rule=exit_rule.value, device=device_of(gpu, device),
                               backend=backend.value, precision=precision.value)
    if not inputs:
        raise UserError("give the input files to classify, or --stream FILE|- for a pose stream")
    if layout or detector or strict:
        raise UserError("--layout, --detector and --strict go with --stream; `cascade anomaly score` decides on files")

    results = run_predict(checkpoint, inputs, top_k=top_k, raw=raw, device=device_of(gpu, device), image_size=image_size,
                          views=clips, without_confidence=without_confidence, exit_threshold=early_exit,
                          exit_rule=exit_rule.value, backend=backend.value, precision=precision.value)
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
        left = sum(r["exit"] != "final" for r in results)
        err_console.print(f"early exit: {left} of {len(results)} clip(s) left early ({exit_rule.value} >= {early_exit:g})")
    if notes := sorted({r["note"] for r in results if "note" in r}):
        err_console.print(f"note: {escape('; '.join(notes))}")


def _predict_stream(checkpoint: str, stream: str, *, layout: str | None, window: int, stride: int,
                    detector: Path | None, strict: bool, device: str | None, backend: str, precision: str,
                    **options) -> None:
    """One JSON line per window on stdout as soon as it is classified; the counts at the end on stderr."""
    import json
    import sys

    from cascade_cli.checkpoint import resolve_checkpoint
    from cascade_cli.errors import UserError
    from cascade_cli.predict import open_classifier
    from cascade_cli.stream.classify import StreamSummary, classify_stream, stream_classifier

    found = None
    if detector is not None and backend != "torch":
        raise UserError("--detector runs with the checkpoint in PyTorch; leave out --backend onnx")
    if detector is not None and precision != "fp32":
        raise UserError("--detector scores in float32, as it was fitted; leave out --precision")
    if detector is not None:
        from cascade_cli.anomaly.detector import open_detector

        found = open_detector(detector)
        classifier = found.classifier(device)
        if resolve_checkpoint(checkpoint, "best", kind="finetune").resolve() != classifier.path.resolve():
            raise UserError(f"--detector {detector}: fitted on {classifier.path}, not on {checkpoint}")
    else:
        classifier = open_classifier(checkpoint, backend, device, precision)
    streamer = stream_classifier(classifier, layout=layout, detector=found, **options)
    if stream == "-":
        source, live = sys.stdin, True
    else:
        path = Path(stream)
        if not path.is_file():
            raise UserError(f"--stream {stream}: no such file (use - for standard input)")
        source, live = path.open(encoding="utf-8-sig"), False
    summary = StreamSummary()
    try:
        for record in classify_stream(streamer, source, window=window, stride=stride, live=live, strict=strict,
                                      summary=summary):
            if "malformed" in record:
                err_console.print(f"skipped line {record['malformed']['line']}: {escape(record['malformed']['error'])}")
            typer.echo(json.dumps(record), nl=True)
            sys.stdout.flush()
    finally:
        if source is not sys.stdin:
            source.close()
    err_console.print(json.dumps(summary.to_dict()["summary"]))
