"""Command-line interface: a thin layer over the importable API.

User errors (:class:`NextclickError`) print one clear line to stderr and exit with status 2,
without a traceback. The commands live by subject: :mod:`.data` (prepare, generate, quickstart),
:mod:`.models` (train, tune, evaluate, recommend, export, models), :mod:`.serve` (serve),
:mod:`.bench` (bench); the choices of
their options in :mod:`.choices`. Starting the CLI imports neither torch, numba, polars nor
numpy: the commands import what they need when they run.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from nextclick.cli.choices import (  # noqa: F401 (the option types, importable from here)
    Direction,
    Fmt,
    ModelWorkerKind,
    ScoringMode,
    Split,
    SplitBy,
    StoreKind,
    TimeFmt,
)
from nextclick.errors import NextclickError

app = typer.Typer(
    name="nextclick",
    help="Session-based next-click recommendation: prepare click logs, train, evaluate, recommend.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
log = logging.getLogger("nextclick")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step (INFO) to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


from nextclick.cli import bench, data, models, report, serve  # noqa: E402

for _command in (data.prepare, models.train, models.tune, models.evaluate, models.recommend, models.export, models.models,
                 data.recipes, data.generate, data.quickstart, report.report, serve.serve, bench.bench):
    app.command()(_command)


def main() -> None:
    try:
        app()
    except NextclickError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
