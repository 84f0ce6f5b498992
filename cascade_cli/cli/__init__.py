"""The `cascade` command line: thin Typer functions that parse options and call the library.

Each command group lives in its own module; this one assembles them into the `app` that the
console script and `python -m cascade_cli` run. The top-level commands are registered here, in
one list, so that their order in `cascade --help` is decided in one place.
"""

from __future__ import annotations

import typer

import cascade_cli
from cascade_cli.cli import ablate, evaluate, export, official, train
from cascade_cli.cli.anomaly import anomaly_app
from cascade_cli.cli.continual import continual_app
from cascade_cli.cli.data import data_app
from cascade_cli.cli.exits import exits_app
from cascade_cli.cli.layouts import layouts_app
from cascade_cli.cli.prepare import prepare_app
from cascade_cli.cli.presets import presets_app

app = typer.Typer(
    name="cascade",
    help="CascadeFormer for skeleton-based action recognition: prepare data, pretrain T1 with masked "
         "reconstruction, finetune T1 + T2 for classification, evaluate.\n\n"
         "Quick start (synthetic data, a few minutes on a laptop CPU):  cascade demo",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(prepare_app, name="prepare")
app.add_typer(data_app, name="data")
app.add_typer(presets_app, name="presets")
app.add_typer(layouts_app, name="layouts")
app.add_typer(anomaly_app, name="anomaly")
app.add_typer(continual_app, name="continual")
app.add_typer(exits_app, name="exits")
for command in (train.pretrain, train.finetune, evaluate.evaluate, evaluate.predict, export.export,
                official.download, official.convert, train.demo, ablate.ablate, ablate.report):
    app.command()(command)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        typer.echo(f"cascade {cascade_cli.__version__}")
        raise typer.Exit()


def main() -> None:
    app()
