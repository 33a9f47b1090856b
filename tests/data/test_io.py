"""Click-log ingestion: formats, timestamp kinds, column names, and errors that name file, line, column."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from nextclick.data.io import ReadOptions, read_clicks
from nextclick.errors import NextclickError

CLICKS = [(1, 214536502, 1396860669), (1, 214536506, 1396860886), (2, 214577561, 1396845000)]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def delimited(sep: str, header: tuple[str, ...] = ("SessionId", "ItemId", "Time"), rows=CLICKS) -> str:
    return sep.join(header) + "\n" + "".join(sep.join(map(str, r)) + "\n" for r in rows)


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def assert_canonical(df: pl.DataFrame, rows=CLICKS) -> None:
    assert df.columns == ["SessionId", "ItemId", "Time"]
    assert df.schema["Time"] == pl.Float64
    assert df.rows() == [(s, i, float(t)) for s, i, t in rows]


# ---------------------------------------------------------------------------- formats
def test_csv(tmp_path: Path) -> None:
    assert_canonical(read_clicks(write(tmp_path / "clicks.csv", delimited(","))))


def test_tsv(tmp_path: Path) -> None:
    assert_canonical(read_clicks(write(tmp_path / "clicks.tsv", delimited("\t"))))


@pytest.mark.parametrize("sep", [";", "|", "\t"])
def test_delimiter_is_sniffed_from_the_first_line(tmp_path: Path, sep: str) -> None:
    assert_canonical(read_clicks(write(tmp_path / "clicks.csv", delimited(sep))))


def test_explicit_separator_wins_over_the_sniffed_one(tmp_path: Path) -> None:
    # a header with more commas than semicolons, in a semicolon file: only --sep reads it right
    text = "SessionId;ItemId;Time;note,a,b,c\n" + "".join(f"{s};{i};{t};x\n" for s, i, t in CLICKS)
    path = write(tmp_path / "clicks.csv", text)
    with pytest.raises(NextclickError):
        read_clicks(path)
    assert_canonical(read_clicks(path, ReadOptions(sep=";")))


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "clicks.parquet"
    pl.DataFrame(CLICKS, schema=["SessionId", "ItemId", "Time"], orient="row").write_parquet(path)
    assert_canonical(read_clicks(path))


def test_parquet_datetime_column_becomes_unix_seconds(tmp_path: Path) -> None:
    path = tmp_path / "clicks.parquet"
    times = [datetime(2014, 4, 7, 10, 51, 9), datetime(2014, 4, 7, 10, 51, 10, 500_000)]
    pl.DataFrame({"SessionId": [1, 1], "ItemId": [5, 6], "Time": times}).write_parquet(path)
    df = read_clicks(path)
    assert df.get_column("Time").to_list() == pytest.approx([utc(2014, 4, 7, 10, 51, 9), utc(2014, 4, 7, 10, 51, 9) + 1.5])


def test_explicit_format_overrides_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.log", delimited("\t"))
    with pytest.raises(NextclickError, match="clicks.log"):
        read_clicks(path)  # cannot tell the format from the name: the error names the file
    assert_canonical(read_clicks(path, ReadOptions(format="tsv")))


def test_whitespace_user_item_without_time_uses_line_order(tmp_path: Path) -> None:
    path = write(tmp_path / "sequences.txt", "1 6393\n1 13504\n2 7\n1 14087\n")
    df = read_clicks(path)
    assert set(df.columns) == {"UserId", "ItemId", "Time"}
    assert df.get_column("UserId").to_list() == [1, 1, 2, 1]
    assert df.get_column("ItemId").to_list() == [6393, 13504, 7, 14087]
    assert df.get_column("Time").to_list() == [0.0, 1.0, 2.0, 3.0]  # line order is time order


def test_whitespace_line_with_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "seq.txt", "1 5\n1 6\n2\n")
    with pytest.raises(NextclickError, match=r"seq.txt.*line 3"):
        read_clicks(path)


def test_whitespace_with_time_column(tmp_path: Path) -> None:
    df = read_clicks(write(tmp_path / "seq.txt", "1 5 1396860669\n1 6 1396860670\n"))
    assert df.get_column("Time").to_list() == [1396860669.0, 1396860670.0]


def test_whitespace_tolerates_runs_of_blanks_tabs_and_trailing_space(tmp_path: Path) -> None:
    """`user item` lines separated by any whitespace, as the format's name says: double spaces,
    tabs and a trailing blank are read, not reported as a polars SchemaError."""
    path = write(tmp_path / "seq.txt", "1  6393\n1\t13504\n2 7 \n")
    df = read_clicks(path)
    assert df.get_column("UserId").to_list() == [1, 1, 2]
    assert df.get_column("ItemId").to_list() == [6393, 13504, 7]


def test_no_time_column_keeps_line_order(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId\n7,30\n7,10\n7,20\n")
    df = read_clicks(path, ReadOptions(time_col=None))
    assert df.get_column("ItemId").to_list() == [30, 10, 20]
    assert df.get_column("Time").to_list() == [0.0, 1.0, 2.0]


# ---------------------------------------------------------------------------- timestamps
def test_unix_seconds(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,10,1396860669\n1,11,1396860669.25\n")
    assert read_clicks(path).get_column("Time").to_list() == [1396860669.0, 1396860669.25]


def test_unix_milliseconds_auto_detected(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,10,1396860669000\n1,11,1396860670500\n")
    assert read_clicks(path).get_column("Time").to_list() == [1396860669.0, 1396860670.5]


def test_unix_milliseconds_explicit(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,10,1000\n1,11,2500\n")
    assert read_clicks(path, ReadOptions(time_format="ms")).get_column("Time").to_list() == [1.0, 2.5]
    assert read_clicks(path, ReadOptions(time_format="s")).get_column("Time").to_list() == [1000.0, 2500.0]


def test_iso8601_variants(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "SessionId,ItemId,Time\n1,10,2014-04-07T10:51:09Z\n1,11,2014-04-07T10:51:10.500Z\n2,12,2014-04-07T12:51:09+02:00\n",
    )
    t = read_clicks(path).get_column("Time").to_list()
    base = utc(2014, 4, 7, 10, 51, 9)
    assert t == pytest.approx([base, base + 1.5, base], abs=1e-3)


def test_iso8601_naive_is_utc(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,10,2014-04-07T10:51:09\n1,11,2014-04-07T10:52:09\n")
    base = utc(2014, 4, 7, 10, 51, 9)
    assert read_clicks(path, ReadOptions(time_format="iso")).get_column("Time").to_list() == [base, base + 60]


# ---------------------------------------------------------------------------- column names
def test_configurable_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", delimited("\t", header=("visit", "product", "ts")))
    df = read_clicks(path, ReadOptions(session_col="visit", item_col="product", time_col="ts"))
    assert_canonical(df)


def test_headerless_file_with_given_names(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "".join(",".join(map(str, r)) + "\n" for r in CLICKS))
    df = read_clicks(path, ReadOptions(names=["sess", "item", "ts"], session_col="sess", item_col="item", time_col="ts"))
    assert_canonical(df)


def test_user_column_without_session_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "user,item,ts\n7,10,5\n7,11,9\n8,10,1\n")
    df = read_clicks(path, ReadOptions(user_col="user", item_col="item", time_col="ts"))
    assert "SessionId" not in df.columns  # sessions are built later by sessionize
    assert df.get_column("UserId").to_list() == [7, 7, 8]
    assert df.get_column("ItemId").to_list() == [10, 11, 10]


def test_string_item_ids_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,sku-a,1\n1,sku-b,2\n")
    assert read_clicks(path).get_column("ItemId").to_list() == ["sku-a", "sku-b"]


def test_item_type_str_keeps_numeric_looking_ids_verbatim(tmp_path: Path) -> None:
    """BUG: with item_type="str" a column that polars infers as integers is still cast to Int64,
    so "007" and "7" collapse into one item and ids come back as ints."""
    path = write(tmp_path / "d.csv", "SessionId,ItemId,Time\n1,007,1\n1,7,2\n1,10,3\n")
    assert read_clicks(path, ReadOptions(item_type="str")).get_column("ItemId").to_list() == ["007", "7", "10"]


# ---------------------------------------------------------------------------- errors
def error_of(path: Path, opts: ReadOptions | None = None) -> str:
    with pytest.raises(NextclickError) as exc:
        read_clicks(path, opts)
    return str(exc.value)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "clicks.csv", delimited(",", header=("SessionId", "Item", "Time"))))
    assert "clicks.csv" in msg and "'ItemId'" in msg
    assert "Item" in msg  # lists the columns the file has


def test_missing_configured_time_column(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "clicks.csv", delimited(",")), ReadOptions(time_col="ts"))
    assert "clicks.csv" in msg and "'ts'" in msg


def test_unparsable_timestamp_names_file_line_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "clicks.csv",
        "SessionId,ItemId,Time\n1,10,2014-04-07T10:51:09Z\n1,11,2014-04-07T10:51:10Z\n2,12,yesterday\n",
    )
    msg = error_of(path)
    assert "clicks.csv" in msg and "line 4" in msg and "'Time'" in msg and "yesterday" in msg


def test_unparsable_numeric_timestamp_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", "SessionId,ItemId,Time\n1,10,100\n1,11,abc\n")
    msg = error_of(path, ReadOptions(time_format="s"))
    assert "clicks.csv" in msg and "line 3" in msg and "'Time'" in msg and "abc" in msg


def test_unparsable_timestamp_deep_in_a_unix_seconds_file_names_the_right_line(tmp_path: Path) -> None:
    """Past polars' 10,000-row schema inference the column is re-read as text; one bad value must
    not send the whole column to the ISO parser and blame line 2 (a valid unix timestamp)."""
    rows = "".join(f"{i // 3},{i % 50},{1396860669 + i}\n" for i in range(10_050))
    path = write(tmp_path / "big.csv", "SessionId,ItemId,Time\n" + rows + "5000,1,abc\n")
    msg = error_of(path)
    assert "big.csv" in msg and "line 10052" in msg and "'Time'" in msg and "abc" in msg


def test_non_numeric_id_with_int_type(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.tsv", "SessionId\tItemId\tTime\n1\t10\t1\n1\tx7\t2\n")
    msg = error_of(path, ReadOptions(item_type="int"))
    assert "clicks.tsv" in msg and "line 3" in msg and "'ItemId'" in msg and "x7" in msg


def test_non_numeric_id_deep_in_file(tmp_path: Path) -> None:
    rows = "".join(f"{i // 3},{i % 50},{1396860669 + i}\n" for i in range(10_050))
    path = write(tmp_path / "big.csv", "SessionId,ItemId,Time\n" + rows + "5000,x1,1396870669\n")
    msg = error_of(path, ReadOptions(item_type="int"))
    assert "big.csv" in msg and "line 10052" in msg and "'ItemId'" in msg


def test_non_integer_number_as_int_id(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "c.csv", "SessionId,ItemId,Time\n1,10.5,1\n"), ReadOptions(item_type="int"))
    assert "c.csv" in msg and "line 2" in msg and "'ItemId'" in msg


def test_empty_id(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "clicks.csv", "SessionId,ItemId,Time\n1,10,1\n1,,2\n"))
    assert "clicks.csv" in msg and "line 3" in msg and "'ItemId'" in msg and "empty" in msg


def test_empty_session_id(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "clicks.tsv", "SessionId\tItemId\tTime\n1\t10\t1\n\t11\t2\n"))
    assert "clicks.tsv" in msg and "line 3" in msg and "'SessionId'" in msg


def test_empty_id_in_parquet_names_row(tmp_path: Path) -> None:
    path = tmp_path / "clicks.parquet"
    pl.DataFrame({"SessionId": [1, 1, 1], "ItemId": [10, 11, None], "Time": [1.0, 2.0, 3.0]}).write_parquet(path)
    msg = error_of(path)
    assert "clicks.parquet" in msg and "row 3" in msg and "'ItemId'" in msg


def test_empty_timestamp(tmp_path: Path) -> None:
    msg = error_of(write(tmp_path / "clicks.csv", "SessionId,ItemId,Time\n1,10,1\n1,11,\n"))
    assert "clicks.csv" in msg and "line 3" in msg and "'Time'" in msg


@pytest.mark.parametrize(
    ("name", "text"),
    [("empty.csv", ""), ("header_only.csv", "SessionId,ItemId,Time\n"), ("empty.tsv", ""), ("empty.txt", "")],
)
def test_empty_file(tmp_path: Path, name: str, text: str) -> None:
    msg = error_of(write(tmp_path / name, text))
    assert name in msg and ("empty" in msg or "no click rows" in msg)


def test_empty_parquet(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pl.DataFrame(schema={"SessionId": pl.Int64, "ItemId": pl.Int64, "Time": pl.Float64}).write_parquet(path)
    assert "empty.parquet" in error_of(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "nope.csv" in error_of(tmp_path / "nope.csv")
    assert "directory" in error_of(tmp_path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    assert "bad.parquet" in error_of(write(tmp_path / "bad.parquet", "not parquet at all"))


# ---------------------------------------------------------------------------- real data
def test_reads_rsc15_tsv(shared_data: Path) -> None:
    df = read_clicks(shared_data / "rsc15-100k" / "train_full.tsv")
    assert df.columns == ["SessionId", "ItemId", "Time"]
    assert (df.height, df.get_column("SessionId").n_unique(), df.get_column("ItemId").n_unique()) == (70_278, 17_794, 2_933)
    assert df.schema["ItemId"] == pl.Int64 and df.get_column("Time").min() > 1.39e9  # unix seconds


def test_reads_amazon_games_user_item_lines(shared_data: Path) -> None:
    df = read_clicks(shared_data / "amazon-games" / "sequences.txt")
    assert (df.height, df.get_column("UserId").n_unique(), df.get_column("ItemId").n_unique()) == (287_107, 31_013, 23_715)
    assert df.get_column("Time").to_list()[:3] == [0.0, 1.0, 2.0]  # line order


# ---------------------------------------------------------------- one id policy, checked times
def _log(tmp_path: Path, items: list[str], times: list[str] | None = None, name: str = "log.csv") -> Path:
    times = times or [str(1_400_000_000 + 60 * i) for i in range(len(items))]
    p = tmp_path / name
    p.write_text("SessionId,ItemId,Time\n" + "".join(f"{i // 3},{it},{t}\n" for i, (it, t) in enumerate(zip(items, times))))
    return p


def test_one_text_id_among_integers_is_an_error_not_a_catalogue_of_strings(tmp_path: Path) -> None:
    p = _log(tmp_path, ["10", "11", "abc", "12"])
    with pytest.raises(NextclickError, match=r"line 4, column 'ItemId': 'abc' is not an integer id.*--item-ids str"):
        read_clicks(p)
    df = read_clicks(p, ReadOptions(item_type="str"))
    assert df.get_column("ItemId").to_list() == ["10", "11", "abc", "12"]
    only_text = read_clicks(_log(tmp_path, ["sku-1", "sku-2", "sku-1"], name="t.csv"))
    assert only_text.get_column("ItemId").dtype == pl.String  # a catalogue of text ids stays text


def test_ids_with_leading_zeros_never_merge_silently(tmp_path: Path) -> None:
    p = _log(tmp_path, ["7", "007", "0007"])
    with pytest.raises(NextclickError, match=r"line 3, column 'ItemId': id .007. is written with leading zeros"):
        read_clicks(p)
    assert read_clicks(p, ReadOptions(item_type="str")).get_column("ItemId").n_unique() == 3


def test_ids_beyond_int64_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(NextclickError, match=r"line 3, column 'ItemId': id 9223372036854775808 is beyond int64"):
        read_clicks(_log(tmp_path, ["1", "9223372036854775808"]))
    with pytest.raises(NextclickError, match="beyond int64"):
        read_clicks(_log(tmp_path, ["1", str(2**130)], name="huge.csv"))
    pq = tmp_path / "u64.parquet"
    pl.DataFrame({"SessionId": [1, 1], "ItemId": pl.Series([5, 2**64 - 1], dtype=pl.UInt64), "Time": [1.0, 2.0]}).write_parquet(pq)
    with pytest.raises(NextclickError, match=r"u64.parquet: row 2, column 'ItemId': id 18446744073709551615 is beyond int64"):
        read_clicks(pq)
    ok = tmp_path / "u64ok.parquet"
    pl.DataFrame({"SessionId": [1, 1], "ItemId": pl.Series([5, 6], dtype=pl.UInt64), "Time": [1.0, 2.0]}).write_parquet(ok)
    assert read_clicks(ok).get_column("ItemId").dtype == pl.Int64


@pytest.mark.parametrize("bad,needle", [("nan", "not a finite number"), ("inf", "not a finite number"),
                                        ("1500000000000", "out of range for unix seconds")])
def test_non_finite_and_out_of_range_times_name_the_row(tmp_path: Path, bad: str, needle: str) -> None:
    times = [str(1_400_000_000 + 60 * i) for i in range(9)]
    times[4] = bad
    with pytest.raises(NextclickError, match=rf"line 6, column 'Time': .*{needle}"):
        read_clicks(_log(tmp_path, [str(10 + i) for i in range(9)], times))


def test_two_percent_of_rows_in_milliseconds_is_an_error(tmp_path: Path) -> None:
    n = 100
    times = [str(1_400_000_000 + 60 * i) for i in range(n)]
    times[50] = str(int(times[50]) * 1000)
    times[77] = str(int(times[77]) * 1000)
    with pytest.raises(NextclickError, match=r"line 52, column 'Time'.*out of range"):
        read_clicks(_log(tmp_path, [str(10 + i % 7) for i in range(n)], times))
