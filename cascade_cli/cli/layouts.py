"""`cascade layouts list` and `cascade layouts show`: the skeleton layouts, built in or from a file."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_cli.cli.common import cli_command

layouts_app = typer.Typer(help="Skeleton layouts: the joints a dataset has, their order, bones and centre joint. "
                               "Use a built-in one by name, or describe your own in a YAML file.",
                          no_args_is_help=True)


@layouts_app.command("list")
@cli_command
def layouts_list() -> None:
    """Every built-in layout: joints, coordinates, bones and centre joint.

    Example:  cascade layouts list
    """
    from cascade_cli.layouts import LAYOUTS

    grid = Table(title="built-in layouts (cascade_cli/layouts/<name>.yaml)")
    grid.add_column("name", no_wrap=True)
    for column in ("joints", "coords", "bones"):
        grid.add_column(column, justify="right")
    grid.add_column("centre joint")
    for name, layout in LAYOUTS.items():
        centre = "-" if layout.center is None else layout.joint_names[layout.center]
        grid.add_row(name, str(layout.num_joints), str(layout.coords), str(len(layout.bones)), centre)
    Console().print(grid)


@layouts_app.command("show")
@cli_command
def layouts_show(
    layout: str = typer.Argument(..., metavar="NAME|FILE.yaml", help="A built-in layout's name or a layout file."),
    as_yaml: bool = typer.Option(False, "--yaml", help="Print the layout as a layout file, a template for your own."),
) -> None:
    """One layout joint by joint: index, name and the joint each bone hangs from.

    A layout file lists joint_names in the order of the data, coords (2 or 3), bones as [child, parent]
    pairs of names or 0-based indices, and optionally a centre joint and a name. Use it with
    `cascade prepare custom --layout FILE.yaml`.

    Example:  cascade layouts show coco17
              cascade layouts show ntu25 --yaml > my_layout.yaml
    """
    from cascade_cli.layouts import get_layout, layout_yaml

    skeleton = get_layout(layout)
    if as_yaml:
        return typer.echo(layout_yaml(skeleton), nl=False)
    parents: dict[int, list[str]] = {}
    for child, parent in skeleton.bones:
        parents.setdefault(child, []).append(skeleton.joint_names[parent])
    grid = Table(title=f"{skeleton.name}: {skeleton.num_joints} joints, {skeleton.coords}-D, {len(skeleton.bones)} bones")
    grid.add_column("index", justify="right")
    grid.add_column("joint", no_wrap=True)
    grid.add_column("bone to (parent)")
    grid.add_column("centre")
    for index, name in enumerate(skeleton.joint_names):
        grid.add_row(str(index), escape(name), escape(", ".join(parents.get(index, []))),
                     "yes" if index == skeleton.center else "")
    Console().print(grid)
