"""Reading click logs (CSV, TSV, Parquet, whitespace ``user item`` files) into one canonical frame.

Leaf module (polars + numpy). The canonical frame has columns ``SessionId`` (or only ``UserId``
before sessionizing), ``ItemId`` and ``Time`` (float64 unix seconds, or the line number when the
log has no time column and line order is time order), plus ``UserId`` when given.

Every user mistake raises :class:`~nextclick.errors.NextclickError` naming the file, the line (or
row, for Parquet) and the column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from nextclick.data.options import Format, IdType, ReadOptions, TimeFormat
from nextclick.data.textscan import field_counts, line_blocks, text_fault
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)


def detect_format(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes]
    if ".parquet" in suffixes or ".pq" in suffixes:
        return "parquet"
    if ".tsv" in suffixes or ".tab" in suffixes:
        return "tsv"
    if ".csv" in suffixes:
        return "csv"
    if ".txt" in suffixes or ".dat" in suffixes:
        return "whitespace"
    raise NextclickError(f"{path}: cannot tell the file format from its name; pass --format csv, tsv, parquet or whitespace")


def _row_label(fmt: str, row: int, has_header: bool) -> str:
    """Human row reference for 0-based data row ``row``."""
    if fmt == "parquet":
        return f"row {row + 1}"
    return f"line {row + 1 + int(has_header)}"


SEPARATORS = (",", ";", "\t", "|")


def sniff_separator(path: Path, default: str) -> str:
    """The delimiter of a delimited text file: of ``, ; TAB |``, the one its first line holds most
    often (``default`` on a tie or when the line holds none of them)."""
    with open(path, "rb") as f:
        line = f.readline(1 << 16).decode("utf-8", errors="replace")
    counts = {c: line.count(c) for c in SEPARATORS}
    best = max(counts, key=lambda c: (counts[c], c == default))
    if counts[best] > counts[default]:
        log.info("%s: the first line is delimited by %r; reading with that separator (--sep to choose)", path, best)
        return best
    return default


def _read_raw(
    path: Path, fmt: str, names: list[str] | None, all_str: bool, str_cols: tuple[str, ...] = (), sep: str | None = None
) -> tuple[pl.DataFrame, bool]:
    if fmt == "parquet":
        try:
            return pl.read_parquet(path), True
        except Exception as e:  # polars raises several error types for corrupt files
            raise NextclickError(f"{path}: not a readable Parquet file ({e.__class__.__name__}: {e})") from None
    if fmt == "whitespace":
        return _read_whitespace(path, names), False
    sep = sep or sniff_separator(path, {"csv": ",", "tsv": "\t"}[fmt])
    has_header = names is None
    kw: dict = {"separator": sep, "has_header": has_header, "infer_schema_length": 10_000}
    if all_str:
        kw["infer_schema"] = False
    elif str_cols and has_header:  # ids that must stay text ("007" is not "7")
        kw["schema_overrides"] = {c: pl.String for c in str_cols}
    if not has_header:
        kw["new_columns"] = names
    try:
        df = pl.read_csv(path, **kw)
    except pl.exceptions.NoDataError:
        raise NextclickError(f"{path}: the file is empty (expected a header and click rows)") from None
    except pl.exceptions.SchemaError as e:  # --names and line 1 disagree on the number of fields
        if not names:
            raise NextclickError(f"{path}: cannot parse as {fmt.upper()}: {str(e).splitlines()[0]}") from None
        n = int(field_counts(next(line_blocks(path)), sep)[0])
        raise NextclickError(f"{path}: line 1 has {n} fields but {len(names)} names were given ({names})") from None
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError) as e:
        if all_str:
            fault = text_fault(path, sep, len(names) if names else None)
            raise NextclickError(f"{path}: {fault or f'cannot parse as {fmt.upper()}: ' + str(e).splitlines()[0]}") from None
        raise
    return df, has_header


def _read_whitespace(path: Path, names: list[str] | None) -> pl.DataFrame:
    """``user item [time]`` lines whose fields are separated by any run of blanks or tabs."""
    try:
        lines = pl.read_csv(path, has_header=False, separator="\x1f", quote_char=None, new_columns=["_line"], infer_schema=False)
    except pl.exceptions.NoDataError:
        raise NextclickError(f"{path}: the file is empty (expected `user item [time]` lines)") from None
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError) as e:
        raise NextclickError(f"{path}: {text_fault(path, None, None) or 'cannot read as text: ' + str(e).splitlines()[0]}") from None
    if lines.height == 0:
        raise NextclickError(f"{path}: the file is empty (expected `user item [time]` lines)")
    parts = lines.get_column("_line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    n_fields = parts.list.len().fill_null(0)  # a blank line has none
    n = int(n_fields[0])
    if n == 0:
        raise NextclickError(f"{path}: line 1 is blank; expected `user item [time]` on every line")
    if names is None:
        if n > 3:
            raise NextclickError(f"{path}: line 1 has {n} fields; expected `user item [time]` (or give --names)")
        names = ["UserId", "ItemId", "Time"][:n]
    if len(names) != n:
        raise NextclickError(f"{path}: line 1 has {n} fields but {len(names)} names were given ({names})")
    bad = n_fields != n
    if bad.any():
        row = int(bad.arg_true()[0])
        raise NextclickError(f"{path}: line {row + 1} has {n_fields[row]} fields, expected {n} like line 1")
    return pl.DataFrame({name: parts.list.get(i) for i, name in enumerate(names)})


def click_files(path: str | Path) -> list[tuple[Path, dict[str, str]]]:
    """The files of a click log: ``path`` itself, or every ``*.parquet`` file under the directory
    ``path`` (in name order, nested ``key=value/`` partition folders included, with their keys and
    values; names starting with ``.`` or ``_`` are skipped, as data lakes mark metadata that way)."""
    path = Path(path)
    if not path.exists():
        raise NextclickError(f"{path}: no such file")
    if not path.is_dir():
        return [(path, {})]
    out = []
    for f in sorted(path.rglob("*.parquet")):
        rel = f.relative_to(path).parts
        if any(p.startswith((".", "_")) for p in rel) or not f.is_file():
            continue
        keys = dict(p.split("=", 1) for p in rel[:-1] if "=" in p)
        out.append((f, keys))
    if not out:
        raise NextclickError(f"{path}: directory holds no .parquet files (expected click files, e.g. part-00000.parquet)")
    return out


def read_clicks(path: str | Path, opts: ReadOptions | None = None) -> pl.DataFrame:
    """Read a click log into the canonical frame (see module docstring). Nothing is dropped.

    ``path`` is a file or a directory of Parquet files (see :func:`click_files`); every file is
    read and checked on its own (errors name it), partition keys become columns, and the files'
    frames are stacked in name order."""
    files = click_files(path)
    if Path(path).is_dir():
        _check_dir_format(Path(path), opts)
        return _stack([_read_file(f, opts, keys) for f, keys in files], files)
    return _read_file(files[0][0], opts)


def _check_dir_format(path: Path, opts: ReadOptions | None) -> None:
    if opts is not None and opts.format not in ("auto", "parquet"):
        raise NextclickError(f"{path}: a directory is read as Parquet files; --format {opts.format} applies to one file")


ID_COLUMNS = ("SessionId", "UserId", "ItemId")


@dataclass
class IdCodes:
    """Compact codes for the id columns of a click frame: code ``c`` of column ``col`` stands for
    ``ids[col][c]``. The ids are sorted, so codes sort (and group) exactly as the ids do, and every
    preprocessing step gives the same result on codes as on ids."""

    ids: dict[str, pl.Series]

    @classmethod
    def fit(cls, distinct: dict[str, list[pl.Series]]) -> IdCodes:
        return cls({c: pl.concat(v).unique().sort() for c, v in distinct.items()})

    def encode(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with its id columns replaced by their codes (Int32)."""
        return df.with_columns(
            s.search_sorted(df.get_column(c)).cast(pl.Int32 if s.len() < 2**31 else pl.Int64).alias(c)
            for c, s in self.ids.items()
        )

    def restore(self, df: pl.DataFrame) -> pl.DataFrame:
        """``df`` with the codes of the columns it still has replaced by the ids."""
        return df.with_columns(s.gather(df.get_column(c)).alias(c) for c, s in self.ids.items() if c in df.columns)


def read_compact(path: str | Path, opts: ReadOptions | None = None) -> tuple[pl.DataFrame, IdCodes]:
    """:func:`read_clicks` with every id column as dense Int32 codes (see :class:`IdCodes`).

    A directory is read twice, one file at a time: the first pass checks every file and collects
    its distinct ids, the second encodes each file; only the compact frame is ever whole in memory.
    """
    files = click_files(path)
    if not Path(path).is_dir():
        df = _read_file(files[0][0], opts)
        codes = IdCodes.fit({c: [df.get_column(c)] for c in ID_COLUMNS if c in df.columns})
        return codes.encode(df), codes
    _check_dir_format(Path(path), opts)
    distinct: dict[str, list[pl.Series]] = {}
    schema, text = None, set()
    for f, keys in files:
        df = _read_file(f, opts, keys)
        schema = schema or df.schema
        text |= _text_ids(df.schema, schema)
        _same_columns(_as_text(df, text), f, _as_text(schema, text), files[0][0])
        for c in ID_COLUMNS:
            if c in df.columns:
                seen = distinct.setdefault(c, [])
                seen.append(df.get_column(c).unique())
                if sum(s.len() for s in seen) > 1 << 25 or c in text:
                    distinct[c] = [pl.concat([_as_text(s, text) for s in seen]).unique()]
        log.info("%s: %d clicks read", f, df.height)
    codes = IdCodes.fit(distinct)
    return pl.concat([codes.encode(_as_text(_read_file(f, opts, keys), text)) for f, keys in files], rechunk=True), codes


def _stack(frames: list[pl.DataFrame], files: list[tuple[Path, dict[str, str]]]) -> pl.DataFrame:
    """The frames of a directory's files, one under the other; they must agree on columns and types
    (but see :func:`_text_ids`)."""
    text = set().union(*(_text_ids(df.schema, frames[0].schema) for df in frames))
    frames = [_as_text(df, text) for df in frames]
    for df, (f, _) in zip(frames[1:], files[1:]):
        _same_columns(df, f, frames[0].schema, files[0][0])
    return pl.concat(frames, rechunk=False)


def _text_ids(schema: pl.Schema, first: pl.Schema) -> set[str]:
    """Session and user columns that are integers in one file and text in another: each file
    decides alone (``"17"`` is 17 unless a text id shares its file), so the log reads them as text."""
    return {c for c in ("SessionId", "UserId") if {schema.get(c), first.get(c)} == {pl.Int64, pl.String}}


def _as_text(obj: Any, text: set[str]) -> Any:
    """A frame, schema or id series with the columns in ``text`` as strings."""
    if isinstance(obj, pl.Series):
        return obj.cast(pl.String) if obj.name in text else obj
    if isinstance(obj, pl.Schema):
        return pl.Schema({c: pl.String if c in text else t for c, t in obj.items()})
    return obj.with_columns(pl.col(c).cast(pl.String) for c in text if c in obj.columns)


def _same_columns(df: pl.DataFrame, path: Path, schema: pl.Schema, first: Path) -> None:
    kinds = {pl.Int64: "integers", pl.String: "text"}
    if {df.schema.get("ItemId"), schema.get("ItemId")} == set(kinds):  # each file chose by its own ids
        raise NextclickError(f"{path}: canonical columns differ from those of {first}: item ids (column 'ItemId') are "
                             f"{kinds[df.schema['ItemId']]} here but {kinds[schema['ItemId']]} there; "
                             "pass --item-ids str to read every id as text")
    if df.schema != schema:
        raise NextclickError(f"{path}: canonical columns {dict(df.schema)} differ from those of {first} ({dict(schema)})")


def _read_file(path: Path, opts: ReadOptions | None, keys: dict[str, str] | None = None) -> pl.DataFrame:
    """One click file (plus the partition ``keys`` of its folders) into the canonical frame."""
    opts = opts or ReadOptions()
    fmt = detect_format(path) if opts.format == "auto" else opts.format
    if keys and fmt != "parquet":
        raise NextclickError(f"{path}: partitioned directories must hold Parquet files")
    names = opts.names
    repeated = sorted({n for n in names or [] if names.count(n) > 1})
    if repeated:
        raise NextclickError(f"{path}: --names gives {', '.join(map(repr, repeated))} more than once; name each column once")
    if fmt == "whitespace" and names is None:
        names = None  # defaults applied in _read_raw
    try:
        str_cols = (opts.item_col,)  # read as written: the id policy of _id_column decides, and "007" stays visible
        df, has_header = _read_raw(path, fmt, names, all_str=False, str_cols=str_cols, sep=opts.sep)
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError):
        # schema inference failed somewhere deep in the file: re-read as text and locate the row
        df, has_header = _read_raw(path, fmt, names, all_str=True, sep=opts.sep)
    if keys:
        df = df.with_columns(pl.lit(v, dtype=pl.String).alias(k) for k, v in keys.items() if k not in df.columns)
    if df.height == 0:
        raise NextclickError(f"{path}: the file has no click rows")

    def need(col: str | None, what: str) -> None:
        if col is not None and col not in df.columns:
            raise NextclickError(
                f"{path}: missing {what} column {col!r}; the file has columns {df.columns} (choose another with --{what}-col)"
            )
        if col is not None and f"{col}_duplicated_0" in df.columns:  # polars' name for a repeated header name
            raise NextclickError(f"{path}: line 1 names the {what} column {col!r} more than once; rename all but one")

    session_col = opts.session_col
    user_col, time_col = opts.user_col, opts.time_col
    if fmt == "whitespace" and opts.names is None:
        # `user item [time]` lines: sequences per user; without a third column line order is time
        user_col = user_col or "UserId"
        if time_col == "Time" and "Time" not in df.columns:
            time_col = None
            log.info("%s: no time column; line order is taken as time order", path)
    opts = ReadOptions(**{**opts.__dict__, "user_col": user_col, "time_col": time_col})
    if session_col is not None and session_col not in df.columns and opts.user_col is not None:
        session_col = None  # sessions will be built from users
    need(session_col, "session")
    need(opts.item_col, "item")
    need(opts.time_col, "time")
    need(opts.user_col, "user")
    if session_col is None and opts.user_col is None:
        raise NextclickError(f"{path}: no session column and no user column; give --session-col or --user-col")

    out: dict[str, pl.Series] = {}
    if session_col is not None:
        out["SessionId"] = _id_column(df, session_col, "auto", path, fmt, has_header)
    if opts.user_col is not None:
        out["UserId"] = _id_column(df, opts.user_col, "auto", path, fmt, has_header)
    out["ItemId"] = _id_column(df, opts.item_col, opts.item_type, path, fmt, has_header, strict=True)
    if opts.time_col is not None:
        out["Time"] = _time_column(df, opts.time_col, opts.time_format, path, fmt, has_header)
    else:
        out["Time"] = pl.Series("Time", range(df.height), dtype=pl.Float64)
    return pl.DataFrame(out)


def _first_bad(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


_INT64_MAX = 2**63 - 1


def _id_column(df: pl.DataFrame, col: str, id_type: IdType, path: Path, fmt: str, has_header: bool,
               strict: bool = False) -> pl.Series:
    """The id column as Int64 or String. Item ids (``strict``) follow one policy: integers unless
    ``id_type`` is ``"str"``; ``"auto"`` takes a column of text ids as strings, but a column of
    integers with one text id, ids with leading zeros (``007`` would merge with ``7``) or
    integers outside int64 are errors naming the row, never a silent change of type."""
    s = df.get_column(col)
    where = lambda row: f"{path}: {_row_label(fmt, row, has_header)}, column {col!r}"  # noqa: E731
    if s.null_count():
        raise NextclickError(f"{where(_first_bad(s.is_null()))}: empty id (expected an id)")
    if s.dtype.is_integer():
        out_of_range = None
        if s.dtype == pl.UInt64:
            out_of_range = s > _INT64_MAX
        elif s.dtype == pl.Int128:
            out_of_range = (s > _INT64_MAX) | (s < -_INT64_MAX - 1)
        if out_of_range is not None and out_of_range.any():
            row = _first_bad(out_of_range)
            if not strict:
                return s.cast(pl.String).alias(col)
            raise NextclickError(f"{where(row)}: id {s[row]} is beyond int64; pass --item-ids str to read ids as text")
        return s.cast(pl.String if id_type == "str" else pl.Int64).alias(col)
    if s.dtype.is_float():
        bad = (s != s.round(0)) | ~s.is_finite() | (s.abs() > 2**53)
        if bad.any():
            row = _first_bad(bad)
            raise NextclickError(f"{where(row)}: {s[row]!r} is not an integer id")
        return s.cast(pl.Int64).alias(col)
    if s.dtype == pl.String:
        s = s.str.strip_chars()
        if id_type == "str":
            return s.alias(col)
        as_int = s.cast(pl.Int64, strict=False)
        if not strict:
            return as_int.alias(col) if as_int.null_count() == 0 else s.alias(col)
        if as_int.null_count():  # the rare path: text ids, or integers beyond int64
            digits = s.str.contains(r"^[+-]?[0-9]+$")
            if id_type == "auto" and not digits.any():
                return s.alias(col)  # a catalogue of text ids (sku-1, ...)
            if not digits.all() and (id_type == "int" or 2 * digits.sum() >= s.len()):
                row = _first_bad(~digits)
                raise NextclickError(f"{where(row)}: {s[row]!r} is not an integer id among integer ids; "
                                     "pass --item-ids str to read every id as text")
            if not digits.all():  # the odd one out is the integer
                row = _first_bad(digits)
                raise NextclickError(f"{where(row)}: {s[row]!r} is an integer id among text ids; "
                                     "pass --item-ids str to read every id as text")
            row = _first_bad(as_int.is_null())
            raise NextclickError(f"{where(row)}: id {s[row]} is beyond int64; pass --item-ids str to read ids as text")
        # written otherwise than its integer ("007", "+7", "-07"): it would merge with another id
        padded = (s.str.len_bytes() > 1) & (s.str.starts_with("0") | s.str.starts_with("+") | s.str.starts_with("-0"))
        if padded.any():
            row = _first_bad(padded)
            raise NextclickError(f"{where(row)}: id {s[row]!r} is written with leading zeros or a sign, so it would merge with "
                                 f"{int(s[row])}; pass --item-ids str to keep ids as written")
        return as_int.alias(col)
    raise NextclickError(f"{path}: column {col!r} has type {s.dtype}; expected integer or string ids")


_MAX_SECONDS = 7.3e9  # the year 2200 in unix seconds
_MIN_AUTO_MS = 1e10  # April 1970 in unix milliseconds: an earlier time in a column of milliseconds is seconds


def _dated(seconds: pl.Series, s: pl.Series, where: Callable[[int], str]) -> pl.Series:
    """Unix seconds of dates and times as written (``s``), each within the years 1739 to 2200."""
    off = seconds.abs() > _MAX_SECONDS
    if off.any():
        row = _first_bad(off)
        raise NextclickError(f"{where(row)}: timestamp {s[row]} is outside the years 1739 to 2200; fix the row")
    return seconds.alias("Time")


def _time_column(df: pl.DataFrame, col: str, tf: TimeFormat, path: Path, fmt: str, has_header: bool) -> pl.Series:
    s = df.get_column(col)
    where = lambda row: f"{path}: {_row_label(fmt, row, has_header)}, column {col!r}"  # noqa: E731
    if s.null_count():
        row = _first_bad(s.is_null())
        raise NextclickError(f"{where(row)}: empty timestamp")
    if s.dtype.is_temporal():
        ms = (s.cast(pl.Datetime("ms")) if s.dtype == pl.Date else s).dt.epoch("ms")
        return _dated(ms.cast(pl.Float64) / 1000.0, s, where)
    if s.dtype == pl.String:
        num = s.str.strip_chars().cast(pl.Float64, strict=False)
        mostly_numeric = num[0] is not None  # the first row decides, as in schema inference
        if tf in ("s", "ms") or (tf == "auto" and mostly_numeric):
            if num.null_count():
                row = _first_bad(num.is_null())
                raise NextclickError(
                    f"{where(row)}: {s[row]!r} is not a number (expected unix {'seconds or milliseconds' if tf == 'auto' else tf} timestamps)"
                )
            s = num
        else:
            text = s.str.strip_chars()
            parsed = text.str.to_datetime(strict=False, time_unit="ms", time_zone="UTC")
            for _ in range(3):  # polars infers one format per call: retry rows in another ISO variant
                if not parsed.null_count():
                    break
                rest = text.filter(parsed.is_null()).str.to_datetime(strict=False, time_unit="ms", time_zone="UTC")
                if rest.null_count() == rest.len():
                    break
                parsed = parsed.scatter(parsed.is_null().arg_true(), rest)
            if parsed.null_count():
                row = _first_bad(parsed.is_null())
                raise NextclickError(
                    f"{where(row)}: cannot parse timestamp {s[row]!r} "
                    "(expected ISO-8601 like 2014-04-07T10:51:09Z, or unix seconds / milliseconds)"
                )
            return _dated(parsed.dt.epoch("ms").cast(pl.Float64) / 1000.0, s, where)
    if not s.dtype.is_numeric():
        raise NextclickError(f"{path}: column {col!r} has type {s.dtype}; expected timestamps")
    s = s.cast(pl.Float64)
    if tf == "iso":
        raise NextclickError(f"{path}: column {col!r} is numeric but --time-format iso was given")
    if not s.is_finite().all():
        row = _first_bad(~s.is_finite())
        raise NextclickError(f"{where(row)}: timestamp {s[row]} is not a finite number")
    unit = tf
    if tf == "auto":
        unit = "ms" if float(s.abs().median() or 0.0) > 1e11 else "s"
        log.info("%s: column %r read as unix %s", path, col, "milliseconds" if unit == "ms" else "seconds")
    seconds = s / 1000.0 if unit == "ms" else s
    off = seconds.abs() > _MAX_SECONDS
    if off.any():  # e.g. milliseconds among seconds: the test day would land in train
        row = _first_bad(off)
        raise NextclickError(
            f"{where(row)}: timestamp {s[row]:.0f} is out of range for unix {'milliseconds' if unit == 'ms' else 'seconds'} "
            f"like the rest of the column (beyond the year 2200); fix the row or pass --time-format"
        )
    early = (s.abs() < _MIN_AUTO_MS) if tf == "auto" and unit == "ms" else None
    if early is not None and early.any():  # seconds among milliseconds: the click would move to 1970
        row = _first_bad(early)
        raise NextclickError(
            f"{where(row)}: timestamp {s[row]:.0f} looks like unix seconds among milliseconds (as milliseconds it falls "
            f"in the first months of 1970); fix the row or pass --time-format"
        )
    return seconds.alias("Time")
