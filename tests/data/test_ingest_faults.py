"""Ingestion faults one at a time: whole-file faults (empty, header only, a column named twice),
the faults the fuzzer of ``test_fuzz_ingest.py`` found, each pinned down, and the ``prepare``
command once per fault family (exit 2, one line on stderr, no traceback)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nextclick.data.dataset import load_sessions
from nextclick.data.io import ReadOptions, read_clicks
from nextclick.data.options import PrepareOptions
from nextclick.data.preprocess import prepare
from nextclick.errors import NextclickError
from tests.conftest import REPO_ROOT

COLS = ("SessionId", "ItemId", "Time")


# ---------------------------------------------------------------------------- whole-file faults
HEADER = b"SessionId,ItemId,Time\n"
ROWS = b"1,10,1396860669\n1,11,1396860700\n2,10,1396861000\n"


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("clicks.csv", b"", "empty"),
        ("clicks.tsv", b"", "empty"),
        ("clicks.txt", b"", "empty"),
        ("clicks.csv", HEADER, "no click rows"),
        ("clicks.tsv", HEADER.replace(b",", b"\t"), "no click rows"),
        ("clicks.csv", b"SessionId,ItemId,Time,ItemId\n1,10,1396860669,12\n", "'ItemId' more than once"),
        ("clicks.csv", b"SessionId,Time,ItemId,Time\n1,1396860669,10,1396860669\n", "'Time' more than once"),
        ("clicks.csv", b"SessionId,SessionId,ItemId,Time\n1,2,10,1396860669\n", "'SessionId' more than once"),
        ("clicks.csv", b"Sessi\xffonId,ItemId,Time\n" + ROWS, "missing session column"),
        ("clicks.txt", b"\n1 10 1396860669\n", "line 1 is blank"),
    ],
)
def test_whole_file_faults_are_one_line_errors_naming_the_file(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    for call in (lambda: read_clicks(path), lambda: load_sessions(path, "train"), lambda: prepare(path, tmp_path / "out")):
        with pytest.raises(NextclickError) as info:
            call()
        assert str(path) in str(info.value) and needle in str(info.value) and "\n" not in str(info.value)


def test_empty_and_duplicate_column_parquet_name_the_file(tmp_path: Path) -> None:
    empty, dup = tmp_path / "empty.parquet", tmp_path / "dup.parquet"
    pq.write_table(pa.table({c: pa.array([], pa.int64()) for c in COLS}), empty)
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([10]), pa.array([11]), pa.array([1.0])],
                                        names=["SessionId", "ItemId", "ItemId", "Time"]), dup)
    for path, needle in ((empty, "no click rows"), (dup, "ItemId")):
        with pytest.raises(NextclickError, match=re.escape(str(path)) + f".*{needle}"):
            read_clicks(path)


def test_sessions_of_one_click_are_reported_never_kept(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + b"1,10,1396860669\n2,11,1396860700\n3,10,1396861000\n")
    sess, rep = load_sessions(path, "train")
    assert (sess.n_sessions, rep.short_sessions, rep.short_session_events) == (0, 3, 3)
    with pytest.raises(NextclickError, match="no clicks left after filtering"):
        prepare(path, tmp_path / "out", PrepareOptions(min_item_support=1))


def test_a_log_whose_every_item_is_filtered_out_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + ROWS)  # items 10 and 11: three clicks, below a support of 5
    with pytest.raises(NextclickError, match="no clicks left after filtering"):
        prepare(path, tmp_path / "out")


# ---------------------------------------------------------------------------- regressions the fuzzer found
def test_a_line_with_too_many_fields_is_named(tmp_path: Path) -> None:
    for name, sep in (("clicks.csv", b","), ("clicks.tsv", b"\t")):
        path = tmp_path / name
        path.write_bytes((HEADER + ROWS + b"3,12,1396861000,7\n").replace(b",", sep))
        with pytest.raises(NextclickError, match=re.escape(f"{path}: line 5 has 4 fields, expected 3 like line 1")):
            read_clicks(path)


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + b'1,10,1396860669\n"a,b",1\xff1,1396860700\n')
    with pytest.raises(NextclickError, match=re.escape(f"{path}: line 3, column 'ItemId': ") + ".*not UTF-8"):
        read_clicks(path)
    path = tmp_path / "clicks.txt"
    path.write_bytes(b"1 10\n1 11\n2 1\xc3\n")
    with pytest.raises(NextclickError, match=re.escape(f"{path}: line 3: ") + ".*not UTF-8"):
        read_clicks(path)  # was polars' ComputeError, a traceback


def test_an_unpaired_double_quote_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    for body, line in ((b'1,"10,1396860669\n1,11,1396860700\n', 2), (b'1,10,1396860669\n1,11,"1396860700\n', 3)):
        path.write_bytes(HEADER + body)
        with pytest.raises(NextclickError, match=re.escape(f"{path}: line {line} has an unpaired double quote")):
            read_clicks(path)  # was polars' "could not parse" without a line


def test_a_used_column_named_twice_in_the_header_is_an_error_not_the_first_one(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(b"SessionId,ItemId,Time,ItemId\n1,10,1396860669,20\n1,11,1396860700,21\n")
    with pytest.raises(NextclickError, match="line 1 names the item column 'ItemId' more than once"):
        read_clicks(path)
    path.write_bytes(b"SessionId,ItemId,Time,Extra,Extra\n1,10,1396860669,a,b\n1,11,1396860700,c,d\n")
    assert read_clicks(path).get_column("ItemId").to_list() == [10, 11]  # unused columns may repeat


def test_names_that_do_not_fit_the_file_are_one_line_errors(tmp_path: Path) -> None:
    csv, txt = tmp_path / "clicks.csv", tmp_path / "clicks.txt"
    csv.write_bytes(ROWS)
    txt.write_bytes(ROWS.replace(b",", b" "))
    for path in (csv, txt):
        with pytest.raises(NextclickError, match=re.escape(f"{path}: line 1 has 3 fields but 4 names were given")):
            read_clicks(path, ReadOptions(names=["SessionId", "ItemId", "Time", "Extra"]))  # csv: polars' SchemaError
        with pytest.raises(NextclickError, match=re.escape(f"{path}: --names gives 'ItemId' more than once")):
            read_clicks(path, ReadOptions(names=["SessionId", "ItemId", "ItemId"], time_col=None))  # txt: read Time as items


def test_parts_whose_session_ids_are_integers_in_one_and_text_in_another_read_as_text(tmp_path: Path) -> None:
    parts = tmp_path / "clicks"
    parts.mkdir()
    pq.write_table(pa.table({"SessionId": ["17", "17"], "ItemId": [1, 2], "Time": [1.0, 2.0]}), parts / "part-0.parquet")
    pq.write_table(pa.table({"SessionId": ["a", "a", "17"], "ItemId": [1, 2, 1], "Time": [3.0, 4.0, 5.0]}), parts / "part-1.parquet")
    assert read_clicks(parts).get_column("SessionId").to_list() == ["17", "17", "a", "a", "17"]  # was "columns differ"
    ds = prepare(parts, tmp_path / "out", PrepareOptions(min_item_support=1, split="none"))
    assert sorted(ds.frame("train").get_column("SessionId").to_list()) == ["17", "17", "17", "a", "a"]


def test_parts_with_integer_items_in_one_and_text_items_in_another_say_so(tmp_path: Path) -> None:
    parts = tmp_path / "clicks"
    parts.mkdir()
    pq.write_table(pa.table({"SessionId": [1, 1], "ItemId": ["10", "11"], "Time": [1.0, 2.0]}), parts / "part-0.parquet")
    pq.write_table(pa.table({"SessionId": [2, 2], "ItemId": ["a", "b"], "Time": [3.0, 4.0]}), parts / "part-1.parquet")
    with pytest.raises(NextclickError, match=re.escape(f"{parts / 'part-1.parquet'}: canonical columns differ") + r".*'ItemId'\) are text here but integers"):
        read_clicks(parts)
    assert read_clicks(parts, ReadOptions(item_type="str")).get_column("ItemId").to_list() == ["10", "11", "a", "b"]


def test_an_integer_among_text_ids_names_the_integer(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + b"1,skuA,1396860669\n1,skuB,1396860700\n2,1396861000,1396861000\n")
    with pytest.raises(NextclickError, match=re.escape(f"{path}: line 4, column 'ItemId': '1396861000' is an integer id among text ids")):
        read_clicks(path)


# ---------------------------------------------------------------------------- the command line, once per fault family
CLI_FAULTS = {
    "truncated line": (HEADER + ROWS + b"3,1", "line 5"),
    "too many fields": (HEADER + ROWS + b"3,12,1396861000,9\n", "line 5"),
    "too few fields": (HEADER + b"1,10\n" + ROWS, "line 2"),
    "text among integer ids": (HEADER + ROWS + b"3,abc,1396861000\n", "line 5"),
    "id beyond int64": (HEADER + ROWS + b"3,99999999999999999999,1396861000\n", "line 5"),
    "NaN timestamp": (HEADER + ROWS + b"3,12,NaN\n", "line 5"),
    "milliseconds among seconds": (HEADER + ROWS + b"3,12,1396861000000\n", "line 5"),
    "seconds among milliseconds": (HEADER + ROWS.replace(b"\n", b"000\n") + b"3,12,1396861000\n", "line 5"),
    "not UTF-8": (HEADER + ROWS + b"3,1\xff2,1396861000\n", "line 5"),
    "unpaired quote": (HEADER + ROWS + b'3,"12,1396861000\n', "line 5"),
    "empty file": (b"", "empty"),
    "header only": (HEADER, "no click rows"),
    "column named twice": (b"SessionId,ItemId,ItemId,Time\n1,10,11,1396860669\n", "more than once"),
    "header line again": (HEADER + ROWS + HEADER + ROWS, "line 5"),
    "everything filtered out": (HEADER + ROWS, "no clicks left"),
}


@pytest.mark.parametrize("family", list(CLI_FAULTS))
def test_prepare_command_exits_2_with_one_line(tmp_path: Path, family: str) -> None:
    content, needle = CLI_FAULTS[family]
    path = tmp_path / "clicks.csv"
    path.write_bytes(content)
    p = subprocess.run([sys.executable, "-m", "nextclick", "prepare", str(path), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=REPO_ROOT)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr
    assert needle in p.stderr, p.stderr
    assert str(path) in p.stderr or family == "everything filtered out", p.stderr


def test_seconds_among_milliseconds_are_named_not_moved_to_1970(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + b"1,10,1396860669000\n1,11,1396860700\n2,10,1396861000000\n")
    with pytest.raises(NextclickError, match=re.escape(f"{path}: line 3, column 'Time': timestamp 1396860700 looks like unix seconds")):
        read_clicks(path)
    times = read_clicks(path, ReadOptions(time_format="ms")).get_column("Time").to_list()  # as the user says
    assert times == [1396860669.0, 1396860.7, 1396861000.0]


def test_dates_beyond_2200_are_named_like_unix_times(tmp_path: Path) -> None:
    path = tmp_path / "clicks.csv"
    path.write_bytes(HEADER + b"1,10,2014-04-07T10:51:09Z\n1,11,2500-01-01T00:00:00Z\n")
    with pytest.raises(NextclickError, match=re.escape(f"{path}: line 3, column 'Time': timestamp 2500-01-01T00:00:00Z is outside")):
        read_clicks(path)
    path = tmp_path / "clicks.parquet"
    pq.write_table(pa.table({"SessionId": [1, 1], "ItemId": [10, 11], "Time": pa.array([0, -11_676_096_000_000], pa.timestamp("ms"))}), path)
    with pytest.raises(NextclickError, match=re.escape(f"{path}: row 2, column 'Time': timestamp 1600-01-01 00:00:00 is outside")):
        read_clicks(path)
