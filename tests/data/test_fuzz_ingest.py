"""Fuzzed ingestion: generated click logs, damaged on purpose, through ``read_clicks``, ``prepare``
and ``load_sessions``.

Hypothesis writes clean logs (CSV, TSV, Parquet, whitespace ``user item time`` lines) and damages
one line at a time: truncated lines, a field too few or too many, text, huge or negative ids,
NaN / infinite / far-future / millisecond timestamps, bytes that are not UTF-8, blank lines and
the header again. The oracle is a plain-Python reading of the same bytes: where it finds a fault,
the reader must raise one :class:`NextclickError` line naming the file, the damaged line (row, for
Parquet) and, where the fault is in one field, its column; where it finds none, the reader must
return exactly the rows it read, and ``prepare`` / ``load_sessions`` must keep exactly the clicks a
plain-Python pipeline keeps, and report every click they drop.
"""

from __future__ import annotations

import math
import re
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from nextclick.data.dataset import Dataset, load_sessions
from nextclick.data.io import ReadOptions, read_clicks
from nextclick.data.options import PrepareOptions
from nextclick.data.preprocess import prepare
from nextclick.errors import NextclickError

COLS = ("SessionId", "ItemId", "Time")
INT64 = (-(2**63), 2**63 - 1)
DAY = 86_400


def fuzz(examples: int) -> settings:
    """Reproducible in CI: a fixed seed, no example database, no deadline."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# letters that cannot spell nan, inf, true, false or null: polars would read those as numbers or booleans
PLAIN = "bcdghjkmpqrtuvwxyzBCDGHJKMPQRTUVWXYZ"
NOT_UTF8 = (b"\xff", b"\xc3(", b"\xe2\x82", b"\x80", b"\xed\xa0\x80")

Row = tuple[str, Any, float]  # session id as written, item id (int or str), unix seconds
Sessions = dict[str, list[tuple[Any, float]]]


class Fault(Exception):
    """The plain-Python reading found a fault: the reader must name ``line`` (and ``column``)."""

    def __init__(self, line: int | None, column: str | None = None) -> None:
        super().__init__(line, column)
        self.line, self.column = line, column


# ---------------------------------------------------------------------------- clean logs
@dataclass
class Log:
    rows: list[tuple[str, Any, int]]
    text_ids: bool


@st.composite
def logs(draw: st.DrawFn, sessions: tuple[int, int] = (1, 7), pool: tuple[int, int] = (1, 6)) -> Log:
    """``sessions`` (least, most) sessions of 1-6 clicks (at least 3 clicks in all) on a pool of
    ``pool`` items, over four days, in any file order."""
    text_ids = draw(st.booleans())
    if text_ids:
        item = st.text(string.ascii_letters, min_size=1, max_size=4).map(lambda s: "sku" + s)
    else:
        item = st.one_of(st.integers(-50, 50), st.integers(*INT64))
    items = draw(st.lists(item, min_size=pool[0], max_size=pool[1], unique=True))
    sids = draw(st.lists(st.one_of(st.integers(0, 99), st.integers(*INT64)), min_size=sessions[0], max_size=sessions[1], unique=True))
    base = draw(st.integers(1_000_000_000, 1_700_000_000))
    rows: list[tuple[str, Any, int]] = []
    for n, sid in enumerate(sids):
        t = base + (4 * n // len(sids)) * DAY + draw(st.integers(0, DAY))  # spread over four days
        for _ in range(draw(st.integers(1 if n < len(sids) - 1 else 3, 6))):
            rows.append((str(sid), draw(st.sampled_from(items)), t))
            t += draw(st.integers(0, 3_000))
    order = draw(st.permutations(range(len(rows))))
    return Log([rows[i] for i in order], text_ids)


@dataclass(frozen=True)
class How:
    """How a log is written and read: text item ids, times in milliseconds, ``--item-ids``."""

    text_ids: bool = False
    ms: bool = False
    item_ids: str = "auto"

    def read_options(self) -> ReadOptions:
        return ReadOptions(item_type=self.item_ids)  # type: ignore[arg-type]


def text_lines(log: Log, sep: str, order: tuple[str, ...], header: bool = True) -> list[bytes]:
    body = [sep.join(str(dict(zip(COLS, r))[c]) for c in order).encode() for r in log.rows]
    return ([sep.join(order).encode()] if header else []) + body


def join_lines(lines: list[bytes], trailing_newline: bool) -> bytes:
    # a blank last line only exists when a line break follows it
    return b"\n".join(lines) + (b"\n" if trailing_newline or lines[-1] == b"" else b"")


# ---------------------------------------------------------------------------- the plain-Python reading
INT_RE = re.compile(r"(0|-?[1-9][0-9]*)\Z")
DIGITS_RE = re.compile(r"[+-]?[0-9]+\Z")
NUMBER_RE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
MAX_SECONDS = 7.3e9  # the year 2200


def ref_session(v: str, line: int, col: str) -> str:
    v = v.strip()
    if not v:
        raise Fault(line, col)
    return v


def ref_item(v: str, line: int, col: str, how: How) -> Any:
    v = v.strip()
    if not v:
        raise Fault(line, col)
    if how.item_ids == "str":
        return v
    if how.text_ids:
        assert not DIGITS_RE.match(v), "the fuzzer puts no integer among text ids"
        return v
    if not INT_RE.match(v) or not INT64[0] <= int(v) <= INT64[1]:
        raise Fault(line, col)
    return int(v)


def ref_time(v: str, line: int, col: str, how: How) -> float:
    """Unix seconds; in a log of milliseconds, a time before May 1970 is seconds written among them."""
    v = v.strip()
    t = float(v) if NUMBER_RE.match(v) else math.nan
    seconds = t / 1000.0 if how.ms else t
    if not (math.isfinite(t) and abs(seconds) <= MAX_SECONDS and (not how.ms or abs(t) >= 1e10)):
        raise Fault(line, col)
    return seconds


def ref_fields(fields: dict[str, str], line: int, how: How, names: tuple[str, str, str] = COLS) -> Row:
    s, i, t = names
    return (ref_session(fields[s], line, s), ref_item(fields[i], line, i, how), ref_time(fields[t], line, t, how))


def ref_read(lines: list[bytes], split: Callable[[str], list[str]], order: tuple[str, ...], how: How,
             first: int = 2, names: tuple[str, str, str] = COLS, quoting: bool = True) -> list[Row]:
    """The rows of data lines ``lines`` (line ``first`` first), or :class:`Fault` at the first bad
    line; with ``quoting`` (CSV, TSV) a lone double quote is a fault, elsewhere it is text."""
    rows = []
    for n, raw in enumerate(lines, start=first):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            field = len(split(raw[: e.start].decode("utf-8", "replace"))) - 1
            raise Fault(n, order[field] if field < len(order) else None) from None
        fields = split(line)
        if len(fields) != len(order) or (quoting and line.count('"') % 2):
            raise Fault(n)
        rows.append(ref_fields(dict(zip(order, fields)), n, how, names))
    return rows


def ref_sessions(rows: list[Row]) -> Sessions:
    out: Sessions = {}
    for s, i, t in rows:
        out.setdefault(s, []).append((i, t))
    return {s: sorted(c, key=lambda x: x[1]) for s, c in out.items()}  # stable: ties keep file order


def ref_filter(sessions: Sessions, min_len: int, min_support: int) -> tuple[Sessions, int, int]:
    """Consecutive repeats dropped, then short sessions and rare items until stable; and the two counts removed."""
    dedup = {s: [c for k, c in enumerate(cs) if k == 0 or c[0] != cs[k - 1][0]] for s, cs in sessions.items()}
    repeats = sum(map(len, sessions.values())) - sum(map(len, dedup.values()))
    kept = dedup
    while True:
        short = {s: cs for s, cs in kept.items() if len(cs) >= min_len}
        counts: dict[Any, int] = {}
        for cs in short.values():
            for i, _ in cs:
                counts[i] = counts.get(i, 0) + 1
        rare = {s: [c for c in cs if counts[c[0]] >= min_support] for s, cs in short.items()}
        rare = {s: cs for s, cs in rare.items() if cs}
        if rare == kept:
            break
        kept = rare
    return kept, repeats, sum(map(len, dedup.values())) - sum(map(len, kept.values()))


def frame_sessions(df: pl.DataFrame, session_col: str = "SessionId") -> Sessions:
    out: Sessions = {}
    for s, i, t in df.select(session_col, "ItemId", "Time").rows():
        out.setdefault(str(s), []).append((i, t))
    return out


def n_clicks(sessions: Sessions) -> int:
    return sum(map(len, sessions.values()))


# ---------------------------------------------------------------------------- the oracle
def expect_fault(call: Callable[[], Any], path: Path, fault: Fault, label: str = "line") -> None:
    """``call`` raises one NextclickError line naming ``path``, the faulty line (and column)."""
    with pytest.raises(NextclickError) as info:
        call()
    msg = str(info.value)
    event(f"error naming the {label}" if fault.line is not None else "error naming the file")
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    if fault.line is not None:
        assert re.search(rf"\b{label} {fault.line}\b", msg), f"{label} {fault.line} not named: {msg}"
    if fault.column is not None:
        assert repr(fault.column) in msg, f"column {fault.column!r} not named: {msg}"


def check_read(path: Path, rows: list[Row], opts: ReadOptions | None = None, session_col: str = "SessionId") -> None:
    df = read_clicks(path, opts)
    assert [(str(s), i, t) for s, i, t in df.select(session_col, "ItemId", "Time").rows()] == rows


def check_load_sessions(path: Path, rows: list[Row], opts: ReadOptions | None = None) -> None:
    """A raw click file as training sessions: every session of two or more clicks, in time order."""
    sess, rep = load_sessions(path, "train", read_opts=opts)
    ref = ref_sessions(rows)
    one_click = [s for s, cs in ref.items() if len(cs) < 2]
    assert (rep.unknown_events, rep.short_sessions, rep.short_session_events) == (0, len(one_click), len(one_click))
    got = {str(sid): sess.vocab.decode(sess.session(k)).tolist() for k, sid in enumerate(sess.session_ids.tolist())}
    assert got == {s: [i for i, _ in cs] for s, cs in ref.items() if len(cs) >= 2}
    assert n_clicks(ref) == sess.n_events + rep.short_session_events


def check_prepare(path: Path, rows: list[Row], min_support: int, split: str = "none", read: ReadOptions | None = None) -> None:
    """``prepare`` keeps exactly the clicks of :func:`ref_filter` and reports every click it drops;
    with the time split, train and test share no session, no test click is before a train click,
    every test item is trained on, and each split's clicks add up with what its report removed."""
    kept, repeats, filtered = ref_filter(ref_sessions(rows), 2, min_support)
    out = Path(tempfile.mkdtemp(dir=path.parent))
    opts = PrepareOptions(read=read or ReadOptions(), min_item_support=min_support, split=split)  # type: ignore[arg-type]
    if not kept:
        event("prepare: every click filtered out")
        with pytest.raises(NextclickError, match="no clicks left"):
            prepare(path, out, opts)
        return
    try:
        ds = prepare(path, out, opts)
    except NextclickError as e:  # a time split with nothing on one side says so
        event("prepare: a split left empty")
        assert split == "time" and "\n" not in str(e) and re.search(r"split|nothing left to train", str(e)), e
        return
    rep = {r["step"]: r for r in ds.meta["report"]}
    assert rep["read"]["details"]["events"] == len(rows)
    assert (rep["drop_repeats"]["removed_events"], rep["min_support"]["removed_events"]) == (repeats, filtered)
    event(f"prepare: {split} split written")
    if split == "none":
        assert frame_sessions(ds.frame("train")) == kept
        return
    check_time_split(ds, kept, rep)


def check_time_split(ds: Dataset, kept: Sessions, rep: dict[str, dict]) -> None:
    clicks = {(s, i, t) for s, cs in kept.items() for i, t in cs}
    for before, (a, b), step in ((kept, ("train", "test"), "time_split"), (None, ("train_tr", "valid"), "valid_split")):
        before = before or frame_sessions(ds.frame("train"))
        train, test = frame_sessions(ds.frame(a)), frame_sessions(ds.frame(b))
        for part in (train, test):
            assert {(s, i, t) for s, cs in part.items() for i, t in cs} <= clicks
            assert all([t for _, t in cs] == sorted(t for _, t in cs) for cs in part.values())
        assert n_clicks(before) == n_clicks(train) + n_clicks(test) + rep[step]["removed_events"]
        assert not set(train) & set(test)
        assert all(len(cs) >= 2 for cs in test.values())
        assert {i for cs in test.values() for i, _ in cs} <= {i for cs in train.values() for i, _ in cs}
        if rep[step]["details"]["by"] == "strict":
            assert max(t for cs in train.values() for _, t in cs) < min(t for cs in test.values() for _, t in cs)


# ---------------------------------------------------------------------------- damage
KINDS = ("value", "truncate", "drop_field", "add_field", "not_utf8", "quote", "blank", "header_again", "clean")
HUGE = st.one_of(st.integers(2**63, 10**40), st.integers(-(10**40), -(2**63) - 1)).map(str)


def field_values(col: str, cur: str, text_ids: bool) -> st.SearchStrategy[bytes]:
    """What the fuzzer writes into one field: text, huge and negative numbers, padded ids,
    floats, NaN, infinities, far-future, millisecond and second timestamps, nothing."""
    letters = st.text(PLAIN, min_size=1, max_size=5)
    if col == "SessionId":
        vals = st.one_of(letters, st.integers(*INT64).map(str), HUGE, st.just(""))
    elif col == "ItemId" and text_ids:
        vals = st.one_of(st.text(string.ascii_letters, min_size=1, max_size=5), st.just(""))
    elif col == "ItemId":
        odd = ["", "007", "+7", "-07", "00", "1.5", "7.0", "nan", "1e3"]
        vals = st.one_of(letters, st.integers(*INT64).map(str), HUGE, st.sampled_from(odd))
    else:
        odd = ["", "nan", "NaN", "inf", "-inf", "1e30", "-1e30", cur + "000", "-" + cur + "000", cur + ".5", cur[:-3]]
        vals = st.one_of(letters, st.integers(-(10**6), 10**6).map(str), HUGE, st.sampled_from(odd))
    return vals.map(str.encode)


def damage(draw: st.DrawFn, lines: list[bytes], sep: bytes, order: tuple[str, ...], text_ids: bool, first: int) -> str:
    """Damage one of ``lines[first:]`` in place (or insert a line there); returns the kind of damage."""
    kind = draw(st.sampled_from(KINDS))
    k = draw(st.integers(first, len(lines) - (1 if kind not in ("blank", "header_again") else 0)))
    if kind in ("blank", "header_again"):
        lines.insert(k, b"" if kind == "blank" else lines[0])
        return kind
    line = lines[k]
    fields = line.split(sep) if sep != b" " else line.split()
    if kind == "value":
        j = draw(st.integers(0, len(order) - 1))
        fields[j] = draw(field_values(order[j], fields[j].decode(), text_ids))
    elif kind == "drop_field":
        del fields[draw(st.integers(0, len(fields) - 1))]
    elif kind == "add_field":
        fields.insert(draw(st.integers(0, len(fields))), draw(st.text(PLAIN + string.digits, min_size=1, max_size=4)).encode())
    if kind in ("value", "drop_field", "add_field"):
        lines[k] = sep.join(fields)
    elif kind == "truncate":
        lines[k] = line[: draw(st.integers(0, len(line) - 1))]
    elif kind in ("not_utf8", "quote"):
        at = draw(st.integers(0, len(line)))
        lines[k] = line[:at] + (draw(st.sampled_from(NOT_UTF8)) if kind == "not_utf8" else b'"') + line[at:]
    return kind


@dataclass
class TextCase:
    how: How
    fmt: str
    order: tuple[str, ...]
    lines: list[bytes]
    kind: str


@st.composite
def damaged_delimited(draw: st.DrawFn) -> TextCase:
    """A CSV or TSV log (any column order; times in seconds or milliseconds) with one line damaged."""
    log = draw(logs())
    how = How(log.text_ids, ms=draw(st.booleans()), item_ids=draw(st.sampled_from(["auto", "str"])))
    if how.ms:
        log = Log([(s, i, t * 1000) for s, i, t in log.rows], log.text_ids)
    fmt = draw(st.sampled_from(["csv", "tsv"]))
    order = tuple(draw(st.permutations(COLS)))
    lines = text_lines(log, "," if fmt == "csv" else "\t", order)
    kind = damage(draw, lines, b"," if fmt == "csv" else b"\t", order, log.text_ids, first=1)
    return TextCase(how, fmt, order, lines, kind)


@st.composite
def damaged_whitespace(draw: st.DrawFn) -> TextCase:
    """``user item time`` lines; line 1 stays whole, as it decides how many fields a line has."""
    log = draw(logs())
    lines = [b" ".join(str(v).encode() for v in r) for r in log.rows]
    kind = damage(draw, lines, b" ", COLS, log.text_ids, first=1)
    blanks = draw(st.sampled_from([b" ", b"\t", b"  ", b" \t "]))
    return TextCase(How(log.text_ids), "txt", COLS, [line.replace(b" ", blanks) for line in lines], kind)


def clean_rows(log: Log) -> list[Row]:
    return [(s, i, float(t)) for s, i, t in log.rows]


# ---------------------------------------------------------------------------- properties
@fuzz(120)
@given(st.one_of(logs(), logs(sessions=(8, 16), pool=(2, 4))), st.sampled_from(["csv", "tsv", "parquet"]),
       st.integers(1, 3), st.sampled_from(["time", "none"]))
def test_clean_logs_give_exactly_the_reference_dataset(log: Log, fmt: str, min_support: int, split: str) -> None:
    """Sessions of one click, items below the support, logs the filter empties: ``prepare`` and
    ``load_sessions`` keep and report exactly what the plain-Python pipeline does."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"clicks.{fmt}"
        if fmt == "parquet":
            schema = {"SessionId": pl.String, "ItemId": pl.String if log.text_ids else pl.Int64, "Time": pl.Int64}
            frame = pl.DataFrame(log.rows, schema=schema, orient="row")
            frame.with_columns(pl.col("SessionId").cast(pl.Int64)).write_parquet(path)
        else:
            path.write_bytes(join_lines(text_lines(log, "," if fmt == "csv" else "\t", COLS), True))
        rows = clean_rows(log)
        check_read(path, rows)
        check_load_sessions(path, rows)
        check_prepare(path, rows, min_support, split)


@fuzz(150)
@given(damaged_delimited(), st.booleans(), st.integers(1, 2))
def test_damaged_csv_and_tsv_fail_on_the_line_or_read_right(case: TextCase, trailing: bool, min_support: int) -> None:
    """One damaged line: an error naming it (and its column), or the rows the reference reads,
    through ``read_clicks``, ``load_sessions`` and ``prepare`` alike."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"clicks.{case.fmt}"
        path.write_bytes(join_lines(case.lines, trailing))
        sep, opts = ("," if case.fmt == "csv" else "\t"), case.how.read_options()
        event(f"damage: {case.kind}")
        try:
            rows = ref_read(case.lines[1:], lambda line: line.split(sep), case.order, case.how)
        except Fault as fault:
            expect_fault(lambda: read_clicks(path, opts), path, fault)
            expect_fault(lambda: load_sessions(path, "train", read_opts=opts), path, fault)
            return
        check_read(path, rows, opts)
        check_load_sessions(path, rows, opts)
        if case.kind != "clean":
            check_prepare(path, rows, min_support, read=opts)


@fuzz(60)
@given(damaged_whitespace(), st.booleans())
def test_damaged_whitespace_files_fail_on_the_line_or_read_right(case: TextCase, trailing: bool) -> None:
    """``user item time`` lines, one damaged: an error naming it, or the rows the reference reads."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clicks.txt"
        path.write_bytes(join_lines(case.lines, trailing))
        names = ("UserId", "ItemId", "Time")
        try:
            rows = ref_read(case.lines, str.split, names, case.how, first=1, names=names, quoting=False)
        except Fault as fault:
            fault.column = None if case.kind == "not_utf8" else fault.column  # whitespace files have no columns to name there
            expect_fault(lambda: read_clicks(path), path, fault)
            return
        check_read(path, rows, session_col="UserId")


@dataclass
class ParquetCase:
    columns: dict[str, pa.Array]
    expected: list[Row] | Fault
    kind: str


UNIT_KINDS = ("ms_float", "int_time_ms", "seconds_among_ms")  # a time 1000 times off the rest of its file


@st.composite
def damaged_parquet(draw: st.DrawFn) -> ParquetCase:
    """Typed columns with one damaged row: NaN / infinite / far-future / millisecond times, seconds
    among milliseconds, a missing value, uint64 ids beyond int64, a fractional id, one text id
    among integer ids."""
    log = draw(logs())
    n = len(log.rows)
    sess: list[Any] = [int(s) for s, _, _ in log.rows]
    items: list[Any] = [i for _, i, _ in log.rows]
    times: list[Any] = [float(t) for _, _, t in log.rows]
    types = {"SessionId": pa.int64(), "ItemId": pa.string() if log.text_ids else pa.int64(), "Time": pa.float64()}
    k = draw(st.integers(0, n - 1))
    kind = draw(st.sampled_from(["clean", "time", *UNIT_KINDS, "datetime", "null", "uint64", "float_item", "text_item"]))
    fault: Fault | None = None
    written: list[int] | None = None  # the time column as stored, where it is not ``times``
    if kind in ("time", "ms_float"):
        odd = [times[k] * 1000] if kind == "ms_float" else [math.nan, math.inf, -math.inf, 1e30, -5.0, times[k] + 0.5]
        times[k] = draw(st.sampled_from(odd))
        fault = None if math.isfinite(times[k]) and abs(times[k]) <= MAX_SECONDS else Fault(k + 1, "Time")
    elif kind == "datetime":  # a timestamp column in milliseconds; the years 2500 and 1600 are out of range
        types["Time"], written = pa.timestamp("ms"), [int(t) * 1000 for t in times]
        written[k] = draw(st.sampled_from([written[k] + 500, 16_725_225_600_000, -11_676_096_000_000]))
        times = [w / 1000 for w in written]
        fault = None if abs(times[k]) <= MAX_SECONDS else Fault(k + 1, "Time")
    elif kind in ("int_time_ms", "seconds_among_ms"):
        types["Time"], times = pa.int64(), [int(t) * (1000 if kind == "seconds_among_ms" else 1) for t in times]
        times[k] = times[k] * 1000 if kind == "int_time_ms" else times[k] // 1000
        fault = Fault(k + 1, "Time")
    elif kind == "null":
        col = draw(st.sampled_from(COLS))
        {"SessionId": sess, "ItemId": items, "Time": times}[col][k] = None
        fault = Fault(k + 1, col)
    elif kind == "uint64":
        col = draw(st.sampled_from(["SessionId"] + ([] if log.text_ids else ["ItemId"])))
        values = [v & INT64[1] for v in (sess if col == "SessionId" else items)]
        values[k] = draw(st.integers(2**63, 2**64 - 1))
        sess, items = (values, items) if col == "SessionId" else (sess, values)
        types[col] = pa.uint64()
        fault = Fault(k + 1, "ItemId") if col == "ItemId" else None  # a session id is any text
    elif kind == "float_item" and not log.text_ids:
        types["ItemId"], items = pa.float64(), [float(i % 1000) for i in items]
        items[k] = draw(st.sampled_from([1.5, math.nan, math.inf, 2.0**60]))
        fault = Fault(k + 1, "ItemId")
    elif kind == "text_item" and not log.text_ids:
        types["ItemId"], items = pa.string(), [str(i) for i in items]
        items[k] = draw(st.text(PLAIN, min_size=1, max_size=4))
        fault = Fault(k + 1, "ItemId")
    columns = {c: pa.array(v, type=types[c]) for c, v in zip(COLS, (sess, items, written or times))}
    if fault is not None:
        return ParquetCase(columns, fault, kind)
    return ParquetCase(columns, [(str(s), i if log.text_ids else int(i), float(t)) for s, i, t in zip(sess, items, times)], kind)


@fuzz(80)
@given(damaged_parquet())
def test_damaged_parquet_fails_on_the_row_or_reads_right(case: ParquetCase) -> None:
    """One damaged row of typed columns: an error naming the row and column, or the rows written."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clicks.parquet"
        pq.write_table(pa.table(case.columns), path)
        if isinstance(case.expected, Fault):
            expect_fault(lambda: read_clicks(path), path, case.expected, label="row")
            return
        check_read(path, case.expected)
        check_load_sessions(path, case.expected)


@fuzz(40)
@given(damaged_parquet(), st.lists(st.integers(1, 20), max_size=3, unique=True))
def test_a_directory_of_parts_names_the_damaged_part_and_row(case: ParquetCase, cuts: list[int]) -> None:
    """The same rows cut into Parquet parts: an error names the part holding the damaged row and
    the row within it; otherwise the parts read and prepare as the whole log would.

    Each part decides its own time unit, so a time 1000 times off the rest of the log is no fault
    in a part of its own (left out here). A session id beyond int64 makes its part's ids text: the
    other parts' ids are read as text too."""
    assume(case.kind not in UNIT_KINDS)
    table = pa.table(case.columns)
    bounds = [0, *sorted(c for c in cuts if c < table.num_rows), table.num_rows]
    with tempfile.TemporaryDirectory() as d:
        parts = Path(d) / "clicks"
        parts.mkdir()
        for j, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            pq.write_table(table.slice(lo, hi - lo), parts / f"part-{j:05d}.parquet")
        if isinstance(case.expected, Fault):
            row = case.expected.line or 0
            j = max(j for j, lo in enumerate(bounds[:-1]) if lo < row)
            fault = Fault(row - bounds[j], case.expected.column)
            if case.kind == "text_item":  # a part of text ids alone: its item ids are text, the others' integers
                fault = Fault(None, "ItemId") if row - bounds[j] == bounds[j + 1] - bounds[j] == 1 else fault
            expect_fault(lambda: read_clicks(parts), parts / f"part-{j:05d}.parquet", fault, label="row")
            expect_fault(lambda: prepare(parts, Path(d) / "out"), parts / f"part-{j:05d}.parquet", fault, label="row")
            return
        check_read(parts, case.expected)
        check_prepare(parts, case.expected, min_support=1)


def ref_user_sessions(rows: list[Row], gap: float) -> Sessions:
    """Each user's clicks in time order, cut where two clicks are more than ``gap`` seconds apart."""
    out: Sessions = {}
    for user, clicks in ref_sessions(rows).items():
        n = 0
        for k, (i, t) in enumerate(clicks):
            n += k > 0 and t - clicks[k - 1][1] > gap
            out.setdefault(f"{user}/{n}", []).append((i, t))
    return out


def contents(sessions: Sessions) -> list[list[tuple[Any, float]]]:
    return sorted(sessions.values(), key=repr)


@fuzz(50)
@given(logs(sessions=(2, 10), pool=(2, 4)), st.sampled_from(["loo", "none"]), st.integers(1, 2))
def test_sessions_built_from_users_match_the_reference(log: Log, split: str, min_support: int) -> None:
    """No session column: sessions cut at 30-minute gaps (or one sequence per user for
    leave-one-out), filtered, and split exactly as the plain-Python pipeline does."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "clicks.csv"
        path.write_bytes(b"UserId,ItemId,Time\n" + join_lines(text_lines(log, ",", COLS, header=False), True))
        rows = clean_rows(log)
        built = ref_user_sessions(rows, 1800.0) if split == "none" else ref_sessions(rows)
        kept, _, _ = ref_filter(built, 2, min_support)
        opts = PrepareOptions(read=ReadOptions(session_col=None, user_col="UserId"), min_item_support=min_support, split=split)  # type: ignore[arg-type]
        event(f"users: {split} split " + ("written" if kept else "filtered out"))
        if not kept:
            with pytest.raises(NextclickError, match="no clicks left"):
                prepare(path, Path(d) / "out", opts)
            return
        ds = prepare(path, Path(d) / "out", opts)
        if split == "none":
            assert contents(frame_sessions(ds.frame("train"))) == contents(kept)
            return
        long = {u: cs for u, cs in kept.items() if len(cs) >= 3}
        assert frame_sessions(ds.frame("test")) == long
        assert frame_sessions(ds.frame("valid")) == {u: cs[:-1] for u, cs in long.items()}
        assert frame_sessions(ds.frame("train")) == {u: cs[:-2] if u in long else cs for u, cs in kept.items()}
