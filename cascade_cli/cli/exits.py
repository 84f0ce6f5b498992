"""`cascade exits fit`: give a finetuned classifier an exit head after T1, so that `cascade evaluate
--early-exit` can let confident clips skip T2."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cascade_cli.cli.common import DeviceOpt, GpuOpt, QuietOpt, cli_command, device_of
from cascade_cli.progress import Reporter

exits_app = typer.Typer(help="Early exits: an exit head after T1 fitted on a frozen classifier; clips it is "
                             "confident about leave before T2 (`cascade evaluate --early-exit` reports the trade).",
                        no_args_is_help=True)


@exits_app.command("fit")
@cli_command
def fit(
    checkpoint: str = typer.Argument(..., help="Finetuning run directory (uses checkpoints/best.safetensors) or "
                                               "checkpoint file."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write: the classifier, unchanged, plus "
                                                      "the exit head."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Prepared dataset \\[default: the one trained on]."),
    epochs: int = typer.Option(100, "--epochs", min=1, help="Full-batch epochs of the exit head."),
    lr: float = typer.Option(1e-2, "--lr", min=0.0, help="Adam learning rate of the exit head."),
    seed: int = typer.Option(0, "--seed", help="Seed of the exit head's initialisation."),
    gpu: Optional[int] = GpuOpt, device: Optional[str] = DeviceOpt, quiet: bool = QuietOpt,
) -> None:
    """Fit an exit head (LayerNorm + Linear on T1's pooled tokens) on the run's training clips.

    The classifier stays frozen: its predictions without exits are exactly what they were. T1's
    pooled tokens are computed once, so this takes seconds to minutes.

    Example:  cascade exits fit runs/ft --out runs/ft/exits.safetensors
              cascade evaluate runs/ft/exits.safetensors --early-exit --max-drop 0.5
    """
    from cascade_cli.exits.fit import fit_exit_heads

    reporter = Reporter(quiet=quiet)
    path = fit_exit_heads(checkpoint, out, data=data, epochs=epochs, lr=lr, seed=seed, reporter=reporter,
                          device=device_of(gpu, device))
    reporter.result(f"wrote {path}")
