"""Preprocessing steps (each reports what it removed), both splits, and the prepared dataset directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from nextclick.data.dataset import Dataset, load_sessions
from nextclick.data.io import ReadOptions
from nextclick.data.preprocess import (
    DAY,
    PrepareOptions,
    drop_repeats,
    leave_one_out,
    min_support,
    prepare,
    sessionize,
    time_split,
)
from nextclick.errors import NextclickError

MIN = 60.0


def clicks(rows: list[tuple], cols: tuple[str, ...] = ("SessionId", "ItemId", "Time")) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=list(cols), orient="row").with_columns(pl.col("Time").cast(pl.Float64))


def from_sessions(
    sessions: list[list], start: float = 0.0, step: float = 10.0, starts: list[float] | None = None
) -> pl.DataFrame:
    rows = []
    for s, items in enumerate(sessions):
        t0 = starts[s] if starts is not None else start + s * 1000.0
        rows += [(s, it, t0 + j * step) for j, it in enumerate(items)]
    return clicks(rows)


def session_lists(df: pl.DataFrame) -> list[list]:
    g = df.sort(["SessionId", "Time"], maintain_order=True).group_by("SessionId", maintain_order=True).agg("ItemId")
    return g.get_column("ItemId").to_list()


# ---------------------------------------------------------------------------- sessionize
def test_sessionize_splits_each_user_at_gaps_longer_than_30_minutes() -> None:
    df = clicks(
        [
            (1, 10, 0.0),
            (2, 20, 5 * MIN),
            (1, 11, 30 * MIN),  # exactly 30 min later: same session
            (1, 12, 61 * MIN),  # 31 min later: new session
            (2, 21, 100 * MIN),  # user 2: 95 min later: new session
            (1, 13, 62 * MIN),
        ],
        cols=("UserId", "ItemId", "Time"),
    )
    out, rep = sessionize(df)
    assert rep.step == "sessionize" and rep.details["gap_seconds"] == 1800.0
    assert rep.details["sessions_built"] == 4 and rep.removed_events == 0
    assert out.height == df.height
    assert sorted(session_lists(out)) == sorted([[10, 11], [12, 13], [20], [21]])
    # each session belongs to exactly one user
    assert out.group_by("SessionId").agg(pl.col("UserId").n_unique()).get_column("UserId").max() == 1


def test_sessionize_custom_gap_and_bad_gap() -> None:
    df = clicks([(1, 10, 0.0), (1, 11, 10 * MIN), (1, 12, 15 * MIN)], cols=("UserId", "ItemId", "Time"))
    out, rep = sessionize(df, gap_seconds=5 * MIN)
    assert session_lists(out) == [[10], [11, 12]] and rep.details["sessions_built"] == 2
    with pytest.raises(NextclickError, match="positive"):
        sessionize(df, gap_seconds=0)
    with pytest.raises(NextclickError, match="user"):
        sessionize(df.drop("UserId"))


# ---------------------------------------------------------------------------- drop repeats
def test_drop_repeats_removes_consecutive_duplicates_within_a_session_only() -> None:
    df = from_sessions([["a", "a", "b", "a", "a", "a"], ["a", "c"], ["c", "c"]])
    out, rep = drop_repeats(df)
    assert session_lists(out) == [["a", "b", "a"], ["a", "c"], ["c"]]  # "a" ending s0 / starting s1 kept
    assert rep.step == "drop_repeats" and rep.removed_events == 4 and rep.removed_sessions == 0


# ---------------------------------------------------------------------------- min support
def test_min_support_is_iterative_until_stable() -> None:
    """Round 1 removes items a (1 click) and b (4 clicks); that leaves five sessions [z] of length
    1, removed in round 2, which takes z's clicks with them; round 3 finds nothing to remove."""
    sessions = [["a", "z"]] + [["z", "b"]] * 4 + [["c", "d"]] * 5
    out, rep = min_support(from_sessions(sessions))
    assert session_lists(out) == [["c", "d"]] * 5
    assert rep.step == "min_support"
    assert rep.removed_events == 10 and rep.removed_sessions == 5
    assert rep.details["rounds"] >= 3
    # the fixed point: one more pass changes nothing
    again, rep2 = min_support(out)
    assert again.height == out.height and rep2.removed_events == 0


def test_min_support_thresholds_are_configurable() -> None:
    df = from_sessions([["a", "b", "c"], ["a", "b"], ["x"]])
    out, rep = min_support(df, min_session_length=2, min_item_support=2)
    assert session_lists(out) == [["a", "b"], ["a", "b"]] and rep.removed_events == 2 and rep.removed_sessions == 1
    out, rep = min_support(df, min_session_length=1, min_item_support=1)
    assert out.height == df.height and rep.removed_events == 0


# ---------------------------------------------------------------------------- time split
def split_log() -> pl.DataFrame:
    """Sessions on days 0..3; the last one ends at 3 days + 1000 s, so the cut is 2 days + 1000 s."""
    t_end = 3 * DAY
    sessions = [
        ["a", "b", "c"],  # 0: day 0 -> train
        ["b", "c", "d"],  # 1: day 1 -> train
        ["c", "d", "a"],  # 2: straddles the cut (clicks at cut-900, cut-400, cut+100)
        ["a", "new", "b"],  # 3: test; the unseen item is removed, 2 clicks remain
        ["new", "a"],  # 4: test; only one click remains -> dropped
        ["d", "a", "b"],  # 5: test, untouched
        ["b", "d"],  # 6: straddles the cut with one click before it (cut-200, cut+300)
    ]
    starts = [0.0, DAY, 2 * DAY + 100, 2 * DAY + 1000, 2 * DAY + 5000, t_end, 2 * DAY + 800]
    df = from_sessions(sessions, starts=starts, step=500.0)
    return df.with_columns(pl.col("Time").clip(upper_bound=t_end + 1000.0))


def test_time_split_strict_is_the_default_and_leaks_nothing() -> None:
    df = split_log()
    train, test, rep = time_split(df)
    cut = 2 * DAY + 1000
    d = rep.details
    assert d["by"] == "strict" and d["cut_time"] == pytest.approx(cut) and "Hidasi & Czapp" in d["protocol"]
    # no train event at or after the cut; every test session starts at or after it
    assert train.get_column("Time").max() < cut
    assert test.group_by("SessionId").agg(pl.col("Time").min()).get_column("Time").min() >= cut
    # the straddling session keeps its clicks before the cut; the one left with one click goes
    assert session_lists(train) == [["a", "b", "c"], ["b", "c", "d"], ["c", "d"]]
    assert d["straddling_sessions_cut"] == 2 and d["tail_events_removed"] == 2 and d["short_train_sessions_removed"] == 1
    assert session_lists(test) == [["a", "b"], ["d", "a", "b"]]
    assert set(test.get_column("ItemId").to_list()) <= set(train.get_column("ItemId").to_list())
    assert d["test_sessions_before"] == 3 and d["unseen_item_events_removed"] == 2 and d["short_sessions_removed"] == 1
    # every event is accounted for: kept in a split or reported removed
    assert train.height + test.height + rep.removed_events == df.height
    assert rep.removed_events == 2 + 1 + 3 and rep.removed_sessions == 1 + 1


def test_time_split_by_end_assigns_whole_sessions_by_their_last_click() -> None:
    df = split_log()
    train, test, rep = time_split(df, by="end")
    assert sorted(train.get_column("SessionId").unique().to_list()) == [0, 1]
    assert session_lists(test) == [["c", "d", "a"], ["a", "b"], ["d", "a", "b"], ["b", "d"]]
    assert rep.details["by"] == "end" and "GRU4Rec" in rep.details["protocol"]
    assert train.height + test.height + rep.removed_events == df.height


def test_time_split_days_and_bad_arguments() -> None:
    df = split_log()
    train, test, rep = time_split(df, days=2.5)
    assert train.get_column("SessionId").unique().to_list() == [0]
    assert rep.details["days"] == 2.5
    with pytest.raises(NextclickError, match="positive"):
        time_split(df, days=0)
    with pytest.raises(NextclickError, match="--split-by must be one of strict, end"):
        time_split(df, by="start")  # type: ignore[arg-type]


def _gru4rec_rsc15_script(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """GRU4Rec's original rsc15 preprocessing, step by step as its paper's repository describes it:
    sessions of one click out, items of fewer than 5 clicks out, sessions of one click out again
    (one round), test = sessions whose last click is in the last day, test clicks on items not in
    train out, test sessions of one click out; the same once more on train for train_tr / valid."""
    length = data.groupby("SessionId").size()
    data = data[np.isin(data.SessionId, length[length > 1].index)]
    support = data.groupby("ItemId").size()
    data = data[np.isin(data.ItemId, support[support >= 5].index)]
    length = data.groupby("SessionId").size()
    data = data[np.isin(data.SessionId, length[length >= 2].index)]

    def split(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        tmax = d.Time.max()
        last = d.groupby("SessionId").Time.max()
        train = d[np.isin(d.SessionId, last[last < tmax - 86400].index)]
        test = d[np.isin(d.SessionId, last[last >= tmax - 86400].index)]
        test = test[np.isin(test.ItemId, train.ItemId)]
        tlen = test.groupby("SessionId").size()
        return train, test[np.isin(test.SessionId, tlen[tlen >= 2].index)]

    train, test = split(data)
    train_tr, valid = split(train)
    return {"train": train, "test": test, "train_tr": train_tr, "valid": valid}


def test_split_by_end_reproduces_gru4rec_rsc15_script(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 6000  # clicks over 5 days, Zipf-like items, repeats kept (the script keeps them)
    sess = np.sort(rng.integers(0, 1500, n))
    start = rng.uniform(0, 5 * DAY, 1500)[sess]
    df = pl.DataFrame(
        {"SessionId": sess, "ItemId": (rng.zipf(1.4, n) % 400).astype(np.int64), "Time": start + rng.uniform(0, 3000, n)}
    )
    ref = _gru4rec_rsc15_script(df.to_pandas())
    opts = PrepareOptions(drop_repeats=False, support_rounds=1, split_by="end")
    ds = prepare(df, tmp_path / "ds", opts)
    for role, want in ref.items():
        got = ds.frame(role).sort(["SessionId", "Time"]).select("SessionId", "ItemId", "Time").to_pandas()
        want = want.sort_values(["SessionId", "Time"], kind="stable").reset_index(drop=True)
        assert len(got) > 0 and got.equals(want[["SessionId", "ItemId", "Time"]]), role
    # the one-round filter leaves items the iterated filter would remove: the two really differ here
    iterated = prepare(df, tmp_path / "it", PrepareOptions(drop_repeats=False, split_by="end"))
    assert iterated.frame("train").height < ds.frame("train").height


def test_time_split_with_nothing_left_to_train_on() -> None:
    with pytest.raises(NextclickError, match="nothing left to train"):
        time_split(from_sessions([["a", "b"], ["b", "a"]]), days=10)


# ---------------------------------------------------------------------------- leave one out
def test_leave_one_out_per_user() -> None:
    df = from_sessions([[1, 2, 3, 4, 5], [6, 7, 8], [9, 10]])
    train, valid, test, rep = leave_one_out(df)
    assert session_lists(train) == [[1, 2, 3], [6], [9, 10]]  # short sequences stay whole in train
    assert session_lists(valid) == [[1, 2, 3, 4], [6, 7]]  # target: second-to-last
    assert session_lists(test) == [[1, 2, 3, 4, 5], [6, 7, 8]]  # target: last
    assert rep.details == {"sequences_evaluated": 2, "short_sequences_train_only": 1}


# ---------------------------------------------------------------------------- prepare
def shop_log(n_days: int = 5, per_day: int = 30, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    sessions, starts = [], []
    for d in range(n_days):
        for k in range(per_day):
            sessions.append([int(1000 + 10 * x) for x in rng.integers(0, 12, size=int(rng.integers(1, 6)))])
            starts.append(d * DAY + k * 600.0)
    return from_sessions(sessions, starts=starts, step=30.0)


def test_prepare_time_split_writes_dataset(tmp_path: Path) -> None:
    ds = prepare(shop_log(), tmp_path / "ds", PrepareOptions(min_item_support=3))
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert set(meta["files"]) == {"train", "test", "train_tr", "valid"}
    for role, name in meta["files"].items():
        assert (tmp_path / "ds" / name).exists()
        df = ds.frame(role)
        assert meta["stats"][role] == {
            "events": df.height,
            "sessions": df.get_column("SessionId").n_unique(),
            "items": df.get_column("ItemId").n_unique(),
        }
    # the vocabulary: the shop's ids, index 0 reserved for padding, known items 1..n
    vocab = ds.vocab
    train = ds.frame("train")
    assert meta["vocab"]["ids"] == sorted(train.get_column("ItemId").unique().to_list())
    enc = vocab.encode(np.array(meta["vocab"]["ids"]))
    assert enc.tolist() == list(range(1, vocab.n_items + 1))
    assert vocab.encode(np.array([123456])).tolist() == [0]
    # every step is reported with counts
    steps = [r["step"] for r in meta["report"]]
    assert steps == ["read", "drop_repeats", "min_support", "time_split", "valid_split"]
    assert all({"removed_events", "removed_sessions"} <= set(r) for r in meta["report"])
    assert meta["report"][0]["details"]["events"] == shop_log().height
    # events are accounted for: read - removed by filters = train + test before the split's removals
    removed = sum(r["removed_events"] for r in meta["report"][1:4])
    assert meta["report"][0]["details"]["events"] - removed == meta["stats"]["train"]["events"] + meta["stats"]["test"]["events"]


def test_prepare_applies_the_same_split_again_for_tuning(tmp_path: Path) -> None:
    ds = prepare(shop_log(), tmp_path / "ds", PrepareOptions(min_item_support=3, test_days=1, valid_days=1))
    train, tr, valid, test = (ds.frame(r) for r in ("train", "train_tr", "valid", "test"))
    sid = lambda df: set(df.get_column("SessionId").unique().to_list())  # noqa: E731
    assert sid(tr) | sid(valid) <= sid(train) and not sid(tr) & sid(valid)
    assert not sid(train) & sid(test)
    # valid sessions start within the last day of train; train_tr ones before it
    cut = train.get_column("Time").max() - DAY
    assert valid.group_by("SessionId").agg(pl.col("Time").min()).get_column("Time").min() >= cut
    assert tr.group_by("SessionId").agg(pl.col("Time").min()).get_column("Time").max() < cut
    assert test.group_by("SessionId").agg(pl.col("Time").min()).get_column("Time").min() >= train.get_column("Time").max() - DAY
    # valid holds only items train_tr saw, sessions of length >= 2
    assert set(valid.get_column("ItemId").to_list()) <= set(tr.get_column("ItemId").to_list())
    assert valid.group_by("SessionId").len().get_column("len").min() >= 2
    rep = {r["step"]: r for r in ds.meta["report"]}
    assert rep["valid_split"]["details"]["test_sessions_before"] >= valid.get_column("SessionId").n_unique()


def test_prepare_from_file_with_users_sessionizes(tmp_path: Path) -> None:
    rows = ["user,item,ts"]
    rng = np.random.default_rng(3)
    t = 0
    for day in range(4):
        for user in range(10):
            for visit in range(2):
                t = day * 86400 + user * 7200 + visit * 3600  # visits 60 min apart: two sessions
                rows += [f"u{user},{int(x)},{t + 60 * j}" for j, x in enumerate(rng.integers(0, 6, size=4))]
    path = tmp_path / "log.csv"
    path.write_text("\n".join(rows) + "\n")
    opts = PrepareOptions(read=ReadOptions(user_col="user", item_col="item", time_col="ts"), min_item_support=1)
    ds = prepare(path, tmp_path / "ds", opts)
    rep = {r["step"]: r for r in ds.meta["report"]}
    assert rep["sessionize"]["details"]["sessions_built"] == 4 * 10 * 2
    assert rep["sessionize"]["details"]["gap_seconds"] == 1800.0
    assert ds.meta["source"] == str(path)


def test_prepare_string_item_ids(tmp_path: Path) -> None:
    df = shop_log().with_columns(pl.format("sku-{}", pl.col("ItemId")).alias("ItemId"))
    ds = prepare(df, tmp_path / "ds", PrepareOptions(min_item_support=3))
    assert ds.meta["vocab"]["dtype"] == "str"
    sessions, rep = ds.sessions("test")
    assert rep.unknown_events == 0
    assert sessions.vocab.decode(sessions.items[:1])[0].startswith("sku-")


def test_prepare_leave_one_out_from_user_item_file(tmp_path: Path) -> None:
    lines = []
    seqs = {1: [5, 6, 7, 8], 2: [6, 7, 5], 3: [7, 8], 4: [5, 5, 6, 9]}
    for u, items in seqs.items():
        lines += [f"{u} {i}" for i in items]
    path = tmp_path / "sequences.txt"
    path.write_text("\n".join(lines) + "\n")
    ds = prepare(path, tmp_path / "ds", PrepareOptions(split="loo", min_item_support=1))
    assert set(ds.roles) == {"train", "valid", "test"}
    assert ds.meta["last_only"] == {"valid": True, "test": True}
    test, _ = ds.sessions("test")
    assert test.last_only and test.n_predictions() == 3  # users 1, 2 and 4 (deduplicated: 5 6 9)
    sess, plen, targets = test.prefixes()
    assert sorted(ds.vocab.decode(targets).tolist()) == [5, 8, 9]
    valid, _ = ds.sessions("valid")
    assert sorted(ds.vocab.decode(valid.prefixes()[2]).tolist()) == [6, 7, 7]
    rep = {r["step"]: r for r in ds.meta["report"]}
    assert rep["drop_repeats"]["removed_events"] == 1
    assert rep["leave_one_out"]["details"]["sequences_evaluated"] == 3


def test_prepare_no_split_and_everything_filtered(tmp_path: Path) -> None:
    ds = prepare(shop_log(), tmp_path / "ds", PrepareOptions(split="none", min_item_support=1))
    assert ds.roles == ["train"]
    with pytest.raises(NextclickError, match="no clicks left"):
        prepare(shop_log(), tmp_path / "ds2", PrepareOptions(min_item_support=10**6))


def test_prepared_dataset_round_trips_through_load_sessions(tmp_path: Path) -> None:
    ds = prepare(shop_log(), tmp_path / "ds", PrepareOptions(min_item_support=3))
    train, _ = load_sessions(tmp_path / "ds", "train")
    test, rep = load_sessions(tmp_path / "ds", "test", vocab=train.vocab)
    assert train.n_events == ds.meta["stats"]["train"]["events"]
    assert test.n_events == ds.meta["stats"]["test"]["events"] and rep.unknown_events == 0
    assert Dataset.open(tmp_path / "ds").meta == ds.meta
    with pytest.raises(NextclickError, match="meta.json"):
        Dataset.open(tmp_path)


def test_leave_one_out_on_amazon_games(shared_data: Path, tmp_path: Path) -> None:
    opts = PrepareOptions(split="loo", drop_repeats=False, min_session_length=1, min_item_support=1)
    ds = prepare(shared_data / "amazon-games" / "sequences.txt", tmp_path / "games", opts)
    rep = {r["step"]: r for r in ds.meta["report"]}
    assert rep["read"]["details"] == {"events": 287_107, "items": 23_715, "users": 31_013}
    assert rep["user_sequences"]["details"]["sequences"] == 31_013
    evaluated = rep["leave_one_out"]["details"]["sequences_evaluated"]
    assert evaluated + rep["leave_one_out"]["details"]["short_sequences_train_only"] == 31_013
    assert ds.vocab.n_items == 23_715  # every item, some only seen as targets (SASRec protocol)
    test, _ = ds.sessions("test")
    assert test.n_predictions() == evaluated
    # train + the two held-out clicks per evaluated user = every interaction
    assert ds.meta["stats"]["train"]["events"] + 2 * evaluated == 287_107


def test_prepare_never_writes_over_its_input(tmp_path: Path) -> None:
    """`prepare dl/train.parquet --out dl` once replaced the raw log with the filtered split."""
    raw = tmp_path / "dl" / "train.parquet"
    raw.parent.mkdir()
    shop_log().write_parquet(raw)
    before = raw.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(NextclickError, match="would write over the input"):
            prepare(raw, raw.parent, PrepareOptions(min_item_support=3), overwrite=overwrite)
    assert raw.read_bytes() == before and sorted(p.name for p in raw.parent.iterdir()) == ["train.parquet"]
    # a raw file beside the dataset that prepare does not write is left alone
    other = tmp_path / "dl2" / "clicks.parquet"
    other.parent.mkdir()
    shop_log().write_parquet(other)
    with pytest.raises(NextclickError, match="not empty"):
        prepare(other, other.parent, PrepareOptions(min_item_support=3))
    ds = prepare(other, other.parent, PrepareOptions(min_item_support=3), overwrite=True)
    assert pl.read_parquet(other).equals(shop_log()) and ds.meta["stats"]["train"]["events"] > 0
    # an input that the dataset's own files would replace, rewriting that dataset from its split
    with pytest.raises(NextclickError, match="would write over the input"):
        prepare(other.parent / "test.parquet", other.parent, PrepareOptions(min_item_support=1))
    # the output cannot be a file, nor lie inside an input directory
    with pytest.raises(NextclickError, match="is a file"):
        prepare(shop_log(), raw, PrepareOptions(min_item_support=3))


def test_prepare_rewrites_only_its_own_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    ds = prepare(shop_log(), out, PrepareOptions(min_item_support=3))
    assert set(ds.roles) == {"train", "test", "train_tr", "valid"}
    # a dataset nextclick wrote may be rewritten; split files it no longer has are removed
    ds = prepare(shop_log(), out, PrepareOptions(split="none", min_item_support=1))
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.parquet"]
    assert Dataset.open(out).roles == ["train"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(NextclickError, match="--overwrite"):
        prepare(shop_log(), foreign, PrepareOptions(min_item_support=3))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_stable_sort_keeps_file_order_of_ties() -> None:
    from nextclick.data.dataset import stable_sort

    df = pl.DataFrame({"SessionId": [2, 1, 2, 1, 2, 1], "Time": [5.0, 3.0, 5.0, 1.0, 4.0, 3.0], "ItemId": [1, 2, 3, 4, 5, 6]})
    out = stable_sort(df, ["SessionId", "Time"])
    assert out.get_column("ItemId").to_list() == [4, 2, 6, 5, 1, 3]


def test_a_split_that_would_be_empty_or_a_nan_day_count_is_an_error(tmp_path: Path) -> None:
    for days in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(NextclickError, match="--test-days must be a positive number of days"):
            prepare(shop_log(), tmp_path / "ds", PrepareOptions(min_item_support=3, test_days=days))
    # every session starts long before the last minute of the log: no test session, said so
    with pytest.raises(NextclickError, match="test split is empty"):
        prepare(shop_log(), tmp_path / "ds2", PrepareOptions(min_item_support=3, test_days=1e-6))
