"""The report's figures as numbers: bootstrap confidence intervals over sessions, Recall@K / MRR@K
curves, accuracy by position in the session and after a shift of intent.

Confidence intervals resample SESSIONS, not predictions: the predictions of one session are not
independent. Every statistic here is a ratio of sums over predictions (hits / predictions), so a
resample only needs each session's sums: with the (R, S) matrix of how often each of the S
sessions is drawn in each of R resamples (S draws with replacement), a resample's figure is ``(W @ num) / (W
@ den)``. The interval is the percentile one (2.5 % and 97.5 % for 95 %).

Intent shift: a *shift* is a click whose item's category differs from the previous click's (both
known). A prediction made ``j`` clicks after a shift (``j`` = 1: the first click in the new category
is the last one given; no other shift since) is at *offset* ``j``; offset 0 is the prediction whose
target is the shift click itself. Its *new category* is the category shifted to.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nextclick.data.sessions import Sessions

#: Weights of a block of resamples drawn at once (resamples x sessions).
_WEIGHTS = 1 << 22


class Estimate(NamedTuple):
    """Point estimates of ratio statistics and their bootstrap interval, arrays of one shape."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray  # predictions behind each value


def session_sums(session: np.ndarray, values: np.ndarray, n_sessions: int) -> np.ndarray:
    """(S, M) per-session sums of ``values`` (N, M) (or (N,): (S, 1)) of predictions of ``session`` (N,)."""
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    flat = session.astype(np.int64)[:, None] * values.shape[1] + np.arange(values.shape[1])
    return np.bincount(flat.ravel(), weights=values.ravel(), minlength=n_sessions * values.shape[1]).reshape(n_sessions, -1)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """``num.sum(0) / den.sum(0)`` of per-session sums ``num``, ``den`` (S, M) with its bootstrap
    interval from ``n_boot`` resamples of the S sessions (seeded). NaN where the denominator is 0."""
    S = num.shape[0]
    tot_n, tot_d = num.sum(0), den.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = tot_n / np.where(tot_d > 0, tot_d, np.nan)
    if S == 0 or n_boot < 1:
        return Estimate(value, value.copy(), value.copy(), tot_d)
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, _WEIGHTS // S))
    draws = []
    for a in range(0, n_boot, block):
        R = min(block, n_boot - a)
        pick = rng.integers(0, S, size=(R, S)) + np.arange(R)[:, None] * S  # S sessions drawn with replacement
        W = np.bincount(pick.ravel(), minlength=R * S).reshape(R, S).astype(np.float64)  # (R, S) times drawn
        with np.errstate(invalid="ignore", divide="ignore"):
            draws.append((W @ num) / (W @ den))
    boot = np.concatenate(draws)
    tail = (1.0 - level) / 2.0 * 100.0
    ok = tot_d > 0
    lo, hi = np.full_like(value, np.nan), np.full_like(value, np.nan)
    if ok.any():
        lo[ok], hi[ok] = np.nanpercentile(boot[:, ok], [tail, 100.0 - tail], axis=0)
    return Estimate(value, lo, hi, tot_d)


def grouped_means(
    session: np.ndarray, group: np.ndarray, values: np.ndarray, n_sessions: int, n_groups: int, n_boot: int = 1000, seed: int = 0
) -> Estimate:
    """Per group (``group`` (N,) in 0..n_groups-1) and column of ``values`` (N, M) the mean over the
    group's predictions, with session-bootstrap intervals: arrays (n_groups, M)."""
    values = values.reshape(values.shape[0], -1)
    M = values.shape[1]
    key = session.astype(np.int64) * n_groups + group  # (session, group) cell of each prediction
    num = session_sums(key, values, n_sessions * n_groups).reshape(n_sessions, n_groups * M)
    den = np.repeat(np.bincount(key, minlength=n_sessions * n_groups).reshape(n_sessions, n_groups), M, axis=1)
    e = bootstrap_ratio(num, den.astype(np.float64), n_boot, seed)
    return Estimate(*(a.reshape(n_groups, M) for a in e))


def rank_curves(rank: np.ndarray, max_k: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Recall@K and MRR@K for K = 1..max_k from 0-based ranks: two (max_k,) arrays."""
    n = max(rank.size, 1)
    count = np.bincount(np.minimum(rank, max_k).astype(np.int64), minlength=max_k + 1)[:max_k]
    recall = np.cumsum(count) / n
    mrr = np.cumsum(count / np.arange(1, max_k + 1)) / n
    return recall, mrr


def hits_and_rr(rank: np.ndarray, k: int = 20) -> np.ndarray:
    """(N, 3) per prediction: hit at ``k``, reciprocal rank within ``k``, NDCG gain within ``k``."""
    hit = rank < k
    return np.stack([hit, np.where(hit, 1.0 / (rank + 1.0), 0.0), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)], axis=1)


def click_shifts(sessions: Sessions, categories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per click of ``sessions``: whether it is a shift, and its offset from the latest shift at or
    before it (1 at the shift click, 0 where the session has had none)."""
    cat = categories[sessions.items]
    first = np.zeros(sessions.n_events, dtype=bool)
    first[sessions.offsets[:-1][sessions.lengths > 0]] = True
    prev = np.r_[-1, cat[:-1]]
    shift = ~first & (cat >= 0) & (prev >= 0) & (cat != prev)
    idx = np.arange(sessions.n_events)
    last = np.maximum.accumulate(np.where(shift, idx, -1)) if idx.size else idx
    start = np.repeat(sessions.offsets[:-1], sessions.lengths)
    offset = np.where(last >= start, idx - last + 1, 0)
    return shift, offset


def shift_rows(
    sessions: Sessions, categories: np.ndarray, session: np.ndarray, position: np.ndarray, max_offset: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The predictions (indices into ``session`` / ``position``) at offsets 0..``max_offset`` of a
    shift, their offsets and the category shifted to; a prediction may appear twice (offset 0 of a
    shift and offset j of the one before)."""
    shift, offset = click_shifts(sessions, categories)
    last = sessions.offsets[session.astype(np.int64)] + position.astype(np.int64) - 1  # last click given
    cat = categories[sessions.items]
    after = np.flatnonzero((offset[last] >= 1) & (offset[last] <= max_offset))
    before = np.flatnonzero(shift[last + 1])  # the target is the shift click
    rows = np.concatenate([before, after])
    offs = np.concatenate([np.zeros(before.size, np.int64), offset[last[after]]])
    new = np.concatenate([cat[last[before] + 1], cat[last[after]]])
    return rows, offs, new


def clicks_to_follow(share: np.ndarray, threshold: float = 0.5) -> int | None:
    """The first offset j >= 1 at which ``share[j]`` (share of recommendations in the new category,
    indexed by offset) reaches ``threshold``; None if none does."""
    hit = np.flatnonzero(np.nan_to_num(share[1:], nan=0.0) >= threshold)
    return int(hit[0]) + 1 if hit.size else None
