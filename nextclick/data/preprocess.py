"""Preprocessing steps from a raw click log to a prepared dataset.

Each step is small and composable (``apply(frame) -> frame``) and returns a report of what it
removed, so nothing is dropped silently. :func:`prepare` chains them:

read -> sessionize (no session column) -> drop consecutive repeats -> iterative min-support
filter -> time-based split (train / test, then train_tr / valid) or leave-one-out per user.

Polars is used for the heavy lifting (see docs/benchmarks.md for the polars vs pandas choice).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextclick.data.dataset import Dataset, check_output_dir, sort_clicks, stable_sort, write_dataset
from nextclick.data.io import IdCodes, read_compact
from nextclick.data.options import PrepareOptions, SplitBy
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)

DAY = 86_400.0


@dataclass
class StepReport:
    step: str
    removed_events: int = 0
    removed_sessions: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"{self.step}: removed {self.removed_events:,} events, {self.removed_sessions:,} sessions" + (
            f" ({extra})" if extra else ""
        )


def _n_sessions(df: pl.DataFrame) -> int:
    return int(df.get_column("SessionId").n_unique()) if df.height else 0


def sessionize(df: pl.DataFrame, gap_seconds: float = 1800.0) -> tuple[pl.DataFrame, StepReport]:
    """Split each user's clicks into sessions at inactivity gaps longer than ``gap_seconds``."""
    if "UserId" not in df.columns:
        raise NextclickError("sessionize needs a user column (--user-col)")
    if gap_seconds <= 0:
        raise NextclickError(f"--session-gap must be positive, got {gap_seconds}")
    df = stable_sort(df, ["UserId", "Time"])
    new = (pl.col("UserId") != pl.col("UserId").shift(1)) | ((pl.col("Time") - pl.col("Time").shift(1)) > gap_seconds)
    df = df.with_columns(SessionId=new.fill_null(True).cum_sum().cast(pl.Int64) - 1)
    rep = StepReport("sessionize", details={"gap_seconds": gap_seconds, "sessions_built": _n_sessions(df)})
    return df, rep


def user_sequences(df: pl.DataFrame) -> tuple[pl.DataFrame, StepReport]:
    """One sequence per user (sequential data such as amazon-games): SessionId = UserId."""
    df = sort_clicks(df.with_columns(SessionId=pl.col("UserId")))
    return df, StepReport("user_sequences", details={"sequences": _n_sessions(df)})


def drop_repeats(df: pl.DataFrame) -> tuple[pl.DataFrame, StepReport]:
    """Remove a click on the same item as the click just before it in the same session."""
    df = sort_clicks(df)
    rep_mask = (pl.col("SessionId") == pl.col("SessionId").shift(1)) & (pl.col("ItemId") == pl.col("ItemId").shift(1))
    out = df.filter(~rep_mask.fill_null(False))
    return out, StepReport("drop_repeats", removed_events=df.height - out.height)


def _dense_codes(ids: pl.Series) -> np.ndarray:
    """Non-negative integer codes for ids (equal ids, equal codes) to ``bincount`` over.

    Integer ids spanning a modest range are their own codes (offset by the minimum): O(n), no
    sort or hash, and no copy when the minimum is 0 (the compact codes of :func:`read_compact`).
    Otherwise polars' dense rank."""
    if ids.len() and ids.dtype.is_integer():
        lo, hi = int(ids.min()), int(ids.max())
        if hi - lo < max(4 * ids.len(), 1 << 20):
            arr = ids.to_numpy()
            return arr - lo if lo else arr
    return ids.rank("dense").to_numpy().astype(np.int64) - 1


def min_support(
    df: pl.DataFrame, min_session_length: int = 2, min_item_support: int = 5, rounds: int = 0
) -> tuple[pl.DataFrame, StepReport]:
    """Iteratively remove sessions shorter than ``min_session_length`` and items with fewer than
    ``min_item_support`` clicks until nothing changes; or, with ``rounds`` > 0, for that many
    rounds (sessions, then items) followed by one last pass over sessions, as GRU4Rec's rsc15
    script does with one round: sessions may then hold items with fewer clicks than the minimum.

    Vectorized: sessions and items get dense codes once; each round is two ``bincount`` calls over
    the rows still alive, and the frame is filtered once at the end."""
    n0, s0 = df.height, _n_sessions(df)
    df = sort_clicks(df)
    sess = _dense_codes(df.get_column("SessionId"))  # sessions are contiguous: one code per session
    item = _dense_codes(df.get_column("ItemId"))
    if rounds < 0:
        raise NextclickError(f"--support-rounds must be 0 (until stable) or positive, got {rounds}")
    alive = np.ones(df.height, dtype=bool)
    n_rounds = 0
    while True:
        n_rounds += 1
        before = int(alive.sum())
        if min_session_length > 1:
            n_sess = np.bincount(sess[alive], minlength=int(sess.max()) + 1 if sess.size else 0)
            alive &= (n_sess >= min_session_length)[sess]  # a bool per session, gathered: one byte a row
        if min_item_support > 1:
            n_item = np.bincount(item[alive], minlength=int(item.max()) + 1 if item.size else 0)
            alive &= (n_item >= min_item_support)[item]
        if int(alive.sum()) == before:
            break
        if rounds and n_rounds == rounds:
            if min_session_length > 1:
                n_sess = np.bincount(sess[alive], minlength=int(sess.max()) + 1 if sess.size else 0)
                alive &= (n_sess >= min_session_length)[sess]
            break
    del sess, item
    if not alive.all():
        df = df.filter(pl.Series(alive))
    rep = StepReport(
        "min_support",
        removed_events=n0 - df.height,
        removed_sessions=s0 - _n_sessions(df),
        details={"min_session_length": min_session_length, "min_item_support": min_item_support, "rounds": n_rounds},
    )
    return df, rep


SPLIT_PROTOCOLS = {
    "strict": "test: sessions starting at or after the cut; train: only clicks before the cut (sessions "
    "that straddle the cut lose their tail) [Hidasi & Czapp, 2023]",
    "end": "test: sessions whose last click is at or after the cut; train: the other sessions, whole "
    "[GRU4Rec's rsc15 preprocessing, Hidasi et al., 2016]",
}


def time_split(
    df: pl.DataFrame, days: float = 1.0, by: SplitBy = "strict", name: str = "time_split"
) -> tuple[pl.DataFrame, pl.DataFrame, StepReport]:
    """Split at ``cut`` = the last click's time minus ``days`` days.

    ``by="strict"`` (the default) leaks nothing across the cut: test holds the sessions that start
    at or after it, train holds only the clicks before it, so a session that straddles the cut
    loses its tail (its clicks at or after the cut are in neither split), and a train session
    left with one click is removed. ``by="end"`` assigns whole sessions by their last click, as
    GRU4Rec's original rsc15 script does; a session that ends after the cut but starts before it
    is then in test, and its early clicks precede training clicks. Either way, test clicks on
    items unseen in train are removed, then test sessions left shorter than 2.
    """
    if by not in SPLIT_PROTOCOLS:
        raise NextclickError(f"--split-by must be one of {', '.join(SPLIT_PROTOCOLS)}, got {by!r}")
    if not (0 < days < float("inf")):
        flag = "--test-days" if name == "time_split" else "--valid-days"
        raise NextclickError(f"{flag} must be a positive number of days, got {days}")
    df = sort_clicks(df)
    times = df.get_column("Time").to_numpy()
    sid = df.get_column("SessionId").to_numpy()
    # sessions are contiguous and time-ordered: the start is the first click, the end the last
    first = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]]) if sid.size else np.zeros(0, np.int64)
    ends = np.r_[first[1:], sid.size]
    cut = float(times.max()) - days * DAY
    details: dict[str, Any] = {"days": days, "by": by, "cut_time": cut}
    if by == "end":
        in_test = np.repeat(times[ends - 1] >= cut, ends - first)
        train, test = df.filter(pl.Series(~in_test)), df.filter(pl.Series(in_test))
    else:
        starts_after = times[first] >= cut
        in_test = np.repeat(starts_after, ends - first)
        before = times < cut
        straddle = ~starts_after & (times[ends - 1] >= cut)
        test = df.filter(pl.Series(in_test))
        train = df.filter(pl.Series(before))
        n_train = np.bincount(np.repeat(np.arange(first.size), ends - first), weights=before, minlength=first.size)
        short = (n_train == 1) & straddle  # sessions the cut leaves with one click
        if short.any():
            train = train.filter(~pl.Series(np.repeat(short, ends - first)[before]))
        details |= {
            "straddling_sessions_cut": int(straddle.sum()),
            "tail_events_removed": int((~before & ~in_test).sum()),
            "short_train_sessions_removed": int(short.sum()),
        }
    if train.height == 0:
        raise NextclickError(f"{name}: every session falls in the last {days} day(s); nothing left to train on")
    n_test_events, n_test_sessions = test.height, _n_sessions(test)
    known = train.get_column("ItemId").unique()
    test2 = test.filter(pl.col("ItemId").is_in(known.implode()))
    unseen = test.height - test2.height
    test3 = test2.filter(pl.len().over("SessionId") >= 2)
    removed_train = df.height - train.height - n_test_events
    rep = StepReport(
        name,
        removed_events=removed_train + n_test_events - test3.height,
        removed_sessions=_n_sessions(df) - _n_sessions(train) - _n_sessions(test3),
        details=details
        | {
            "protocol": SPLIT_PROTOCOLS[by],
            "test_sessions_before": n_test_sessions,
            "unseen_item_events_removed": unseen,
            "short_sessions_removed": _n_sessions(test2) - _n_sessions(test3),
        },
    )
    if test3.height == 0:
        part = "test" if name == "time_split" else "valid"
        raise NextclickError(
            f"{name}: the {part} split is empty: no session of two or more known clicks "
            f"{'starts' if by == 'strict' else 'ends'} in the last {days:g} day(s) of the log; "
            f"check the log's time range and --{part}-days"
        )
    return train, test3, rep


def leave_one_out(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, StepReport]:
    """Per user sequence: last click = test target, second to last = validation target.

    Returns (train, valid, test): train holds all but the last two clicks; valid holds all but the
    last (only its last click is a target); test holds the whole sequence (only its last click is a
    target). Sequences of fewer than 3 clicks stay whole in train (the SASRec protocol).
    """
    df = sort_clicks(df)
    n = pl.len().over("SessionId")
    from_end = pl.int_range(pl.len(), 0, -1).over("SessionId")  # L, L-1, ..., 1
    df = df.with_columns(_n=n, _k=from_end)
    eligible = pl.col("_n") >= 3
    train = df.filter(~eligible | (pl.col("_k") > 2)).drop("_n", "_k")
    valid = df.filter(eligible & (pl.col("_k") > 1)).drop("_n", "_k")
    test = df.filter(eligible).drop("_n", "_k")
    rep = StepReport(
        "leave_one_out",
        details={
            "sequences_evaluated": _n_sessions(test),
            "short_sequences_train_only": _n_sessions(df) - _n_sessions(test),
        },
    )
    return train, valid, test, rep


def prepare_frame(df: pl.DataFrame, opts: PrepareOptions) -> tuple[dict[str, pl.DataFrame], list[StepReport]]:
    """Run every step on a canonical click frame; returns the split frames and the reports.

    Each step's input is let go as soon as its output exists (the frame is sorted once, up front,
    and every later sort finds it sorted), so on a large log at most about two frames are alive."""
    reports: list[StepReport] = [StepReport("read", details=frame_stats_any(df))]
    if "SessionId" not in df.columns:
        if opts.split == "loo":
            df, rep = user_sequences(df)
        else:
            df, rep = sessionize(df, opts.session_gap)
        reports.append(rep)
    df = sort_clicks(df)
    if opts.drop_repeats:
        df, rep = drop_repeats(df)
        reports.append(rep)
    if opts.min_session_length > 1 or opts.min_item_support > 1:
        df, rep = min_support(df, opts.min_session_length, opts.min_item_support, opts.support_rounds)
        reports.append(rep)
    if df.height == 0:
        raise NextclickError("no clicks left after filtering; lower --min-item-support / --min-session-length")
    frames: dict[str, pl.DataFrame]
    if opts.split == "time":
        train, test, rep = time_split(df, opts.test_days, opts.split_by)
        del df
        reports.append(rep)
        train_tr, valid, rep = time_split(train, opts.valid_days or opts.test_days, opts.split_by, name="valid_split")
        reports.append(rep)
        frames = {"train": train, "test": test, "train_tr": train_tr, "valid": valid}
    elif opts.split == "loo":
        train, valid, test, rep = leave_one_out(df)
        del df
        reports.append(rep)
        frames = {"train": train, "valid": valid, "test": test}
    elif opts.split == "none":
        frames = {"train": df}
    else:
        raise NextclickError(f"--split must be time, loo or none, got {opts.split!r}")
    for r in reports:
        log.info("%s", r.line())
    return frames, reports


def frame_stats_any(df: pl.DataFrame) -> dict[str, int]:
    out = {"events": int(df.height), "items": int(df.get_column("ItemId").n_unique())}
    if "SessionId" in df.columns:
        out["sessions"] = int(df.get_column("SessionId").n_unique())
    if "UserId" in df.columns:
        out["users"] = int(df.get_column("UserId").n_unique())
    return out


def prepare(
    inp: str | Path | pl.DataFrame,
    out: str | Path,
    opts: PrepareOptions | None = None,
    overwrite: bool = False,
    source: str | Path | None = None,
) -> Dataset:
    """Read a click log (path or canonical frame), preprocess it and write a prepared dataset.

    ``out`` must not hold the input, and must be new, empty or a dataset nextclick wrote, unless
    ``overwrite`` (see :func:`nextclick.data.check_output_dir`); this is checked before reading.
    For a frame read from a file, ``source`` names that file, so that it is protected too and
    recorded in ``meta.json``.
    """
    opts = opts or PrepareOptions()
    roles = {"time": ["train", "test", "train_tr", "valid"], "loo": ["train", "valid", "test"]}.get(opts.split, ["train"])
    sources = [Path(source)] if source is not None else [] if isinstance(inp, pl.DataFrame) else [Path(inp)]
    check_output_dir(Path(out), roles, sources, overwrite)
    if isinstance(inp, pl.DataFrame):
        frames, reports = prepare_frame(inp, opts)
        codes = None
    else:
        found: list[IdCodes] = []
        frames, reports = prepare_frame(_read_codes(inp, opts, found), opts)  # no reference kept here
        codes = found[0]
    # time split: the catalogue is what training saw (test clicks on other items were removed);
    # leave-one-out: the catalogue is every item (the SASRec protocol), some only seen as targets
    vocab_src = [frames["train"]] if opts.split != "loo" else [frames["train"], frames["test"]]
    vocab = _vocab(vocab_src, codes)
    opts_json = asdict(opts)
    meta = {
        "split": opts.split,
        "last_only": {"valid": True, "test": True} if opts.split == "loo" else {},
        "options": opts_json,
        "source": str(sources[0]) if sources else "<frame>",
        "report": [asdict(r) for r in reports],
    }
    return write_dataset(out, frames, vocab, meta, sources=sources, overwrite=overwrite, codes=codes)


def _read_codes(inp: str | Path, opts: PrepareOptions, found: list[IdCodes]) -> pl.DataFrame:
    """The log as compact codes (:func:`read_compact`); their :class:`IdCodes` go to ``found``."""
    df, codes = read_compact(inp, opts.read)
    if opts.split == "loo" and "SessionId" not in df.columns:
        codes.ids["SessionId"] = codes.ids["UserId"]  # user_sequences: a user's codes are its sequence's
    found.append(codes)
    return df


def _vocab(frames: list[pl.DataFrame], codes: IdCodes | None) -> ItemVocab:
    """The item vocabulary of ``frames``; with ``codes``, their items are codes, counted rather than sorted."""
    if codes is None or "ItemId" not in codes.ids:
        return ItemVocab.fit(pl.concat([f.get_column("ItemId") for f in frames]).to_numpy())
    ids = codes.ids["ItemId"]
    seen = np.zeros(ids.len(), dtype=bool)
    for f in frames:
        seen[f.get_column("ItemId").to_numpy()] = True
    return ItemVocab.fit(ids.gather(np.flatnonzero(seen)).to_numpy())
