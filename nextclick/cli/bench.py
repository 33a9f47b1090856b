"""The bench command: the conformance suite of :mod:`nextclick.bench` in one command."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Only the cheap rows (pop, the kNN models, gru4rec tuned_rsc15 and official_rsc15): a few minutes, for CI.")] = False,
    rows: Annotated[
        Optional[str], typer.Option("--rows", help="Comma-separated row names to run (e.g. pop,gru4rec:tuned_rsc15).")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option("--data-dir", help="Folder holding rsc15-100k/ and amazon-games/ (default: $NEXTCLICK_DATA, else ../shared/data)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the markdown table to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON instead of the table.")] = False,
) -> None:
    """Train and evaluate the conformance suite and print one table of references, measured figures,
    tolerances and pass/fail; progress goes to stderr. Exit status 1 if any check fails.

    A check passes when measured >= reference - tolerance: references are bars to reach. The tolerance
    is two standard errors of the metric over the test's predictions (see nextclick.bench)."""
    from nextclick import bench as suite

    names = [n.strip() for n in rows.split(",") if n.strip()] if rows else None
    chosen = suite.select_rows(quick=quick, names=names)
    folder = data_dir if data_dir is not None else suite.default_data_dir()
    suite.check_data(chosen, folder)
    suite.check_presets(chosen)
    t0 = time.perf_counter()
    results = suite.run_suite(chosen, folder, say=lambda line: typer.echo(line, err=True))
    wall = time.perf_counter() - t0
    table = suite.format_markdown(results)
    if out is not None:
        out.write_text(table)
    if as_json:
        typer.echo(json.dumps(suite.as_json(results, wall), indent=1))
    else:
        typer.echo(table, nl=False)
    typer.echo(f"bench: wall time {wall:.0f} s", err=True)
    if not all(r.passed for r in results):
        raise typer.Exit(1)
