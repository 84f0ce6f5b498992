"""`cascade presets list`: which shipped preset reproduces which paper number."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cascade_cli.cli.common import cli_command

presets_app = typer.Typer(help="The YAML presets: the demo, and one per paper experiment.", no_args_is_help=True)


@presets_app.command("list")
@cli_command
def presets_list(
    table: Optional[str] = typer.Option(None, "--table", "-t", help="Only presets of this paper table (e.g. 7)."),
) -> None:
    """Every preset with the paper table, dataset and top-1 it targets.

    Use a preset with --preset NAME on pretrain, finetune and demo; `cascade ablate` runs a table's arms.

    Example:  cascade presets list --table 9
    """
    from cascade_cli.config import list_presets, preset_info

    names = [name for name in list_presets() if table is None or preset_info(name).get("table") == table]
    console = Console()
    # The name is what users type: never cut. A narrow terminal drops the dataset and title columns
    # (the name says the dataset) rather than squeeze every column into fragments.
    columns = ("name", "table", "dataset", "arm", "paper top-1", "title") if console.width >= 120 else \
        ("name", "table", "arm", "paper top-1")
    grid = Table(title="presets (cascade_cli/presets/<name>.yaml)")
    for column in columns:
        grid.add_column(column, justify="right" if column == "paper top-1" else "left", no_wrap=column != "title",
                        min_width=max(map(len, names), default=4) if column == "name" else None)
    for name in names:
        info = preset_info(name)
        paper = info.get("paper_top1")
        cells = {"name": name, "paper top-1": "" if paper is None else f"{paper:.2f}"}
        grid.add_row(*(cells.get(column, info.get(column, "")) for column in columns))
    console.print(grid)
