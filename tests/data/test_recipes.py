"""Dataset recipes (`prepare --recipe`): each on a small file in its dataset's raw format, with the
exact sessions of every split and every count of the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from nextclick.data.dataset import Dataset
from nextclick.data.recipes import (
    ALIASES,
    RECIPES,
    RecipeArgs,
    get_recipe,
    read_otto,
    read_recbole,
    run_recipe,
)
from nextclick.data.recipes import (
    RETAILROCKET_EVENTS as RETAIL_EVENTS,
)
from nextclick.errors import NextclickError
from tests.conftest import REPO_ROOT

D, H, M = 86_400, 3_600, 60


def sessions(ds: Dataset, role: str) -> dict[Any, list]:
    """Session id -> item ids in time order, of one split file."""
    df = pl.read_parquet(ds.path / f"{role}.parquet")
    g = df.group_by("SessionId", maintain_order=True).agg("ItemId")
    return dict(zip(g["SessionId"].to_list(), g["ItemId"].to_list()))


def times(ds: Dataset, role: str, sid: Any) -> list[float]:
    df = pl.read_parquet(ds.path / f"{role}.parquet")
    return df.filter(pl.col("SessionId") == sid)["Time"].to_list()


def removed(ds: Dataset) -> dict[str, tuple[int, int]]:
    """Step -> (events removed, sessions removed), in the order the steps ran."""
    return {r["step"]: (r["removed_events"], r["removed_sessions"]) for r in ds.meta["report"]}


def details(ds: Dataset, step: str, *keys: str) -> dict[str, Any]:
    d = next(r["details"] for r in ds.meta["report"] if r["step"] == step)
    return {k: d[k] for k in keys}


def stats(ds: Dataset) -> dict[str, tuple[int, int, int]]:
    return {role: (s["events"], s["sessions"], s["items"]) for role, s in ds.meta["stats"].items()}


SPLIT_KEYS = ("straddling_sessions_cut", "tail_events_removed", "short_train_sessions_removed", "test_sessions_before",
              "unseen_item_events_removed", "short_sessions_removed")


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------------------- yoochoose / rsc15
T_RSC = 1_396_310_400  # 2014-04-01T00:00:00Z
RSC_ROWS = [  # session, seconds after T_RSC, item
    (1, 0, 100), (1, 60, 101), (1, 120, 100),
    (2, H, 101), (2, H + 60, 102), (2, H + 120, 102),  # a repeat: kept, as the source keeps it
    (3, 2 * H, 103),  # one click: removed
    (4, D, 100), (4, D + 60, 101), (4, D + 120, 102), (4, D + 180, 999),  # 999: one click, removed
    (5, D + H, 102), (5, D + H + 60, 100), (5, D + H + 120, 101),
    (6, 2 * D, 100), (6, 2 * D + 60, 101), (6, 2 * D + 120, 102),  # straddles the test cut (2D + 60)
    (7, 3 * D, 101), (7, 3 * D + 60, 102),
]


def write_yoochoose(path: Path) -> Path:
    cats = ["0", "S", "2053276155", "1"]
    lines = [f"{s},{iso(T_RSC + t + (0.277 if i == 0 else 0))},{item},{cats[i % 4]}" for i, (s, t, item) in enumerate(RSC_ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_yoochoose_recipe_gru4rec_filters_and_the_leak_free_day_split(tmp_path: Path) -> None:
    ds = run_recipe("rsc15", write_yoochoose(tmp_path / "yoochoose-clicks.dat"), tmp_path / "out")
    assert sessions(ds, "train") == {1: [100, 101, 100], 2: [101, 102, 102], 4: [100, 101, 102], 5: [102, 100, 101]}
    assert sessions(ds, "test") == {7: [101, 102]}
    assert sessions(ds, "train_tr") == {1: [100, 101, 100], 2: [101, 102]}  # session 2's last click is at the cut
    assert sessions(ds, "valid") == {4: [100, 101, 102], 5: [102, 100, 101]}
    assert times(ds, "train", 1) == pytest.approx([T_RSC + 0.277, T_RSC + 60, T_RSC + 120], abs=1e-6)
    assert ds.meta["report"][0]["details"] == {"events": 19, "items": 5, "sessions": 7}
    assert removed(ds) == {"read": (0, 0), "min_support": (2, 1), "time_split": (3, 1), "valid_split": (1, 0)}
    assert details(ds, "min_support", "rounds")["rounds"] == 1
    assert details(ds, "time_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (1, 2, 1, 1, 0, 0)))
    assert details(ds, "valid_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (1, 1, 0, 2, 0, 0)))
    assert stats(ds) == {"train": (12, 4, 3), "test": (2, 1, 2), "train_tr": (5, 2, 3), "valid": (6, 2, 3)}
    assert ds.meta["options"]["split_by"] == "strict" and ds.meta["recipe"]["name"] == "yoochoose"
    assert ds.meta["source"] == str(tmp_path / "yoochoose-clicks.dat")


def test_yoochoose_split_by_end_reproduces_the_source_split(tmp_path: Path) -> None:
    ds = run_recipe("yoochoose", write_yoochoose(tmp_path / "clicks.dat"), tmp_path / "out", {"split_by": "end"})
    assert sessions(ds, "test") == {6: [100, 101, 102], 7: [101, 102]}  # by the last click: session 6 whole
    assert sorted(sessions(ds, "train")) == [1, 2, 4, 5]


def test_yoochoose_bad_timestamp_names_the_line(tmp_path: Path) -> None:
    path = write_yoochoose(tmp_path / "clicks.dat")
    lines = path.read_text().splitlines()
    lines[2] = "1,2014-04-01 noon,100,0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NextclickError, match=r"clicks\.dat: line 3, column 't': cannot parse timestamp '2014-04-01 noon'"):
        run_recipe("yoochoose", path, tmp_path / "out")


# ---------------------------------------------------------------------------- diginetica
T_DIGI = 1_459_468_800  # 2016-04-01 (midnight UTC)
DIGI_ROWS = [  # sessionId, userId, itemId, timeframe (ms), eventdate
    (1, "", 10, 5000, "2016-04-01"), (1, "", 11, 1000, "2016-04-01"), (1, "", 12, 9000, "2016-04-01"),
    (2, "5", 10, 0, "2016-04-02"), (2, "5", 11, 2000, "2016-04-02"), (2, "5", 12, 4000, "2016-04-02"),
    (3, "", 12, 0, "2016-05-03"), (3, "", 10, 100000, "2016-05-03"),
    (4, "", 13, 0, "2016-05-04"),
    (5, "", 10, 0, "2016-05-10"), (5, "", 11, 5000, "2016-05-10"),
    (6, "7", 11, 0, "2016-05-15"), (6, "7", 12, 1000, "2016-05-15"), (6, "7", 10, 2000, "2016-05-15"),
    (7, "", 10, 0, "2016-05-20"), (7, "", 12, 3000, "2016-05-20"),
]


def write_diginetica(path: Path, header: str = "session_id;user_id;item_id;timeframe;eventdate") -> Path:
    rows = [header] + [";".join(map(str, r)) for r in DIGI_ROWS]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("header", ["session_id;user_id;item_id;timeframe;eventdate",
                                    "sessionId;userId;itemId;timeframe;eventdate"])
def test_diginetica_recipe_orders_by_timeframe_and_splits_the_last_week(tmp_path: Path, header: str) -> None:
    ds = run_recipe("diginetica", write_diginetica(tmp_path / "train-item-views.csv", header), tmp_path / "out")
    # item 11 has 4 clicks: removed; session 5 is then one click: removed; session 1 by timeframe: 11, 10, 12
    assert sessions(ds, "train") == {1: [10, 12], 2: [10, 12], 3: [12, 10]}
    assert sessions(ds, "test") == {6: [12, 10], 7: [10, 12]}
    assert sessions(ds, "train_tr") == {1: [10, 12], 2: [10, 12]}
    assert sessions(ds, "valid") == {3: [12, 10]}
    assert times(ds, "train", 1) == [T_DIGI + 5.0, T_DIGI + 9.0]  # eventdate + timeframe
    assert times(ds, "train", 3) == [T_DIGI + 32 * D, T_DIGI + 32 * D + 100.0]
    assert ds.meta["report"][0]["details"] == {"events": 16, "items": 4, "sessions": 7}
    assert removed(ds) == {"read": (0, 0), "min_support": (6, 2), "time_split": (0, 0), "valid_split": (0, 0)}
    assert details(ds, "time_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (0, 0, 0, 2, 0, 0)))
    assert details(ds, "time_split", "days")["days"] == 7.0
    assert details(ds, "valid_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (0, 0, 0, 1, 0, 0)))
    assert stats(ds) == {"train": (6, 3, 2), "test": (4, 2, 2), "train_tr": (4, 2, 2), "valid": (2, 1, 2)}


def test_diginetica_missing_column_and_bad_timeframe(tmp_path: Path) -> None:
    path = tmp_path / "views.csv"
    path.write_text("session_id;user_id;item_id;timeframe\n1;;10;0\n")
    with pytest.raises(NextclickError, match=r"views\.csv: missing column\(s\) \['eventdate'\]"):
        run_recipe("diginetica", path, tmp_path / "out")
    write_diginetica(path)
    path.write_text(path.read_text().replace("2;5;11;2000;", "2;5;11;2s;"))
    with pytest.raises(NextclickError, match=r"views\.csv: line 6, column 'timeframe': '2s' is not a number"):
        run_recipe("diginetica", path, tmp_path / "out")


# ---------------------------------------------------------------------------- retailrocket
T_RR = 1_433_116_800  # 2015-06-01 (UTC)
RR_ROWS = [  # seconds after T_RR, visitor, event, item
    (0, 1, "view", 1), (20 * M, 1, "addtocart", 2), (40 * M, 1, "view", 3),  # the cart event bridges the views
    (71 * M, 1, "view", 1), (72 * M, 1, "view", 2),  # 31 minutes after the last event: a new session
    (0, 2, "view", 2), (M, 2, "view", 3), (2 * M, 2, "transaction", 3), (3 * M, 2, "view", 1),
    (5 * H, 6, "view", 4),
    (D + 12 * H, 7, "view", 1), (D + 12 * H + M, 7, "view", 2),
    (2 * D + 2 * H, 3, "view", 1), (2 * D + 2 * H + 5 * M, 3, "view", 2), (2 * D + 2 * H + 6 * M, 3, "view", 3),
    (3 * D + H, 4, "view", 3), (3 * D + H + M, 4, "view", 1), (3 * D + H + 2 * M, 4, "view", 2),
    (3 * D + 2 * H, 5, "view", 2), (3 * D + 2 * H + M, 5, "view", 3),
]


def write_retailrocket(path: Path) -> Path:
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for t, v, ev, item in sorted(RR_ROWS, key=lambda r: (r[3], -r[0])):  # not in time order, as events.csv
        rows.append(f"{(T_RR + t) * 1000},{v},{ev},{item},{77 if ev == 'transaction' else ''}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_retailrocket_recipe_sessions_over_all_events_then_views_only(tmp_path: Path) -> None:
    ds = run_recipe("retailrocket", write_retailrocket(tmp_path / "events.csv"), tmp_path / "out")
    # sessions are numbered by visitor, then time: visitor 1 has sessions 0 and 1
    assert sessions(ds, "train") == {0: [1, 3], 1: [1, 2], 2: [2, 3, 1], 7: [1, 2]}
    assert sessions(ds, "test") == {4: [3, 1, 2], 5: [2, 3]}  # session 3 straddles the cut: its one early view goes
    assert sessions(ds, "train_tr") == {0: [1, 3], 1: [1, 2], 2: [2, 3, 1]}
    assert sessions(ds, "valid") == {7: [1, 2]}
    assert times(ds, "train", 0) == [T_RR + 0.0, T_RR + 40.0 * M]
    assert ds.meta["report"][0]["details"] == {"events": 18, "items": 4, "sessions": 8, "users": 7}
    assert removed(ds) == {"read": (0, 0), "min_support": (1, 1), "time_split": (3, 1), "valid_split": (0, 0)}
    assert details(ds, "time_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (1, 2, 1, 2, 0, 0)))
    assert details(ds, "valid_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (0, 0, 0, 1, 0, 0)))
    assert stats(ds) == {"train": (9, 4, 3), "test": (5, 2, 3), "train_tr": (7, 3, 3), "valid": (2, 1, 2)}


def test_retailrocket_session_gap_is_a_choice(tmp_path: Path) -> None:
    df = get_recipe("retailrocket").read(write_retailrocket(tmp_path / "events.csv"), RecipeArgs(session_gap=15 * M))
    first = df.filter(pl.col("UserId") == 1).group_by("SessionId", maintain_order=True).agg("ItemId")
    assert first["ItemId"].to_list() == [[1], [3], [1, 2]]  # 20 minutes between events now ends a session


def test_retailrocket_unknown_event_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n1433116800000,1,view,5,\n1433116900000,1,click,5,\n")
    with pytest.raises(NextclickError, match=r"events\.csv: line 3, column 'event': 'click' is not one of view"):
        run_recipe("retailrocket", path, tmp_path / "out")


# ---------------------------------------------------------------------------- otto
T_OTTO = 1_659_304_800  # seconds; the raw file holds milliseconds
OTTO_SESSIONS = [  # session, [(seconds after T_OTTO, aid, type)]
    (11, [(0, 1, "clicks"), (M, 2, "clicks"), (2 * M, 2, "carts"), (3 * M, 2, "clicks")]),
    (12, [(D, 2, "clicks"), (D + M, 3, "clicks"), (D + 2 * M, 3, "orders"), (D + 3 * M, 1, "clicks")]),
    (13, [(10 * D, 1, "clicks"), (10 * D + M, 3, "clicks")]),
    (14, [(20 * D, 3, "clicks"), (20 * D + M, 4, "clicks"), (20 * D + 2 * M, 1, "clicks")]),  # 4: never in train
    (15, [(5 * D, 5, "clicks"), (5 * D + M, 1, "carts")]),  # one click
    (16, [(13 * D, 2, "clicks"), (13 * D + 5 * M, 3, "clicks")]),  # straddles the test cut (13D + 2M)
    (17, []),
]


def write_otto(path: Path, unit: int = 1000) -> Path:
    lines = [json.dumps({"session": s, "events": [{"aid": a, "ts": (T_OTTO + t) * unit, "type": k} for t, a, k in ev]})
             for s, ev in OTTO_SESSIONS]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_otto_recipe_clicks_and_the_source_test_week(tmp_path: Path) -> None:
    ds = run_recipe("otto", write_otto(tmp_path / "train.jsonl"), tmp_path / "out")
    assert sessions(ds, "train") == {11: [1, 2, 2], 12: [2, 3, 1], 13: [1, 3]}  # carts and orders gone, repeats kept
    assert sessions(ds, "test") == {14: [3, 1]}
    assert sessions(ds, "train_tr") == {11: [1, 2, 2], 12: [2, 3, 1]}
    assert sessions(ds, "valid") == {13: [1, 3]}
    assert times(ds, "train", 11) == [T_OTTO + 0.0, T_OTTO + 60.0, T_OTTO + 180.0]
    assert ds.meta["report"][0]["details"] == {"events": 14, "items": 5, "sessions": 6}
    assert removed(ds) == {"read": (0, 0), "min_support": (1, 1), "time_split": (3, 1), "valid_split": (0, 0)}
    assert details(ds, "time_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (1, 1, 1, 1, 1, 0)))
    assert details(ds, "valid_split", *SPLIT_KEYS) == dict(zip(SPLIT_KEYS, (0, 0, 0, 1, 0, 0)))
    assert stats(ds) == {"train": (8, 3, 3), "test": (2, 1, 2), "train_tr": (6, 2, 3), "valid": (2, 1, 2)}
    assert ds.meta["recipe"]["args"]["event_type"] == "clicks"


def test_otto_event_types_and_seconds(tmp_path: Path) -> None:
    ms = write_otto(tmp_path / "ms.jsonl")
    carts = read_otto(ms, RecipeArgs(event_type="carts"))
    assert carts.rows() == [(11, 2, T_OTTO + 120.0), (15, 1, T_OTTO + 5 * D + 60.0)]
    assert read_otto(ms, RecipeArgs(event_type="all")).height == 17
    seconds = read_otto(write_otto(tmp_path / "s.jsonl", unit=1), RecipeArgs())
    assert seconds.equals(read_otto(ms, RecipeArgs()))


@pytest.mark.parametrize(("line", "message"), [
    ('{"session": 2, "events": [{"aid": "x", "ts": 1659304800000, "type": "clicks"}]}', "line 2 is not an OTTO session"),
    ('{"session": 2, "events": [{"aid": 3, "ts": 1659304800000, "type": "clicks"}', "line 2 is not an OTTO session"),
    ('{"session": 2, "events": [{"ts": 1659304800000, "type": "clicks"}]}', "line 2: an event without a valid 'aid'"),
    ('{"session": 2, "events": [{"aid": 3, "ts": 1659304800000, "type": "views"}]}', "line 2: an event without a valid 'type'"),
    ('{"session": 2, "events": [{"aid": 3, "ts": 1659304800000000, "type": "clicks"}]}', "line 2, column 'ts': timestamp"),
])
def test_otto_bad_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "t.jsonl"
    first = '{"session": 1, "events": [{"aid": 3, "ts": 1659304800000, "type": "clicks"}, {"aid": 4, "ts": 1659304800001, "type": "clicks"}]}'
    path.write_text(first + "\n" + line + "\n")
    with pytest.raises(NextclickError, match="t.jsonl: " + message.replace("(", r"\(")) as e:
        read_otto(path, RecipeArgs())
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------- amazon (SASRec files)
def test_amazon_recipe_sasrec_leave_one_out(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt"
    path.write_text("1 5\n1 6\n1 5\n1  7\n2 6\n2\t5\n3 7\n3 7\n3 6\n4 8\n")  # blanks and tabs
    ds = run_recipe("amazon", path, tmp_path / "out")
    assert sessions(ds, "train") == {1: [5, 6], 2: [6, 5], 3: [7], 4: [8]}
    assert sessions(ds, "valid") == {1: [5, 6, 5], 3: [7, 7]}
    assert sessions(ds, "test") == {1: [5, 6, 5, 7], 3: [7, 7, 6]}  # a repeat kept
    assert times(ds, "test", 3) == [6.0, 7.0, 8.0]  # line order
    assert ds.meta["report"][0]["details"] == {"events": 10, "items": 4, "users": 4}
    assert removed(ds) == {"read": (0, 0), "user_sequences": (0, 0), "leave_one_out": (0, 0)}
    assert details(ds, "leave_one_out", "sequences_evaluated", "short_sequences_train_only") == {
        "sequences_evaluated": 2, "short_sequences_train_only": 2}
    assert stats(ds) == {"train": (6, 4, 4), "valid": (5, 2, 3), "test": (7, 2, 3)}
    assert ds.meta["vocab"]["ids"] == [5, 6, 7, 8]
    path.write_text("1 5\n1 6 7\n")
    with pytest.raises(NextclickError, match=r"Beauty\.txt: line 2 has 3 fields; expected SASRec"):
        run_recipe("sasrec", path, tmp_path / "out2")


# ---------------------------------------------------------------------------- movielens
ML_ROWS = [  # user, movie, timestamp
    (1, 10, 100), (1, 11, 101), (1, 12, 102), (1, 13, 103), (1, 14, 104),
    (2, 11, 200), (2, 10, 200), (2, 12, 201), (2, 13, 202), (2, 14, 203),  # a tie: file order
    (3, 10, 300), (3, 11, 301), (3, 12, 302), (3, 13, 303), (3, 14, 304), (3, 15, 305),
    (4, 15, 400), (4, 10, 401), (4, 11, 402),  # 3 ratings: removed
    (5, 14, 504), (5, 13, 503), (5, 12, 502), (5, 11, 501), (5, 10, 500),  # not in time order
    (6, 10, 600), (6, 11, 601), (6, 12, 602), (6, 13, 603), (6, 14, 604), (6, 16, 605),
    (7, 10, 700), (7, 11, 701), (7, 12, 702), (7, 16, 703), (7, 15, 704),  # 3 left after 15, 16 go: removed
]


def test_movielens_recipe_ml1m_filters_and_leave_one_out(tmp_path: Path) -> None:
    path = tmp_path / "ratings.dat"
    path.write_text("".join(f"{u}::{m}::{1 + (u + m) % 5}::{t}\n" for u, m, t in ML_ROWS))
    ds = run_recipe("movielens", path, tmp_path / "out")
    full = [10, 11, 12, 13, 14]
    assert sessions(ds, "test") == {1: full, 2: [11, 10, 12, 13, 14], 3: full, 5: full, 6: full}
    assert sessions(ds, "valid") == {u: s[:-1] for u, s in sessions(ds, "test").items()}
    assert sessions(ds, "train") == {u: s[:-2] for u, s in sessions(ds, "test").items()}
    assert times(ds, "test", 5) == [500.0, 501.0, 502.0, 503.0, 504.0]
    assert ds.meta["report"][0]["details"] == {"events": 35, "items": 7, "users": 7}
    assert removed(ds) == {"read": (0, 0), "user_sequences": (0, 0), "min_support": (10, 2), "leave_one_out": (0, 0)}
    assert details(ds, "leave_one_out", "sequences_evaluated", "short_sequences_train_only") == {
        "sequences_evaluated": 5, "short_sequences_train_only": 0}
    assert stats(ds) == {"train": (15, 5, 3), "valid": (20, 5, 4), "test": (25, 5, 5)}


def test_movielens_csv_and_u_data_formats(tmp_path: Path) -> None:
    recipe = get_recipe("movielens")
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,296,5.0,1147880044\n1,306,3.5,1147868817\n")
    udata = tmp_path / "u.data"
    udata.write_text("1\t296\t5\t1147880044\n1\t306\t3\t1147868817\n")
    for path in (csv, udata):
        assert recipe.read(path, RecipeArgs()).rows() == [(1, 296, 1147880044.0), (1, 306, 1147868817.0)]
    bad = tmp_path / "ratings.dat"
    bad.write_text("1::296::5::1147880044\n1::306::3\n")
    with pytest.raises(NextclickError, match=r"ratings\.dat: line 2, column 't': empty timestamp"):
        recipe.read(bad, RecipeArgs())


# ---------------------------------------------------------------------------- recbole
def test_recbole_recipe_user_file_with_text_items(tmp_path: Path) -> None:
    path = tmp_path / "beauty.inter"
    rows = [("a", "i1", 3), ("a", "i2", 1), ("a", "i3", 2), ("b", "i1", 5), ("b", "i1", 6), ("b", "i2", 7), ("c", "i3", 1)]
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    + "".join(f"{u}\t{i}\t4.0\t{t}\n" for u, i, t in rows))
    ds = run_recipe("recbole", path, tmp_path / "out")
    assert sessions(ds, "test") == {"a": ["i2", "i3", "i1"], "b": ["i1", "i1", "i2"]}
    assert sessions(ds, "valid") == {"a": ["i2", "i3"], "b": ["i1", "i1"]}
    assert sessions(ds, "train") == {"a": ["i2"], "b": ["i1"], "c": ["i3"]}
    assert ds.meta["report"][0]["details"] == {"events": 7, "items": 3, "users": 3}
    assert removed(ds) == {"read": (0, 0), "user_sequences": (0, 0), "leave_one_out": (0, 0)}
    assert stats(ds) == {"train": (3, 3, 3), "valid": (4, 2, 3), "test": (6, 2, 3)}


def test_recbole_session_file_and_bad_header(tmp_path: Path) -> None:
    path = tmp_path / "diginetica.inter"
    path.write_text("session_id:token\titem_id:token\ttimestamp:float\n1\t10\t1464.5\n1\t11\t1465\n2\t10\t1470\n")
    df = read_recbole(path, RecipeArgs())
    assert df.rows() == [(1, 10, 1464.5), (1, 11, 1465.0), (2, 10, 1470.0)]
    opts = get_recipe("recbole").options_for(df)
    assert (opts.split, opts.drop_repeats, opts.min_item_support, opts.split_by) == ("time", True, 5, "strict")
    path.write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(NextclickError, match=r"diginetica\.inter: line 1: header field 'user_id' has no type"):
        read_recbole(path, RecipeArgs())


# ---------------------------------------------------------------------------- the sources' scripts, transcribed
def _one_round_then_split_by_end(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The filters and split that GRU4Rec's rsc15 script and session-rec's retailrocket script share
    (session-rec's filter_data and split_data_org), in pandas: sessions of one click out, items of
    fewer than 5 clicks out, sessions shorter than 2 out; test = the sessions whose last click is
    within a day of the log's last click, less clicks on items train lacks, less sessions left with
    one click; train_tr / valid the same way from train."""
    def keep(d: pd.DataFrame, key: str, least: int) -> pd.DataFrame:
        return d[d.groupby(key)[key].transform("size") >= least]

    data = keep(keep(keep(data, "SessionId", 2), "ItemId", 5), "SessionId", 2)

    def split(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        late = d.groupby("SessionId").Time.transform("max") >= d.Time.max() - 86_400
        train, test = d[~late], d[late]
        test = test[test.ItemId.isin(set(train.ItemId))]
        return train, keep(test, "SessionId", 2)

    train, test = split(data)
    train_tr, valid = split(train)
    return {"train": train, "test": test, "train_tr": train_tr, "valid": valid}


def _assert_same_splits(ds: Dataset, want: dict[str, pd.DataFrame]) -> None:
    for role, frame in want.items():
        got = pl.read_parquet(ds.path / f"{role}.parquet").select("SessionId", "ItemId", "Time")
        ref = pl.from_pandas(frame[["SessionId", "ItemId", "Time"]].reset_index(drop=True))
        got, ref = got.sort("SessionId", "Time"), ref.sort("SessionId", "Time").cast(got.schema)
        assert got.height > 0 and got.drop("Time").equals(ref.drop("Time")), role
        # polars' Series division by 1000 may differ from numpy's in the last bit
        assert np.allclose(got["Time"].to_numpy(), ref["Time"].to_numpy(), rtol=0, atol=1e-6), role


def test_yoochoose_with_split_by_end_reproduces_gru4rec_script_from_the_raw_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n, n_sess = 3000, 700
    sess = np.sort(rng.integers(0, n_sess, n))
    ms = (T_RSC * 1000 + rng.integers(0, 4 * D * 1000, n_sess)[sess] + rng.integers(0, 1800_000, n)).astype(np.int64)
    items = 214_500_000 + rng.zipf(1.3, n) % 300
    stamps = pd.to_datetime(ms, unit="ms").strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    raw = tmp_path / "yoochoose-clicks.dat"
    raw.write_text("".join(f"{s},{t},{i},0\n" for s, t, i in zip(sess, stamps, items)))
    ds = run_recipe("yoochoose", raw, tmp_path / "out", {"split_by": "end"})
    clicks = pd.DataFrame({"SessionId": sess, "ItemId": items, "Time": ms / 1000.0})
    _assert_same_splits(ds, _one_round_then_split_by_end(clicks.sort_values(["SessionId", "Time"], kind="stable")))


def test_retailrocket_with_split_by_end_reproduces_session_rec_from_the_raw_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    n, n_users = 2500, 300
    user = rng.integers(1, n_users + 1, n)
    # whole seconds (session-rec truncates to seconds), distinct within a visitor (its sort is not stable)
    sec = T_RR + rng.permutation(5 * D)[:n]
    event = rng.choice(np.array(RETAIL_EVENTS), n, p=[0.8, 0.15, 0.05])
    item = rng.zipf(1.3, n) % 200
    raw = tmp_path / "events.csv"
    raw.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                   + "".join(f"{t * 1000},{u},{e},{i},\n" for t, u, e, i in zip(sec, user, event, item)))
    ds = run_recipe("retailrocket", raw, tmp_path / "out", {"split_by": "end"})
    # session-rec's load_data: sessions per visitor over every event (30 minutes), then views only
    d = pd.DataFrame({"Time": sec, "UserId": user, "Type": event, "ItemId": item}).sort_values(["UserId", "Time"])
    new = (d.UserId.diff() != 0) | (d.Time.diff() > 1800)
    d["SessionId"] = np.cumsum(new.to_numpy()) - 1
    views = d[d.Type == "view"].astype({"Time": float})
    _assert_same_splits(ds, _one_round_then_split_by_end(views))


# ---------------------------------------------------------------------------- registry and command line
def test_every_recipe_keeps_the_leak_free_split_and_names_its_source() -> None:
    from nextclick.cli.data import RECIPE_NAMES

    assert tuple(ALIASES) == RECIPE_NAMES
    for r in RECIPES.values():
        assert r.options.split_by == "strict" and ("github.com" in r.source or "recbole.io" in r.source)
        assert r.describe().startswith(r.name) and len(r.steps) >= 2
    with pytest.raises(NextclickError, match="unknown recipe"):
        get_recipe("netflix")


def test_cli_prepare_with_a_recipe(tmp_path: Path) -> None:
    raw = write_yoochoose(tmp_path / "yoochoose-clicks.dat")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nextclick", "prepare", str(raw), "--out", str(tmp_path / "out"),
                               "--recipe", "rsc15", *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env)

    p = cli("--split-by", "end", "--valid-days", "0.5")
    assert p.returncode == 0, p.stderr
    assert "recipe yoochoose: GRU4Rec's rsc15 preprocessing" in p.stdout and "test" in p.stdout
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["options"]["split_by"] == "end" and meta["options"]["valid_days"] == 0.5
    assert meta["options"]["drop_repeats"] is False and meta["options"]["support_rounds"] == 1  # the recipe's
    assert meta["stats"]["test"] == {"events": 5, "sessions": 2, "items": 3}
    listing = subprocess.run([sys.executable, "-m", "nextclick", "recipes"], capture_output=True, text=True, cwd=REPO_ROOT,
                             env=env).stdout
    assert [line.split()[0] for line in listing.splitlines() if line and not line.startswith(" ")] == list(RECIPES)
    assert "<yoochoose|rsc15|diginetica|retailrocket|otto|amazon|sasrec|movielens|rec" in cli("--help").stdout
    for args, needle in ((("--session-col", "x"), "--session-col does not apply with --recipe rsc15"),
                         (("--event-type", "carts"), "--event-type applies to --recipe otto only")):
        p = cli(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.startswith(f"error: {needle}") and p.stderr.strip().count("\n") == 0
