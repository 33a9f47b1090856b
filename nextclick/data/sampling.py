"""Negative samplers: the one home of every distribution negatives are drawn from. Leaf module:
numpy only (models convert to tensors).

Items are the internal indices 1..n_items (0 is padding and is never drawn). Every sampler takes
the caller's :class:`numpy.random.Generator` and makes exactly the random calls documented here,
so a seeded caller gets the same draws on every run.

* :func:`uniform` -- every item equally likely;
* :class:`PopularitySampler` -- item i with probability proportional to ``max(count_i, 1) ** alpha``
  (alpha = 0: uniform, 1: popularity), drawn by inverse CDF, with the log-probabilities a logQ
  correction subtracts;
* :func:`uniform_not_in` -- uniform, redrawing any negative that is one of its row's own items
  (the sequence's window in SASRec's BCE, the session's clicks in evaluation's sampled protocol);
* :func:`alias_table` -- Walker's alias table: O(1) exact draws from any weights (GRU4Rec).
"""

from __future__ import annotations

import numpy as np


def uniform(rng: np.random.Generator, n_items: int, size: int | tuple[int, ...]) -> np.ndarray:
    """Items drawn uniformly from 1..n_items (int64): one ``rng.integers`` call."""
    return rng.integers(1, n_items + 1, size=size)


class PopularitySampler:
    """Items 1..n_items with probability ``q_i`` proportional to ``max(counts[i - 1], 1) ** alpha``.

    ``counts`` (n_items,) holds the training clicks of items 1..n_items; an unseen item counts as
    one click so every item can be drawn. ``log_q`` (n_items + 1,) holds ``log q_i`` with 0.0 at
    the padding index 0, ready to be indexed by item.
    """

    def __init__(self, counts: np.ndarray, alpha: float) -> None:
        q = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** alpha
        q /= q.sum()
        self.n_items = q.size
        self.q = q  # (n_items,) probabilities of items 1..n_items
        self.cdf = np.cumsum(q)
        self.log_q = np.concatenate([[0.0], np.log(q)])  # (n_items + 1,)

    @classmethod
    def from_clicks(cls, items: np.ndarray, n_items: int, alpha: float) -> PopularitySampler:
        """The sampler of a click stream ``items`` (item indices, 0 = padding is ignored)."""
        return cls(np.bincount(items, minlength=n_items + 1)[1:], alpha)

    def draw(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Items (int64) of shape ``size``: one ``rng.random`` call, then the inverse CDF."""
        return np.minimum(np.searchsorted(self.cdf, rng.random(size), side="right"), self.n_items - 1) + 1


def uniform_not_in(
    rng: np.random.Generator,
    n_items: int,
    shape: tuple[int, int],
    rows: np.ndarray,
    items: np.ndarray,
    max_rounds: int,
) -> np.ndarray:
    """(B, K) uniform negatives, none of which is an item of its own row, as far as
    ``max_rounds`` redraws allow.

    Row ``b``'s items are ``items[rows == b]`` (padding 0 may appear; it is never drawn). The
    random calls: one ``uniform`` draw of the whole shape, then per round, while some negative is
    one of its row's items, one ``rng.integers`` call for exactly those entries (row-major order).
    After ``max_rounds`` redraws the last ones are kept unchecked (with a realistic catalogue the
    loop ends after two or three rounds).
    """
    B = shape[0]
    V = n_items + 1
    keys = np.sort(np.asarray(rows, dtype=np.int64) * V + np.asarray(items, dtype=np.int64))
    row_key = np.arange(B, dtype=np.int64)[:, None] * V
    neg = uniform(rng, n_items, shape)
    for _ in range(max_rounds):
        k = row_key + neg
        at = np.minimum(np.searchsorted(keys, k), max(keys.size - 1, 0))
        bad = keys[at] == k if keys.size else np.zeros(neg.shape, dtype=bool)
        if not bad.any():
            break
        neg[bad] = rng.integers(1, n_items + 1, size=int(bad.sum()))
    return neg


def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table for sampling index ``i`` with probability ``weights[i] / sum``.

    Returns ``(prob, alias)``: draw ``i`` uniformly, keep it with probability ``prob[i]``, else
    take ``alias[i]``. O(n) construction.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.size
    if n == 0 or not (w.sum() > 0) or (w < 0).any():
        raise ValueError("alias_table needs non-negative weights with a positive sum")
    q = w * (n / w.sum())
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = np.flatnonzero(q < 1.0)
    small = small[np.argsort(-q[small], kind="stable")].tolist()  # pop() takes the lightest first
    large = np.flatnonzero(q >= 1.0).tolist()
    ql = q.tolist()
    while small and large:
        s, g = small.pop(), large[-1]
        prob[s], alias[s] = ql[s], g
        ql[g] -= 1.0 - ql[s]
        if ql[g] < 1.0:
            small.append(large.pop())
    # leftovers (rounding error only; never a zero weight, those go first) keep prob 1
    return prob, alias


def alias_draw(rng: np.random.Generator, prob: np.ndarray, alias: np.ndarray, out: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Fill ``out`` (int32) with indices drawn from an :func:`alias_table` (``prob`` float32,
    ``alias`` int32), in chunks of ``chunk`` so the temporaries stay small. Per chunk of m: one
    ``rng.integers(0, n, m, dtype=int32)`` call, then one ``rng.random(m, dtype=float32)`` call."""
    n = out.size
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        i = rng.integers(0, prob.size, m, dtype=np.int32)
        u = rng.random(m, dtype=np.float32)
        np.copyto(out[lo : lo + m], np.where(u < prob[i], i, alias[i]))
    return out
