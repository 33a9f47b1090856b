"""Data commands: prepare a raw click log, generate the synthetic shop, the quickstart."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nextclick.cli.choices import Fmt, IdKind, Split, SplitBy, TimeFmt
from nextclick.data.options import PrepareOptions, ReadOptions
from nextclick.errors import NextclickError


def _read_options(session_col: str, item_col: str, time_col: str, user_col: str, fmt: Fmt, time_format: TimeFmt, names: str,
                  item_ids: IdKind | None = None, sep: str = ""):
    sep = {"tab": "\t", "\\t": "\t", "space": " "}.get(sep, sep)
    if len(sep) > 1:
        raise NextclickError(f"--sep must be one character (or 'tab'), got {sep!r}")
    return ReadOptions(
        sep=sep or None,
        item_type=item_ids.value if item_ids is not None else "auto",
        session_col=session_col or None,
        item_col=item_col,
        time_col=time_col or None,
        user_col=user_col or None,
        format=fmt.value,
        time_format=time_format.value,
        names=[n.strip() for n in names.split(",")] if names else None,
    )


#: The names of :data:`nextclick.data.recipes.RECIPES` and their aliases (kept here so that the
#: CLI starts without polars; a test checks that they agree).
RECIPE_NAMES = ("yoochoose", "rsc15", "diginetica", "retailrocket", "otto", "amazon", "sasrec", "movielens", "recbole")
RecipeName = Enum("RecipeName", [(n, n) for n in RECIPE_NAMES], type=str, module=__name__)
EventType = Enum("EventType", [(n, n) for n in ("clicks", "carts", "orders", "all")], type=str,
                 module=__name__)
#: prepare's options that read a click file: a recipe reads its raw file itself.
_READ_FLAGS = ("session_col", "item_col", "time_col", "user_col", "format", "time_format", "names", "sep")


def prepare(
    ctx: typer.Context,
    input: Annotated[Path, typer.Argument(help="Click log: CSV, TSV, Parquet or whitespace `user item [time]` file; "
                                               "with --recipe, the dataset's raw file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the prepared dataset.")],
    recipe: Annotated[
        Optional[RecipeName], typer.Option(help="A public dataset's raw file with its published preprocessing (steps and "
                                                "source: `nextclick recipes`); sets the read options, filters and split, "
                                                "and options given explicitly override them.")
    ] = None,
    event_type: Annotated[
        EventType, typer.Option(help="--recipe otto: the events kept.")
    ] = EventType.clicks,
    session_col: Annotated[
        str, typer.Option(help="Session id column; '' = none (build sessions from --user-col).")
    ] = "SessionId",
    item_col: Annotated[str, typer.Option(help="Item id column.")] = "ItemId",
    time_col: Annotated[str, typer.Option(help="Timestamp column; '' = none (line order is time order).")] = "Time",
    user_col: Annotated[str, typer.Option(help="User id column (optional; needed to build sessions or for --split loo).")] = "",
    format: Annotated[Fmt, typer.Option("--format", help="Input format; auto = from the file extension.")] = Fmt.auto,
    time_format: Annotated[
        TimeFmt, typer.Option(help="Timestamps: unix seconds, milliseconds, ISO-8601, or auto-detect.")
    ] = TimeFmt.auto,
    names: Annotated[str, typer.Option(help="Comma-separated column names for a file without a header row.")] = "",
    sep: Annotated[
        str, typer.Option(help="Delimiter of a CSV/TSV file: one character or 'tab'; default: sniffed from the first "
                               "line (, ; TAB |).")
    ] = "",
    item_ids: Annotated[
        IdKind, typer.Option("--item-ids", help="Item ids: int, str (kept as written), or auto (a column of text ids is "
                                                 "read as text; integers mixed with text are an error).")
    ] = IdKind.auto,
    session_gap: Annotated[
        float, typer.Option(help="Inactivity gap in minutes that starts a new session (no session column).")
    ] = 30.0,
    drop_repeats: Annotated[
        bool, typer.Option("--drop-repeats/--keep-repeats", help="Drop consecutive clicks on the same item.")
    ] = True,
    min_session_length: Annotated[
        int, typer.Option(help="Remove sessions shorter than this (iterated with --min-item-support).")
    ] = 2,
    min_item_support: Annotated[int, typer.Option(help="Remove items with fewer clicks than this (iterated until stable).")] = 5,
    support_rounds: Annotated[
        int, typer.Option(help="Rounds of the session/item filters: 0 = until stable; 1 = one round, then sessions "
                               "once more (GRU4Rec's rsc15 script).")
    ] = 0,
    split: Annotated[
        Split, typer.Option(help="time: split at the last --test-days (see --split-by); loo: leave-one-out per user; none.")
    ] = Split.time,
    test_days: Annotated[float, typer.Option(help="Days at the end of the log that form the test set (time split).")] = 1.0,
    valid_days: Annotated[
        Optional[float], typer.Option(help="Days at the end of train that form `valid` (default: --test-days).")
    ] = None,
    split_by: Annotated[
        SplitBy,
        typer.Option(help="strict: test = sessions starting after the cut, train = clicks before it (no leak); "
                     "end: whole sessions by their last click (GRU4Rec's original rsc15 script)."),
    ] = SplitBy.strict,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty --out that is not a nextclick dataset.")
    ] = False,
) -> None:
    """Read a raw click log, build sessions, filter, split, and write a prepared dataset.

    Never writes over its input; a non-empty --out must be a dataset nextclick wrote, or --overwrite.
    """
    from nextclick.data.preprocess import prepare as run_prepare

    if recipe is not None:
        given = {k: v for k, v in ctx.params.items() if _on_command_line(ctx, k)}
        _prepare_recipe(recipe.value, input, out, given, overwrite)
        return
    if _on_command_line(ctx, "event_type"):
        raise NextclickError("--event-type applies to --recipe otto only")
    opts = PrepareOptions(
        read=_read_options(session_col, item_col, time_col, user_col, format, time_format, names, item_ids, sep),
        session_gap=session_gap * 60.0,
        drop_repeats=drop_repeats,
        min_session_length=min_session_length,
        min_item_support=min_item_support,
        support_rounds=support_rounds,
        split=split.value,
        test_days=test_days,
        valid_days=valid_days,
        split_by=split_by.value,
    )
    _echo_report(run_prepare(input, out, opts, overwrite=overwrite).meta, out)


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not its default). Compared by name:
    typer may bring its own copy of click, with its own ``ParameterSource``."""
    return getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"


def _prepare_recipe(name: str, raw: Path, out: Path, given: dict[str, Any], overwrite: bool) -> None:
    """``prepare --recipe``: the options the user gave (``given``) override the recipe's filters and
    split; the options that read a click file do not apply."""
    from dataclasses import replace

    from nextclick.data.recipes import RecipeArgs, get_recipe, run_recipe

    for flag in _READ_FLAGS:
        if flag in given:
            raise NextclickError(f"--{flag.replace('_', '-')} does not apply with --recipe {name}: the recipe reads "
                                 "the raw file's own columns")
    overrides = {k: getattr(v, "value", v) for k, v in given.items() if k in PREPARE_FIELDS}
    args = RecipeArgs(event_type=given.get("event_type", EventType.clicks).value,
                      item_type=given["item_ids"].value if "item_ids" in given else "auto")
    if "session_gap" in overrides:  # minutes; it also shapes the sessions a recipe builds itself
        overrides["session_gap"] *= 60.0
        args = replace(args, session_gap=overrides["session_gap"])
    typer.echo(f"recipe {get_recipe(name).name}: {get_recipe(name).source}")
    _echo_report(run_recipe(name, raw, out, overrides, args, overwrite=overwrite).meta, out)


#: prepare's options that fill a :class:`PrepareOptions` field of the same name.
PREPARE_FIELDS = ("session_gap", "drop_repeats", "min_session_length", "min_item_support", "support_rounds", "split",
                  "test_days", "valid_days", "split_by")


def _echo_report(meta: dict[str, Any], out: Path) -> None:
    """What each step removed, the splits' sizes and the catalogue."""
    for r in meta["report"]:
        extra = ", ".join(f"{k}={v}" for k, v in r["details"].items() if k not in ("cut_time", "protocol"))
        typer.echo(f"{r['step']:<16} removed {r['removed_events']:>10,} events {r['removed_sessions']:>9,} sessions  {extra}")
    protocol = next((r["details"]["protocol"] for r in meta["report"] if "protocol" in r["details"]), None)
    if protocol:
        typer.echo(f"split protocol: {protocol}")
    for role, st in meta["stats"].items():
        typer.echo(f"{role:<9} {st['events']:>11,} events {st['sessions']:>10,} sessions {st['items']:>8,} items")
    typer.echo(f"catalogue {len(meta['vocab']['ids']):,} items (index 0 = padding); written to {out}")


def recipes() -> None:
    """Print each dataset recipe of `prepare --recipe`: its raw file, source and steps."""
    from nextclick.data.recipes import RECIPES

    typer.echo("\n\n".join(r.describe() for r in RECIPES.values()))


def generate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output click file (.parquet, .csv or .tsv), or a directory for Parquet parts.")
    ],
    size: Annotated[
        str, typer.Option(help="Named size: small (the default shop), otto (OTTO's size), otto-tenth; written as parts.")
    ] = "",
    n_sessions: Annotated[Optional[int], typer.Option(help="Sessions to generate (default: the size's).")] = None,
    n_items: Annotated[Optional[int], typer.Option(help="Catalogue size (default: the size's).")] = None,
    n_categories: Annotated[Optional[int], typer.Option(help="Categories (default: the size's).")] = None,
    days: Annotated[Optional[float], typer.Option(help="Days the log spans (default: the size's).")] = None,
    chunk_sessions: Annotated[int, typer.Option(help="Sessions per Parquet part (directory output).")] = 250_000,
    with_sessions: Annotated[
        bool,
        typer.Option(
            "--with-sessions/--users-only",
            help="Write SessionId (else only UserId; sessions are rebuilt by `prepare --session-col ''`).",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic shop's click log (the built-in default data).

    A file name writes one file from memory; a directory (or --size) writes the log chunk by chunk
    as DIR/clicks/part-NNNNN.parquet with the item table in DIR/items.parquet."""
    from nextclick.data.synthetic import generate_shop, shop_size, write_shop

    given = {"n_sessions": n_sessions, "n_items": n_items, "n_categories": n_categories, "days": days}
    cfg = shop_size(size or "small", seed=seed, **{k: v for k, v in given.items() if v is not None})
    suffix = out.suffix.lower()
    if size or not suffix:
        counts = write_shop(cfg, out, chunk_sessions=chunk_sessions, with_sessions=with_sessions)
        typer.echo(
            f"wrote {counts['clicks']:,} clicks ({counts['sessions']:,} sessions, {counts['items']:,} items) "
            f"in {counts['parts']} parts to {out / 'clicks'}; items in {out / 'items.parquet'}"
        )
        return
    shop = generate_shop(cfg)
    df = shop.clicks if with_sessions else shop.clicks.drop("SessionId")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.write_parquet(out)
    elif suffix in (".csv", ".tsv"):
        df.write_csv(out, separator="," if suffix == ".csv" else "\t")
    else:
        raise NextclickError(f"--out {out}: use a .parquet, .csv or .tsv file name, or a directory")
    typer.echo(f"wrote {df.height:,} clicks to {out}")


def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Working directory for data and models.")] = Path("runs/quickstart"),
    n_sessions: Annotated[int, typer.Option(help="Sessions in the synthetic shop.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the shop.")] = 0,
    model: Annotated[
        Optional[list[str]], typer.Option("--model", "-m", help="Only these models (repeatable); default: all.")
    ] = None,
) -> None:
    """Main job on built-in data: synthetic shop -> prepare -> train every model -> leaderboard -> replay."""
    from nextclick.data.synthetic import ShopConfig
    from nextclick.quickstart import run_quickstart

    run_quickstart(out, ShopConfig(n_sessions=n_sessions, seed=seed), models=model or None, echo=typer.echo)


