"""`cascade exits fit`: give a finetuned classifier an exit head after T1, so that `cascade evaluate
--early-exit` can let confident clips skip T2."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cascade_cli.cli.common import DeviceOpt, GpuOpt, QuietOpt, choice_enum, cli_command, device_of
from cascade_cli.config import EXIT_PLACES
from cascade_cli.progress import Reporter

ExitPlaces = choice_enum("ExitPlaces", EXIT_PLACES)

exits_app = typer.Typer(help="Early exits: exit heads fitted on a frozen classifier, after T1 or after every "
                             "encoder layer; clips they are sure of leave there (`cascade evaluate --early-exit` "
                             "reports the trade).",
                        no_args_is_help=True)


@exits_app.command("fit")
@cli_command
def fit(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory (uses checkpoints/best.safetensors) or "
                                               "checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write: the classifier, unchanged, plus "
                                                      "the exit head."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    places: ExitPlaces = typer.Option(ExitPlaces("t1"), "--exits", help="t1: one exit, after T1 (about half the "
                                      "compute lies after it); layers: an exit after every encoder layer of T1 and T2."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Full-batch epochs of the exit head."),
    lr: float = typer.Option(1e-2, "--lr", min=0.0, help="Adam learning rate of the exit head."),
    seed: int = typer.Option(0, "--seed", help="Seed of the exit head's initialisation."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Fit exit heads (LayerNorm + Linear on the pooled tokens at their place) on the run's training clips.

    The classifier stays frozen: its predictions without exits are exactly what they were. The
    pooled tokens are computed once, so this takes seconds to minutes. To train exits jointly with
    the classifier instead, finetune with finetune.exit_loss_weight above 0 (and finetune.exits).

    Example:  cascade exits fit runs/ft --out runs/ft/exits.safetensors
              cascade evaluate runs/ft/exits.safetensors --early-exit --max-drop 0.5
              cascade exits fit runs/ft --exits layers --out runs/ft/layer_exits.safetensors
    """
    from cascade_cli.exits.fit import fit_exit_heads

    reporter = Reporter(quiet=quiet)
    path = fit_exit_heads(checkpoint, out, data=data, places=places.value, epochs=epochs, lr=lr, seed=seed, reporter=reporter,
                          device=device_of(gpu, device))
    reporter.result(f"wrote {path}")
