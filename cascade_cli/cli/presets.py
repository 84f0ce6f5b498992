"""`cascade presets list`: which shipped preset reproduces which paper number."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cascade_cli.cli.common import handles_user_errors

presets_app = typer.Typer(help="The YAML presets: the demo, and one per paper experiment.", no_args_is_help=True)


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
