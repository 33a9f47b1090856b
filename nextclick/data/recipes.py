"""Recipes for public datasets: each reads a dataset's raw file into the canonical click frame and
applies the preprocessing its source published, as :class:`PrepareOptions`.

``nextclick prepare RAW --recipe NAME --out DIR`` runs one (:func:`run_recipe`); ``nextclick
recipes`` prints each recipe's steps and source. Every recipe keeps the leak-free time split
(``split_by="strict"``); where the source split whole sessions by their last click, its steps say
so, and ``--split-by end`` reproduces that.

The readers are vectorized (polars scans that read only the needed columns) and reuse the id and
time checks of :mod:`nextclick.data.io`, so bad raw input is a one-line
:class:`~nextclick.errors.NextclickError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import polars as pl

from nextclick.data.dataset import META, ROLES, Dataset, check_output_dir
from nextclick.data.io import _id_column, _time_column
from nextclick.data.options import IdType, PrepareOptions, TimeFormat
from nextclick.data.preprocess import prepare, sessionize
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)

#: OTTO's event types (``all`` keeps every event).
EventType = Literal["clicks", "carts", "orders", "all"]
OTTO_TYPES = ("clicks", "carts", "orders")
RETAILROCKET_EVENTS = ("view", "addtocart", "transaction")


@dataclass(frozen=True)
class RecipeArgs:
    """What the user may choose about reading a raw file: OTTO's event type, the item id policy
    (``--item-ids``, see :mod:`nextclick.data.io`) and the inactivity gap in seconds that ends a
    session where a recipe builds sessions (Retailrocket)."""

    event_type: EventType = "clicks"
    item_type: IdType = "auto"
    session_gap: float = 1800.0


Reader = Callable[[Path, RecipeArgs], pl.DataFrame]


@dataclass(frozen=True)
class Recipe:
    """A public dataset's raw format and published preprocessing.

    ``read`` turns the raw file into the canonical frame (``SessionId`` and/or ``UserId``,
    ``ItemId``, ``Time`` in float seconds); ``options`` are the filters and split of the source.
    ``session_options`` replace them when the frame has sessions (RecBole files hold either)."""

    name: str
    aliases: tuple[str, ...]
    raw: str
    source: str
    steps: tuple[str, ...]
    read: Reader
    options: PrepareOptions
    session_options: PrepareOptions | None = None

    def describe(self) -> str:
        """The recipe as text: name, raw file, source and numbered steps."""
        names = self.name + "".join(f" (alias {a})" for a in self.aliases)
        steps = "\n".join(f"  {i}. {s}" for i, s in enumerate(self.steps, 1))
        return f"{names}\n  raw file: {self.raw}\n  source: {self.source}\n{steps}"

    def options_for(self, df: pl.DataFrame) -> PrepareOptions:
        if self.session_options is not None and "SessionId" in df.columns:
            return self.session_options
        return self.options


# ---------------------------------------------------------------------------- reading helpers
def _scan_text(path: Path, columns: list[str], what: str, sep: str, names: list[str] | None = None) -> pl.DataFrame:
    """``columns`` of a delimited text file, all as text (the checks of :mod:`.io` parse them).

    ``names`` names the columns of a file without a header row; ``what`` describes the expected
    file in messages."""
    if not path.is_file():
        raise NextclickError(f"{path}: no such file (expected {what})")
    try:
        lf = pl.scan_csv(path, separator=sep, has_header=names is None, new_columns=names, infer_schema=False)
        have = lf.collect_schema().names()
        missing = [c for c in columns if c not in have]
        if missing:
            raise NextclickError(f"{path}: missing column(s) {missing}; the file has {have} (expected {what})")
        df = lf.select(columns).collect()
    except pl.exceptions.NoDataError:
        raise NextclickError(f"{path}: the file is empty (expected {what})") from None
    except pl.exceptions.PolarsError as e:
        raise NextclickError(f"{path}: cannot read as {what}: {str(e).splitlines()[0]}") from None
    if df.height == 0:
        raise NextclickError(f"{path}: the file has no rows (expected {what})")
    return df


def _lines(path: Path, what: str) -> pl.Series:
    """Every line of a text file as one string (a file whose separator polars cannot split on)."""
    if not path.is_file():
        raise NextclickError(f"{path}: no such file (expected {what})")
    try:
        df = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None, new_columns=["line"],
                         infer_schema=False)
    except pl.exceptions.NoDataError:
        raise NextclickError(f"{path}: the file is empty (expected {what})") from None
    except pl.exceptions.PolarsError as e:
        raise NextclickError(f"{path}: cannot read as {what}: {str(e).splitlines()[0]}") from None
    return df.get_column("line")


def _header(path: Path, sep: str) -> list[str]:
    """The fields of the first line of a file (none for a missing file: its reader says so)."""
    if not path.is_file():
        return []
    with open(path, "rb") as f:
        return f.readline(1 << 16).decode("utf-8", errors="replace").rstrip("\r\n").split(sep)


def _on_lines(check: Callable[[], pl.Series], lines: pl.Series) -> pl.Series:
    """Run an :mod:`.io` check on rows that are not the file's lines (``fmt="parquet"`` makes its
    message say ``row N``); an error names ``lines[N - 1]``, the file line of that row, instead."""
    try:
        return check()
    except NextclickError as e:
        m = re.search(r"\brow (\d+)", str(e))
        if m is None:
            raise
        raise NextclickError(str(e).replace(m.group(0), f"line {lines[int(m.group(1)) - 1]}", 1)) from None


def _canonical(df: pl.DataFrame, path: Path, cols: dict[str, str], args: RecipeArgs, time_format: TimeFormat = "auto",
               header: bool = True) -> pl.DataFrame:
    """The canonical frame of a raw frame whose rows are the file's lines: ``cols`` maps each
    canonical column (``SessionId``, ``UserId``, ``ItemId``, ``Time``) to its raw column, checked
    by :mod:`.io` (ids that are not integers are errors unless item ids are text)."""
    out = {}
    for key in ("SessionId", "UserId"):
        if key in cols:
            out[key] = _id_column(df, cols[key], "auto", path, "csv", header).alias(key)
    out["ItemId"] = _id_column(df, cols["ItemId"], args.item_type, path, "csv", header, strict=True).alias("ItemId")
    if "Time" in cols:
        out["Time"] = _time_column(df, cols["Time"], time_format, path, "csv", header).alias("Time")
    else:
        out["Time"] = pl.Series("Time", range(df.height), dtype=pl.Float64)
    return pl.DataFrame(out)


# ---------------------------------------------------------------------------- readers
def read_yoochoose(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """yoochoose-clicks.dat: no header, ``SessionID,Timestamp,ItemID,Category`` with ISO-8601 UTC
    timestamps (``2014-04-07T10:51:09.277Z``); the category column is not read."""
    what = "yoochoose-clicks.dat lines `SessionID,Timestamp,ItemID,Category`"
    df = _scan_text(path, ["s", "t", "i"], what, ",", names=["s", "t", "i", "c"])
    return _canonical(df, path, {"SessionId": "s", "ItemId": "i", "Time": "t"}, args, "iso", header=False)


def read_diginetica(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """train-item-views.csv: ``session_id;user_id;item_id;timeframe;eventdate`` (copies also spell
    them ``sessionId``, ``itemId``); a click's time is its ``eventdate`` (midnight UTC) plus
    ``timeframe`` (milliseconds since the session began)."""
    what = "diginetica train-item-views.csv (session_id;user_id;item_id;timeframe;eventdate)"
    session, item = ("sessionId", "itemId") if "sessionId" in _header(path, ";") else ("session_id", "item_id")
    df = _scan_text(path, [session, item, "timeframe", "eventdate"], what, ";")
    out = _canonical(df, path, {"SessionId": session, "ItemId": item, "Time": "eventdate"}, args, "iso")
    offset = _time_column(df, "timeframe", "ms", path, "csv", True)
    return out.with_columns(pl.col("Time") + offset)


def read_retailrocket(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """events.csv: ``timestamp,visitorid,event,itemid,transactionid`` (milliseconds). Sessions are
    built over every event (a new one at a new visitor or after ``args.session_gap``, 30 idle
    minutes by default), then only views are kept, as session-rec does."""
    what = "retailrocket events.csv (timestamp,visitorid,event,itemid,transactionid)"
    df = _scan_text(path, ["timestamp", "visitorid", "event", "itemid"], what, ",")
    event = df.get_column("event").str.strip_chars()
    bad = event.is_null() | ~event.is_in(RETAILROCKET_EVENTS)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise NextclickError(f"{path}: line {row + 2}, column 'event': {event[row]!r} is not one of "
                             f"{', '.join(RETAILROCKET_EVENTS)}")
    out = _canonical(df, path, {"UserId": "visitorid", "ItemId": "itemid", "Time": "timestamp"}, args)
    out, rep = sessionize(out.with_columns(_view=event == "view"), args.session_gap)
    views = out.filter(pl.col("_view")).drop("_view")
    if views.height == 0:
        raise NextclickError(f"{path}: no 'view' events (the recipe keeps views only)")
    log.info("%s: %d sessions over all events; %d of %d events are views", path, rep.details["sessions_built"],
             views.height, out.height)
    return views


_OTTO_SCHEMA = {"session": pl.Int64, "events": pl.List(pl.Struct({"aid": pl.Int64, "ts": pl.Int64, "type": pl.String}))}


def read_otto(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """OTTO's JSON lines ``{"session": int, "events": [{"aid": int, "ts": int, "type": ...}]}``: one
    row per event of the chosen type (``args.event_type``); ``ts`` in seconds or milliseconds
    (told apart as :mod:`.io` does)."""
    what = 'OTTO JSON lines {"session": int, "events": [{"aid": int, "ts": int, "type": "clicks"|"carts"|"orders"}]}'
    if not path.is_file():
        raise NextclickError(f"{path}: no such file (expected {what})")
    kind = pl.col("type")
    keep = kind.is_null() | ~kind.is_in(OTTO_TYPES) | pl.col("aid").is_null() | pl.col("ts").is_null()
    keep = keep | pl.col("session").is_null() | (pl.lit(True) if args.event_type == "all" else kind == args.event_type)
    try:
        # the streaming engine keeps the rows in file order and never holds the whole nested file
        df = (pl.scan_ndjson(path, schema=_OTTO_SCHEMA).with_row_index("line", offset=1)
              .explode("events").unnest("events").filter(keep).collect(engine="streaming"))
    except pl.exceptions.PolarsError as e:
        raise NextclickError(_json_error(path, what, e)) from None
    for col, bad in (("session", df["session"].is_null()), ("aid", df["aid"].is_null()), ("ts", df["ts"].is_null()),
                     ("type", df["type"].is_null() | ~df["type"].is_in(OTTO_TYPES))):
        if bad.any():
            line = int(df["line"][int(bad.arg_true()[0])])
            raise NextclickError(f"{path}: line {line}: an event without a valid {col!r} (expected {what})")
    if df.height == 0:
        raise NextclickError(f"{path}: no events of type {args.event_type!r}")
    lines = df.get_column("line")
    items = df.get_column("aid").cast(pl.String) if args.item_type == "str" else df.get_column("aid")
    time = _on_lines(lambda: _time_column(df, "ts", "auto", path, "parquet", True), lines)
    return pl.DataFrame({"SessionId": df.get_column("session"), "ItemId": items, "Time": time})


def _json_error(path: Path, what: str, e: Exception) -> str:
    """The message for a file polars cannot read as JSON lines: the first line that does not hold
    a session as ``what`` describes (found by reading the lines one by one: errors only)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                ok = isinstance(obj, dict) and isinstance(obj.get("session"), int) and isinstance(obj.get("events"), list)
                ok = ok and all(isinstance(ev, dict) and all(isinstance(ev.get(k), int) for k in ("aid", "ts"))
                                for ev in obj["events"])
            except ValueError:
                ok = False
            if not ok:
                return f"{path}: line {n} is not an OTTO session (expected {what})"
    return f"{path}: cannot read as {what}: {str(e).splitlines()[0]}"


def read_sasrec(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """SASRec's data files: whitespace ``user item`` lines, each user's lines in time order."""
    df = _whitespace_fields(path, ["user", "item"], "SASRec `user item` lines")
    return _canonical(df, path, {"UserId": "user", "ItemId": "item"}, args, header=False)


def _whitespace_fields(path: Path, names: list[str], what: str) -> pl.DataFrame:
    parts = _lines(path, what).str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    n = parts.list.len()
    bad = n != len(names)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise NextclickError(f"{path}: line {row + 1} has {n[row]} fields; expected {what}")
    return pl.DataFrame({name: parts.list.get(i) for i, name in enumerate(names)})


def read_movielens(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """MovieLens ratings: ml-1m / ml-10m ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``),
    ml-20m / ml-25m / ml-latest ``ratings.csv`` (header ``userId,movieId,rating,timestamp``) or
    ml-100k ``u.data`` (tab-separated, no header). Every rating is an interaction."""
    what = "MovieLens ratings (ratings.dat `u::m::r::t`, ratings.csv `userId,movieId,rating,timestamp` or u.data)"
    if not path.is_file():
        raise NextclickError(f"{path}: no such file (expected {what})")
    with open(path, "rb") as f:
        first = f.readline(1 << 16).decode("utf-8", errors="replace")
    if "::" in first:
        fields = _lines(path, what).str.split_exact("::", 3).struct.rename_fields(["u", "m", "r", "t"]).struct.unnest()
        return _canonical(fields, path, {"UserId": "u", "ItemId": "m", "Time": "t"}, args, "s", header=False)
    if first.lower().startswith("userid"):
        df = _scan_text(path, ["userId", "movieId", "timestamp"], what, ",")
        return _canonical(df, path, {"UserId": "userId", "ItemId": "movieId", "Time": "timestamp"}, args, "s")
    df = _scan_text(path, ["u", "m", "t"], what, "\t", names=["u", "m", "r", "t"])
    return _canonical(df, path, {"UserId": "u", "ItemId": "m", "Time": "t"}, args, "s", header=False)


RECBOLE_FIELDS = {"session_id": "SessionId", "user_id": "UserId", "item_id": "ItemId", "timestamp": "Time"}


def read_recbole(path: Path, args: RecipeArgs) -> pl.DataFrame:
    """A RecBole atomic ``.inter`` file: tab-separated, header ``name:type`` (``user_id:token``,
    ``item_id:token``, ``timestamp:float``, ...). ``session_id``, ``user_id``, ``item_id`` and
    ``timestamp`` are read; without ``timestamp``, line order is time order."""
    what = "a RecBole .inter file (tab-separated, header like user_id:token<TAB>item_id:token<TAB>timestamp:float)"
    if not path.is_file():
        raise NextclickError(f"{path}: no such file (expected {what})")
    header = _header(path, "\t")
    names = {}
    for field in header:
        name, colon, kind = field.partition(":")
        if not colon or not kind:
            raise NextclickError(f"{path}: line 1: header field {field!r} has no type; expected {what}")
        names[field] = name
    cols = {RECBOLE_FIELDS[n]: f for f, n in names.items() if n in RECBOLE_FIELDS}
    if "ItemId" not in cols or not ({"SessionId", "UserId"} & cols.keys()):
        raise NextclickError(f"{path}: the header {header} needs item_id and session_id or user_id; expected {what}")
    df = _scan_text(path, list(cols.values()), what, "\t")
    return _canonical(df, path, cols, args)


# ---------------------------------------------------------------------------- the recipes
def _opts(**kw: Any) -> PrepareOptions:
    """Options of a recipe: the source's filters and split, the leak-free split protocol."""
    return PrepareOptions(split_by="strict", **kw)


_UNSEEN = "Test (and valid) clicks on items not in their training part removed, then sessions left shorter than 2."
_ONE_ROUND = ("One round of filters, as the source: sessions of one click removed, then items with fewer than 5 "
              "clicks, then sessions left shorter than 2 (--support-rounds 1); consecutive repeats kept.")
_BY_END = ("Split leak-free (--split-by strict: test = sessions starting after the cut, train = clicks before it); "
           "the source assigns whole sessions by their last click: --split-by end reproduces it.")
_LOO = ("Leave-one-out per user: the last interaction is the test target, the one before it the validation "
        "target, the rest train; users with fewer than 3 interactions stay whole in train.")

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(
        "yoochoose", ("rsc15",), "yoochoose-clicks.dat (RecSys Challenge 2015)",
        "GRU4Rec's rsc15 preprocessing: Hidasi et al., Session-based Recommendations with Recurrent Neural "
        "Networks, ICLR 2016; github.com/hidasib/GRU4Rec, examples/rsc15/preprocess.py",
        ("Read SessionID, Timestamp (ISO-8601, UTC) and ItemID of the click file: clicks only (buys are in "
         "yoochoose-buys.dat, not read).", _ONE_ROUND,
         "Test: the last day of the log; valid: the last day of train.", _BY_END, _UNSEEN),
        read_yoochoose, _opts(drop_repeats=False, support_rounds=1, test_days=1.0, valid_days=1.0)),
    Recipe(
        "diginetica", (), "train-item-views.csv (CIKM Cup 2016, track 2)",
        "SR-GNN's diginetica preprocessing: Wu et al., Session-based Recommendation with Graph Neural Networks, "
        "AAAI 2019; github.com/CRIPAC-DIG/SR-GNN, datasets/preprocess.py, which follows NARM (Li et al., CIKM 2017)",
        ("Read session_id (or sessionId), item_id (or itemId), timeframe and eventdate (semicolon-separated); "
         "a click's time is its eventdate "
         "(midnight UTC) plus timeframe milliseconds, so clicks are ordered by timeframe within a session, as the "
         "source sorts them.", _ONE_ROUND,
         "Test: the last 7 days; valid: the 7 days before.",
         "Split leak-free (--split-by strict); the source assigns whole sessions by their date (the eventdate of "
         "their last click): --split-by end comes closest (it cuts at the last click minus 7 days, not at midnight).",
         _UNSEEN + " (The source's prefix augmentation of training sessions is left to the models.)"),
        read_diginetica, _opts(drop_repeats=False, support_rounds=1, test_days=7.0, valid_days=7.0)),
    Recipe(
        "retailrocket", (), "events.csv (Retailrocket e-commerce dataset)",
        "session-rec: Ludewig et al., Empirical analysis of session-based recommendation algorithms, UMUAI 2021; "
        "github.com/rn5l/session-rec, preprocessing/session_based/preprocess_retailrocket.py (single split)",
        ("Read timestamp (milliseconds), visitorid, event and itemid.",
         "Sessions built per visitor over all events: a new one after more than 30 minutes without an event.",
         "Only views kept (add-to-cart and transaction events only shape the sessions).", _ONE_ROUND,
         "Test: the last day; valid: the day before (the source's single split, DAYS_TEST = 1).", _BY_END, _UNSEEN),
        read_retailrocket, _opts(drop_repeats=False, support_rounds=1, test_days=1.0, valid_days=1.0)),
    Recipe(
        "otto", (), "train.jsonl / otto-recsys-train.jsonl (OTTO recsys dataset)",
        "OTTO's own test split: github.com/otto-de/recsys-dataset, src/testset.py with --days 7 (the Kaggle "
        "test set is one week); events as TRON keeps them: Wilm et al., Scaling Session-Based Transformer "
        "Recommendations using Optimized Negative Sampling and Loss Functions, RecSys 2023; github.com/otto-de/TRON",
        ("Read each line's session and events; keep the events of one type (--event-type: clicks, as TRON, or "
         "carts, orders, all). ts in milliseconds (the raw files) or seconds (converted copies), told apart.",
         "Nothing else filtered, as the sources: consecutive repeats kept, no item support minimum; sessions "
         "shorter than 2 removed.",
         "Test: sessions that start in the last 7 days, the source's test week; valid: the 7 days before.",
         "Split --split-by strict: train keeps only events before the cut (sessions that straddle it are "
         "trimmed), exactly as testset.py does.", _UNSEEN),
        read_otto, _opts(drop_repeats=False, min_item_support=1, test_days=7.0, valid_days=7.0)),
    Recipe(
        "amazon", ("sasrec",), "SASRec's data/<name>.txt (Amazon Beauty, Games, ...; Steam)",
        "SASRec: Kang & McAuley, Self-Attentive Sequential Recommendation, ICDM 2018; github.com/kang205/SASRec "
        "(data/DataProcessing.py made the files; util.py data_partition splits them)",
        ("Read whitespace `user item` lines; line order is time order (the files are sorted by time per user, "
         "users and items with fewer than 5 reviews already removed by the source).",
         "One sequence per user; nothing filtered, repeats kept.", _LOO),
        read_sasrec, _opts(drop_repeats=False, min_session_length=1, min_item_support=1, split="loo")),
    Recipe(
        "movielens", (), "ratings.dat (ml-1m, ml-10m), ratings.csv (ml-20m, ml-25m) or u.data (ml-100k)",
        "SASRec's ml-1m (Kang & McAuley, ICDM 2018; github.com/kang205/SASRec) and BERT4Rec's ml-1m / ml-20m "
        "(Sun et al., CIKM 2019; github.com/FeiSun/BERT4Rec)",
        ("Read user, movie and timestamp (seconds); every rating is an interaction, its value dropped.",
         "Each user's ratings in time order (equal timestamps in file order).",
         "Users with fewer than 5 ratings, then movies with fewer than 5, removed; then users once more "
         "(--support-rounds 1).", _LOO),
        read_movielens, _opts(drop_repeats=False, min_session_length=5, min_item_support=5, support_rounds=1,
                              split="loo")),
    Recipe(
        "recbole", (), "a RecBole atomic .inter file (header like user_id:token<TAB>item_id:token<TAB>timestamp:float)",
        "RecBole's atomic files: Zhao et al., RecBole, CIKM 2021; recbole.io, docs/user_guide/data/atomic_files",
        ("Read session_id and/or user_id, item_id and timestamp by their header names (without timestamp, line "
         "order is time order).",
         "Without session_id: one sequence per user, nothing filtered (RecBole filters nothing by default), "
         "leave-one-out ordered by time (RecBole's sequential default, split LS valid_and_test, order TO).",
         "With session_id: nextclick's defaults: repeats dropped, items with fewer than 5 clicks and sessions "
         "shorter than 2 removed until stable, the last day is test, split leak-free."),
        read_recbole, _opts(drop_repeats=False, min_session_length=1, min_item_support=1, split="loo"),
        session_options=_opts()),
)}
ALIASES = {a: r.name for r in RECIPES.values() for a in (r.name, *r.aliases)}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` or one of its aliases."""
    if name not in ALIASES:
        raise NextclickError(f"--recipe {name!r}: unknown recipe; choose one of {', '.join(ALIASES)}")
    return RECIPES[ALIASES[name]]


def run_recipe(name: str, raw: str | Path, out: str | Path, overrides: dict[str, Any] | None = None,
               args: RecipeArgs | None = None, overwrite: bool = False) -> Dataset:
    """Read ``raw`` with recipe ``name`` and write the prepared dataset to ``out``.

    ``overrides`` replace fields of the recipe's :class:`PrepareOptions` (the options the user gave
    explicitly, e.g. ``{"test_days": 2.0}``). ``meta.json`` records the recipe, its source and steps."""
    recipe, args, raw = get_recipe(name), args or RecipeArgs(), Path(raw)
    if args.event_type != "clicks" and recipe.name != "otto":
        raise NextclickError(f"--event-type applies to --recipe otto only, not {recipe.name}")
    check_output_dir(Path(out), list(ROLES), [raw], overwrite)  # before a long read
    df = recipe.read(raw, args)
    opts = replace(recipe.options_for(df), **(overrides or {}))
    ds = prepare(df, out, opts, overwrite=overwrite, source=raw)
    info = {"name": recipe.name, "source": recipe.source, "steps": list(recipe.steps), "args": asdict(args)}
    ds.meta["recipe"] = info
    tmp = Path(out) / f".{META}.tmp"
    tmp.write_text(json.dumps(ds.meta, indent=1))
    tmp.replace(Path(out) / META)
    return ds
