"""`cascade data info`: what a prepared dataset holds, and whether its arrays are intact."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.cli.common import err_console, cli_command

data_app = typer.Typer(help="Inspect prepared datasets.", no_args_is_help=True)


@data_app.command("info")
@cli_command
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
