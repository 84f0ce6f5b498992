"""`cascade prepare ...`: raw skeleton data in, a prepared dataset directory out."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cascade_cli.cli.common import (OutOpt, OverwriteOpt, QuietOpt, StrictOpt, WorkersOpt, choice_enum,
                                   cli_command)
from cascade_cli.data.registry import NW_UCLA
from cascade_cli.layouts import LAYOUTS
from cascade_cli.progress import Reporter

prepare_app = typer.Typer(help="Turn raw skeleton data into a prepared dataset directory (manifest + "
                               "memory-mapped arrays) that every training command reads.",
                          no_args_is_help=True)

JointOrder = choice_enum("JointOrder", NW_UCLA.joint_orders)

ExportNpzOpt = typer.Option(None, "--export-npz", help="Also write the de-facto standard arrays per protocol "
                            "(NTU60_CS.npz, NTU60_CV.npz / NTU120_CSub.npz, NTU120_CSet.npz: x (N,300,150), "
                            "one-hot y) into this folder, for other toolkits.")
MissingListOpt = typer.Option(None, "--missing-list", help="An extra missing-skeleton list (official header lines "
                              "are fine), added to the shipped official one.")
Ntu60RawDirOpt = typer.Option(..., "--raw-dir", help="Folder with the raw .skeleton files (searched recursively).")
Ntu120RawDirOpt = typer.Option(..., "--raw-dir", help="Folder with the raw .skeleton files of NTU 120 (S001-S032).")


def _finish_prepare(report: dict, out: Path, quiet: bool) -> None:
    from cascade_cli.data.prepare import REPORT, summary_lines

    reporter = Reporter(quiet)
    for line in summary_lines(report):  # the result and its problems: never hidden by --quiet
        reporter.result(line)
    reporter.result(f"dataset written to {out} (problems listed in {out / REPORT})")


@prepare_app.command("synthetic")
@cli_command
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
    Reporter(quiet).result(f"wrote {ds.num_clips} clips, {ds.num_classes} classes to {path}")


@prepare_app.command("ntu60")
@cli_command
def prepare_ntu60(raw_dir: Path = Ntu60RawDirOpt, out: Path = OutOpt, workers: Optional[int] = WorkersOpt,
                  strict: bool = StrictOpt, overwrite: bool = OverwriteOpt, export_npz: Optional[Path] = ExportNpzOpt,
                  missing_list: Optional[Path] = MissingListOpt, quiet: bool = QuietOpt) -> None:
    """Prepare NTU RGB+D 60 from raw .skeleton files, with the standard denoising and both protocols.

    Skips the official missing-skeleton samples, denoises and assigns actors as the CTR-GCN pipeline
    does, centres on SpineMid of actor 1's first valid frame, and writes protocols xsub and xview
    (40,091 / 16,487 and 37,646 / 18,932 clips) without padding. Interrupted runs resume.

    Example:  cascade prepare ntu60 --raw-dir nturgb+d_skeletons --out data/ntu60
    """
    _prepare_ntu("ntu60", raw_dir, out, workers, strict, overwrite, export_npz, missing_list, quiet)


@prepare_app.command("ntu120")
@cli_command
def prepare_ntu120(raw_dir: Path = Ntu120RawDirOpt, out: Path = OutOpt, workers: Optional[int] = WorkersOpt,
                   strict: bool = StrictOpt, overwrite: bool = OverwriteOpt, export_npz: Optional[Path] = ExportNpzOpt,
                   missing_list: Optional[Path] = MissingListOpt, quiet: bool = QuietOpt) -> None:
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
@cli_command
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
@cli_command
def prepare_nucla(
    raw_dir: Path = typer.Option(..., "--raw-dir", help="The all_sqe folder of N-UCLA .json skeletons."),
    out: Path = OutOpt,
    joint_order: JointOrder = typer.Option(JointOrder("kinect"), "--joint-order", help="kinect (Kinect v1 order) or "
                                           "official (the SkateFormer order the official N-UCLA checkpoints were "
                                           "trained with)."),
    workers: Optional[int] = WorkersOpt, strict: bool = StrictOpt, overwrite: bool = OverwriteOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Prepare Northwestern-UCLA: 1,484 clips of 20 3-D joints, 10 classes, cross-view 1,020 / 464.

    Example:  cascade prepare nucla --raw-dir all_sqe --out data/nucla
    """
    from cascade_cli.data.nucla import prepare_nucla as run

    report = run(raw_dir, out, joint_order=joint_order.value, workers=workers, strict=strict, overwrite=overwrite,
                 reporter=Reporter(quiet))
    _finish_prepare(report, out, quiet)


@prepare_app.command("custom")
@cli_command
def prepare_custom(
    clips: Path = typer.Option(..., "--clips", help="Folder with one .npy/.npz/.json per clip, or one .npz with "
                               "arrays data (N, T, [M,] J, C) and lengths (N,)."),
    labels: Path = typer.Option(..., "--labels", help="CSV whose header line names the columns: clip and label, and optionally split (train or "
                                "test), subject and camera; e.g. clip,label,split."),
    layout: str = typer.Option(..., "--layout", metavar="NAME|FILE.yaml",
                               help=f"A built-in layout ({', '.join(LAYOUTS)}) or a layout file of your own "
                                    "(`cascade layouts show ntu25 --yaml` prints one to start from)."),
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
