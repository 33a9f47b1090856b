"""The report command: one self-contained HTML file comparing trained models on a prepared dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from nextclick.errors import NextclickError

if TYPE_CHECKING:  # the CLI starts without numpy: these are imported when a report is written
    import numpy as np

    from nextclick.report import ModelRun


def report(
    model_dirs: Annotated[list[Path], typer.Argument(help="Artifact directories written by `nextclick train` (one or more).")],
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset dir (written by `nextclick prepare`).")],
    split: Annotated[str, typer.Option("--split", help="The dataset's split to evaluate on.")] = "test",
    items: Annotated[
        Optional[Path],
        typer.Option("--items", help="Item table (Parquet, CSV or TSV) with ItemId and a category column: enables the "
                                     "intent-shift figure (the synthetic shop writes shop_items.parquet)."),
    ] = None,
    category_col: Annotated[
        Optional[str], typer.Option("--category-col", help="The category column of --items (default: found by name, "
                                                          "CategoryName before Category).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("report.html"),
    max_sessions: Annotated[
        Optional[int],
        typer.Option("--max-sessions", help="Evaluate a random subset of N sessions (drawn with --seed), stated as such; "
                                            "each prediction still ranks the full catalogue."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --max-sessions and of the bootstrap.")] = 0,
    n_boot: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples of the sessions for the intervals.")] = 1000,
) -> None:
    """Evaluate MODEL_DIRS on a dataset's split and write an HTML report with static figures.

    Leaderboard with 95% bootstrap intervals over sessions, Recall@K / MRR@K for K = 1..50,
    accuracy by position in the session, accuracy after a shift of category (with --items),
    coverage and popularity bias, and the training curves recorded in the artifacts."""
    from nextclick.report import ReportOptions, write_report

    if not data.is_dir():
        raise NextclickError(f"--data {data}: no such directory (expected a dataset prepared by `nextclick prepare`)")
    if max_sessions is not None and max_sessions < 1:
        raise NextclickError(f"--max-sessions must be >= 1, got {max_sessions}")
    if n_boot < 1:
        raise NextclickError(f"--bootstrap must be >= 1, got {n_boot}")
    for d in model_dirs:
        if not d.is_dir():
            raise NextclickError(f"{d}: no such artifact directory (expected one written by `nextclick train`)")
    table = None
    if items is not None:
        from nextclick.report import read_items

        table = read_items(items, category_col)
    runs = [_run(d, data, split, table, max_sessions, seed) for d in model_dirs]
    context = [f"Models: {', '.join(str(d) for d in model_dirs)}. Data: {data}, split {split!r}."
               + (f" Item categories: {items}" + (f", column {category_col!r}." if category_col else ".") if items is not None else "")]
    path = write_report(runs, out, options=ReportOptions(n_boot=n_boot, seed=seed), context=context)
    typer.echo(f"report -> {path}")


def _run(model_dir: Path, data: Path, split: str, table: tuple[np.ndarray, np.ndarray] | None, max_sessions: Optional[int],
         seed: int) -> ModelRun:
    """Load one artifact and its split of ``data`` and evaluate it, keeping every prediction."""
    from nextclick.data.dataset import load_sessions
    from nextclick.models.base import Recommender
    from nextclick.report import item_categories, run_model

    model = Recommender.load(model_dir)
    sessions, _ = load_sessions(data, split, vocab=model.vocab_)
    if sessions.n_predictions() == 0:
        raise NextclickError(f"--data {data}: split {split!r} holds no next-click prediction for {model_dir} "
                             "(no session has two clicks the model knows)")
    cats = None if table is None else item_categories(model.vocab_, *table)[0]
    typer.echo(f"evaluating {model.name} ({model_dir}) on {sessions.n_predictions():,} predictions", err=True)
    return run_model(model, sessions, name=_label(model.name, model_dir), categories=cats, max_sessions=max_sessions, seed=seed)


def _label(name: str, model_dir: Path) -> str:
    """The model's name, with its directory's when that differs (two artifacts of one model)."""
    return name if model_dir.name in ("", name) else f"{name} ({model_dir.name})"
