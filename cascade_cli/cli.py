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
from rich.markup import escape
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
data_app = typer.Typer(help="Inspect prepared datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
presets_app = typer.Typer(help="The YAML presets: the demo, and one per paper experiment.", no_args_is_help=True)
app.add_typer(presets_app, name="presets")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def handles_user_errors(fn):
    """Turn UserError into `error: ...` and a non-zero exit code instead of a traceback."""

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

    return wrapper


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
ResumeOpt = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last finished epoch.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="Print only warnings and the final result.")
CompileOpt = typer.Option(False, "--compile", help="Compile the model with torch.compile (sets compile=true).")


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


OutOpt = typer.Option(..., "--out", "-o", help="Output dataset directory (must not exist unless --overwrite).")
WorkersOpt = typer.Option(None, "--workers", "-j", min=1, help="Parallel worker processes \\[default: all cores].")
StrictOpt = typer.Option(False, "--strict", help="Fail (non-zero exit, no dataset) at the first rejected file "
                                                 "instead of reporting and skipping it.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out once the new one is complete.")

ExportNpzOpt = typer.Option(None, "--export-npz", help="Also write the de-facto standard arrays per protocol "
                            "(NTU60_CS.npz, NTU60_CV.npz / NTU120_CSub.npz, NTU120_CSet.npz: x (N,300,150), "
                            "one-hot y) into this folder, for other toolkits.")
MissingListOpt = typer.Option(None, "--missing-list", help="An extra missing-skeleton list (official header lines "
                              "are fine), added to the shipped official one.")


def _finish_prepare(report: dict, out: Path, quiet: bool) -> None:
    from cascade_cli.data.prepare import REPORT, summary_lines

    reporter = Reporter(quiet)
    for line in summary_lines(report):
        reporter.info(line)
    reporter.info(f"dataset written to {out} (problems listed in {out / REPORT})")


@prepare_app.command("ntu60")
@handles_user_errors
def prepare_ntu60(
    raw_dir: Path = typer.Option(..., "--raw-dir", help="Folder with the raw .skeleton files (searched recursively)."),
    out: Path = OutOpt, workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    export_npz: Optional[Path] = ExportNpzOpt, missing_list: Optional[Path] = MissingListOpt, quiet: bool = QuietOpt,
) -> None:
    """Prepare NTU RGB+D 60 from raw .skeleton files, with the standard denoising and both protocols.

    Skips the official missing-skeleton samples, denoises and assigns actors as the CTR-GCN pipeline
    does, centres on SpineMid of actor 1's first valid frame, and writes protocols xsub and xview
    (40,091 / 16,487 and 37,646 / 18,932 clips) without padding. Interrupted runs resume.

    Example:  cascade prepare ntu60 --raw-dir nturgb+d_skeletons --out data/ntu60
    """
    _prepare_ntu("ntu60", raw_dir, out, workers, strict, overwrite, export_npz, missing_list, quiet)


@prepare_app.command("ntu120")
@handles_user_errors
def prepare_ntu120(
    raw_dir: Path = typer.Option(..., "--raw-dir", help="Folder with the raw .skeleton files of NTU 120 (S001-S032)."),
    out: Path = OutOpt, workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    export_npz: Optional[Path] = ExportNpzOpt, missing_list: Optional[Path] = MissingListOpt, quiet: bool = QuietOpt,
) -> None:
    """Prepare NTU RGB+D 120 from raw .skeleton files, with protocols xsub and xset.

    The same pipeline as ntu60 (missing list, denoising, centring) over setups S001-S032.

    Example:  cascade prepare ntu120 --raw-dir nturgb+d_skeletons --out data/ntu120
    """
    _prepare_ntu("ntu120", raw_dir, out, workers, strict, overwrite, export_npz, missing_list, quiet)


def _prepare_ntu(version, raw_dir, out, workers, strict, overwrite, export_npz, missing_list, quiet) -> None:
    from cascade_cli.data.ntu import prepare_ntu

    report = prepare_ntu(raw_dir, out, version, workers=workers, strict=strict, overwrite=overwrite,
                         export_npz=export_npz, missing_list=missing_list, reporter=Reporter(quiet))
    _finish_prepare(report, out, quiet)


@prepare_app.command("penn")
@handles_user_errors
def prepare_penn(
    raw_dir: Path = typer.Option(..., "--raw-dir", help="The Penn_Action folder (or its labels/ folder of .mat files)."),
    out: Path = OutOpt, workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prepare Penn Action: 2,326 clips of 13 2-D joints, 15 classes, official split 1,258 / 1,068.

    Coordinates stay in pixels; joint visibility is kept as per-joint confidence and image sizes
    per clip, so training can zero invisible joints (data.invisible) and normalise by image size
    (data.normalize=image).

    Example:  cascade prepare penn --raw-dir Penn_Action --out data/penn
    """
    from cascade_cli.data.penn import prepare_penn as run

    report = run(raw_dir, out, workers=workers, strict=strict, overwrite=overwrite, reporter=Reporter(quiet))
    _finish_prepare(report, out, quiet)


@prepare_app.command("nucla")
@handles_user_errors
def prepare_nucla(
    raw_dir: Path = typer.Option(..., "--raw-dir", help="The all_sqe folder of N-UCLA .json skeletons."),
    out: Path = OutOpt,
    joint_order: str = typer.Option("kinect", "--joint-order", help="kinect (Kinect v1 order) or official (the "
                                    "SkateFormer order the official N-UCLA checkpoints were trained with)."),
    workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prepare Northwestern-UCLA: 1,484 clips of 20 3-D joints, 10 classes, cross-view 1,020 / 464.

    Example:  cascade prepare nucla --raw-dir all_sqe --out data/nucla
    """
    from cascade_cli.data.nucla import prepare_nucla as run

    if joint_order not in ("kinect", "official"):
        raise UserError(f"--joint-order {joint_order!r}: use kinect or official")
    report = run(raw_dir, out, joint_order=joint_order, workers=workers, strict=strict, overwrite=overwrite,
                 reporter=Reporter(quiet))
    _finish_prepare(report, out, quiet)


@prepare_app.command("custom")
@handles_user_errors
def prepare_custom(
    clips: Path = typer.Option(..., "--clips", help="Folder with one .npy/.npz/.json per clip, or one .npz with "
                               "arrays data (N, T, [M,] J, C) and lengths (N,)."),
    labels: Path = typer.Option(..., "--labels", help="CSV with a header: clip,label[,split][,subject][,camera]."),
    layout: str = typer.Option(..., "--layout", help="ntu25, kinect_v1_20, penn13, coco17, openpose25 or mediapipe33."),
    out: Path = OutOpt,
    name: str = typer.Option("custom", "--name", help="Dataset name recorded in the manifest and checkpoints."),
    coords: Optional[int] = typer.Option(None, "--coords", min=2, max=3, help="2 or 3 coordinates per joint "
                                         "\\[default: the layout's]."),
    workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Import your own skeletons: arrays of shape (T, J, C) or (T, M, J, C) per clip, labels from a CSV.

    C is the layout's 2 or 3 coordinates, optionally plus a per-joint confidence as the last channel.
    Clips without a label row are rejected with a reason; splits come from the CSV's split column.

    Example:  cascade prepare custom --clips my_clips --labels labels.csv --layout coco17 --out data/mine
    """
    from cascade_cli.data.custom import prepare_custom as run

    report = run(clips, labels, out, layout=layout, name=name, coords=coords, workers=workers, strict=strict,
                 overwrite=overwrite, reporter=Reporter(quiet))
    _finish_prepare(report, out, quiet)


@data_app.command("info")
@handles_user_errors
def data_info(
    path: Path = typer.Argument(..., help="Prepared dataset directory."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check every array against its manifest checksum."),
) -> None:
    """Classes, clips per split, clip lengths, and an integrity check of a prepared dataset.

    Example:  cascade data info data/penn
    """
    from cascade_cli.data.format import open_dataset
    from cascade_cli.data.info import describe

    info = describe(open_dataset(path), verify=verify)
    console = Console(soft_wrap=True)
    lengths = info["lengths"]
    console.print(f"[bold]{escape(info['name'])}[/bold] ({escape(info['path'])}): {info['clips']} clips, {info['frames']} frames, "
                  f"layout {info['layout']} ({info['joints']} joints x {info['coords']}D, up to {info['persons']} "
                  f"person(s), {info['two_person_clips']} clips with two or more)"
                  + (", per-joint confidence" if info["confidence"] else ""), highlight=False)
    console.print(f"clip length: min {lengths['min']}, median {lengths['median']:g}, mean {lengths['mean']:.1f}, "
                  f"max {lengths['max']} frames", highlight=False)
    table = Table(title="clips per class and split")
    columns = [k for k in info["classes"][0] if k not in ("label", "name")]
    for column in ("label", "class", *columns):
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in info["classes"]:
        table.add_row(str(row["label"]), row["name"], *(str(row[c]) for c in columns))
    table.add_row("", "total", *(str(sum(r[c] for r in info["classes"])) for c in columns))
    console.print(table)
    for name, spec in info["protocols"].items():
        console.print(f"protocol {name}: {spec['train']} train / {spec['test']} test. {spec['description']}", markup=False,
                      highlight=False)
    if info["problems"] is None:
        return
    if info["problems"]:
        for problem in info["problems"]:
            err_console.print(f"[red]integrity:[/red] {escape(problem)}")
        raise typer.Exit(1)
    console.print("integrity: every array matches its checksum")


@app.command()
@handles_user_errors
def pretrain(
    data: Optional[str] = DataOpt, preset: Optional[str] = PresetOpt, sets: Optional[List[str]] = SetOpt,
    run_dir: Optional[Path] = RunDirOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    seed: Optional[int] = SeedOpt, resume: bool = ResumeOpt, print_config: bool = PrintOpt,
    quiet: bool = QuietOpt, compile_model: bool = CompileOpt,
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
    cfg.compile = cfg.compile or compile_model
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

    if resume and run_dir is None:
        raise UserError("--resume needs --run-dir of the run to continue")
    if resume:
        base = _saved_config(run_dir)
    elif pretrained:
        base = to_dict(load_checkpoint(resolve_checkpoint(pretrained, "best")).config)
    else:
        raise UserError("finetuning needs a pretrained T1: pass --pretrained RUN_DIR_OR_CHECKPOINT")
    cfg = _resolve_config(preset, sets, data=data, seed=seed, device=device, gpu=gpu, base=base)
    cfg.compile = cfg.compile or compile_model
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
    checkpoints: List[str] = typer.Argument(..., help="Finetuning run directory (uses checkpoints/best.safetensors) "
                                                      "or checkpoint file; several (e.g. seeds) give mean ± std."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    split: str = typer.Option("test", "--split", help="test, or val/train to inspect the training side."),
    breakdown: bool = typer.Option(False, "--per-class-breakdown", help="Per-class table, confusion matrix (CSV "
                                   "and PNG) and, for NTU, the single- vs two-person breakdown."),
    clips: int = typer.Option(1, "--clips", min=1, help="Average the logits of K deterministic temporal views per clip."),
    save_scores: bool = typer.Option(False, "--save-scores", help="Save per-clip logits, labels and predictions "
                                     "(eval_<split>_scores.npz) for ensembling."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report JSON path \\[default: RUN_DIR/eval_<split>.json; "
                                       "with several runs, the mean ± std report]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Evaluation batch size "
                                                                               "\\[default: the run's eval_batch_size]."),
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

    dev = f"cuda:{gpu}" if gpu is not None else device
    several = len(checkpoints) > 1
    reports = [run_evaluate(c, data_path=data, split=split, device=dev, batch_size=batch_size,
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
    _print_report(report, console)


@app.command()
@handles_user_errors
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
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
) -> None:
    """Classify raw skeleton files with a trained model, through the model's own preprocessing.

    Example:  cascade predict runs/ft S001C001P001R001A001.skeleton my_clip.npy --top-k 3
    """
    import json

    from cascade_cli.predict import predict as run_predict

    dev = f"cuda:{gpu}" if gpu is not None else device
    results = run_predict(checkpoint, inputs, top_k=top_k, raw=raw, device=dev, image_size=image_size)
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


HeadsOpt = typer.Option(None, "--heads", min=1, help="Attention heads of the model (not stored in official "
                        "files) \\[default: the paper's for that dataset].")
EvalHeadsOpt = typer.Option(None, "--eval-cross-attn-heads", min=1, help="Rebuild the cross-attention with this "
                            "many heads, as the official Penn/N-UCLA evaluation did (4): reproduces that quirk.")


def _print_conversion(summary: dict) -> None:
    for kind, path in summary["outputs"].items():
        typer.echo(f"{kind} checkpoint: {path}")
    typer.echo(f"CascadeFormer {summary['variant']} for {summary['dataset']}/{summary['protocol']}; "
               f"evaluate with: cascade evaluate {summary['outputs'].get('finetune', '<finetuned checkpoint>')} "
               f"--data <prepared {summary['dataset']}>")


@app.command()
@handles_user_errors
def download(
    variant: str = typer.Option("1.0", "--variant", help="1.0, 1.1 or 1.2 (1.1/1.2 folders are expected by analogy)."),
    dataset: str = typer.Option("penn_action", "--dataset", help="penn_action, nw_ucla, ntu60_xsub or ntu60_xview."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where the converted checkpoints go "
                                       "\\[default: checkpoints/official/<dataset>-<variant>]."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub commit, tag or branch "
                                           "\\[default: a pinned commit of the authors' repository]."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Hugging Face cache \\[default: the standard one]."),
    offline: bool = typer.Option(False, "--offline", help="Use the cache only; never touch the network."),
    heads: Optional[int] = HeadsOpt, eval_heads: Optional[int] = EvalHeadsOpt,
) -> None:
    """Fetch the authors' released checkpoints from the Hugging Face Hub and convert them.

    Downloads YusenPeng/CascadeFormerCheckpoints (MIT) at a pinned revision into the standard cache,
    then converts the official per-module .pt files into one self-describing checkpoint (architecture
    detected from key names and shapes, every key consumed, provenance recorded).

    Example:  cascade download --variant 1.0 --dataset penn_action
    """
    from cascade_cli.official import DEFAULT_REVISION, convert_official, download_official

    folder = download_official(variant, dataset, revision=revision or DEFAULT_REVISION, cache_dir=cache_dir,
                               offline=offline)
    out = out or Path("checkpoints") / "official" / f"{dataset}-{variant}"
    _print_conversion(convert_official(folder, out, dataset=dataset, variant=variant, heads=heads,
                                       eval_cross_attn_heads=eval_heads))


@app.command()
@handles_user_errors
def convert(
    source: Path = typer.Argument(..., help="Folder with official *_pretrained.pt / *_finetuned_{T1,T2,cross_attn,"
                                            "head}.pt files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for finetuned.safetensors / pretrained.safetensors."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="penn_action, nw_ucla, ntu60_xsub or ntu60_xview "
                                          "\\[default: detected from names and shapes]."),
    variant: Optional[str] = typer.Option(None, "--variant", help="1.0, 1.1 or 1.2 \\[default: detected]."),
    heads: Optional[int] = HeadsOpt, eval_heads: Optional[int] = EvalHeadsOpt,
) -> None:
    """Convert official CascadeFormer checkpoint files you already have into cascade checkpoints.

    Example:  cascade convert action_checkpoints/NTU_CS --out checkpoints/ntu60_xsub-1.0
    """
    from cascade_cli.official import convert_official

    _print_conversion(convert_official(source, out, dataset=dataset, variant=variant, heads=heads,
                                       eval_cross_attn_heads=eval_heads))


@app.command()
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
    cfg = _resolve_config(preset, sets, data=str(data_dir), seed=seed, device=device, gpu=gpu)
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
        _print_report(report, Console())
    typer.echo(f"demo test top-1: {100 * report['top1']:.2f} % ({time.perf_counter() - started:.0f} s)")


@presets_app.command("list")
@handles_user_errors
def presets_list(
    table: Optional[str] = typer.Option(None, "--table", "-t", help="Only presets of this paper table (e.g. 7)."),
) -> None:
    """Every preset with the paper table, dataset and top-1 it targets.

    Use a preset with --preset NAME on pretrain, finetune and demo; `cascade ablate` runs a table's arms.

    Example:  cascade presets list --table 9
    """
    from cascade_cli.config import list_presets, preset_info

    grid = Table(title="presets (cascade_cli/presets/<name>.yaml)")
    for column in ("name", "table", "dataset", "arm", "paper top-1", "title"):
        grid.add_column(column, justify="right" if column == "paper top-1" else "left")
    for name in list_presets():
        info = preset_info(name)
        if table is not None and info.get("table") != table:
            continue
        paper = info.get("paper_top1")
        grid.add_row(name, info.get("table", ""), info.get("dataset", ""), info.get("arm", ""),
                     "" if paper is None else f"{paper:.2f}", info.get("title", ""))
    Console().print(grid)


@app.command()
@handles_user_errors
def ablate(
    study: str = typer.Argument(..., help="variant, pretrain-epochs, masking, representation, decoder or freezing."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study directory \\[default: studies/<study>-<budget>]."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Prepared dataset to run on \\[default: "
                                           "data/<the paper's dataset>, e.g. data/penn_action]."),
    budget: str = typer.Option("quick", "--budget", help="quick: small model and few epochs, minutes on a CPU; "
                               "paper: the published recipe."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Runs per arm (seeds 42, 43, ...); mean ± std are reported."),
    sets: Optional[List[str]] = SetOpt, gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Run one paper ablation (all its arms: pretrain -> finetune -> evaluate) and compare with the paper.

    Studies: variant (Table 1), pretrain-epochs (6), masking (7), representation (8), decoder (9),
    freezing (10). Arms share seeds and data; finished arms are skipped when re-run, and a failing
    arm is reported while the others go on. Writes results.{md,csv,json} into the study directory.
    With --budget quick or a dataset other than the paper's, the table says the numbers are not
    comparable with the paper's.

    Example:  cascade ablate decoder --dataset data/penn_action --budget quick
    """
    from cascade_cli.ablate import load_study, run_study, study_title

    out = out or Path("studies") / f"{study}-{budget}"
    dev = f"cuda:{gpu}" if gpu is not None else device
    run_study(study, out, dataset=dataset, budget=budget, seeds=seeds, device=dev, overrides=tuple(sets or ()),
              reporter=Reporter(quiet))
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


@app.command()
@handles_user_errors
def report(
    studies: List[Path] = typer.Argument(..., help="One or more finished study directories."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where report.md and report.png go "
                                       "\\[default: the study directory, or reports/ for several]."),
) -> None:
    """Paper-style Markdown tables of finished ablation studies and a bar chart of ours vs the paper.

    Example:  cascade report studies/masking-quick studies/decoder-quick --out reports/penn
    """
    from cascade_cli.ablate import render_report

    out = out or (studies[0] if len(studies) == 1 else Path("reports"))
    md, png = render_report(studies, out)
    typer.echo(md.read_text())
    typer.echo(f"written: {md}, {png}")


def main() -> None:
    app()
