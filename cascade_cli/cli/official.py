"""`cascade download` and `cascade convert`: the authors' released checkpoints as cascade checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cascade_cli.cli.common import choice_enum, cli_command
from cascade_cli.official.release import DATASETS, DEFAULT_REVISION, VARIANTS

OfficialDatasetName = choice_enum("OfficialDatasetName", DATASETS)
Variant = choice_enum("Variant", VARIANTS)

HeadsOpt = typer.Option(None, "--heads", min=1, metavar="N", help="Attention heads of the model (not stored in official "
                        "files) \\[default: the paper's for that dataset].")
EvalHeadsOpt = typer.Option(None, "--eval-cross-attn-heads", min=1, metavar="N", help="Rebuild the cross-attention with this "
                            "many heads, as the official Penn/N-UCLA evaluation did (4): reproduces that quirk.")


def _print_conversion(summary: dict) -> None:
    for kind, path in summary["outputs"].items():
        typer.echo(f"{kind} checkpoint: {path}")
    typer.echo(f"CascadeFormer {summary['variant']} for {summary['dataset']}/{summary['protocol']}; "
               f"evaluate with: cascade evaluate {summary['outputs'].get('finetune', '<finetuned checkpoint>')} "
               f"--data <prepared {summary['dataset']}>")


@cli_command
def download(
    variant: Variant = typer.Option(Variant("1.0"), "--variant", help="1.0, 1.1 or 1.2 (1.1/1.2 folders are "
                                    "expected by analogy)."),
    dataset: OfficialDatasetName = typer.Option(OfficialDatasetName("penn_action"), "--dataset", metavar="DATASET",
                                                help="penn_action, nw_ucla, ntu60_xsub or ntu60_xview."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where the converted checkpoints go "
                                       "\\[default: <dataset>-<variant> under checkpoints/official]."),
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
    from cascade_cli.official.convert import convert_official, download_official

    folder = download_official(variant.value, dataset.value, revision=revision or DEFAULT_REVISION,
                               cache_dir=cache_dir, offline=offline)
    out = out or Path("checkpoints") / "official" / f"{dataset.value}-{variant.value}"
    _print_conversion(convert_official(folder, out, dataset=dataset.value, variant=variant.value, heads=heads,
                                       eval_cross_attn_heads=eval_heads))


@cli_command
def convert(
    source: Path = typer.Argument(..., help="Folder with official *_pretrained.pt / *_finetuned_{T1,T2,cross_attn,"
                                            "head}.pt files."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder; it receives finetuned.safetensors and pretrained.safetensors."),
    dataset: Optional[OfficialDatasetName] = typer.Option(None, "--dataset", metavar="DATASET", help="penn_action, nw_ucla, ntu60_xsub "
                                                          "or ntu60_xview \\[default: detected from names and shapes]."),
    variant: Optional[Variant] = typer.Option(None, "--variant", help="1.0, 1.1 or 1.2 \\[default: detected]."),
    heads: Optional[int] = HeadsOpt, eval_heads: Optional[int] = EvalHeadsOpt,
) -> None:
    """Convert official CascadeFormer checkpoint files you already have into cascade checkpoints.

    Example:  cascade convert action_checkpoints/NTU_CS --out checkpoints/ntu60_xsub-1.0
    """
    from cascade_cli.official.convert import convert_official

    _print_conversion(convert_official(source, out, dataset=dataset.value if dataset else None,
                                       variant=variant.value if variant else None, heads=heads,
                                       eval_cross_attn_heads=eval_heads))
