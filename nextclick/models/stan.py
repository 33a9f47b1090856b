"""STAN and VSTAN: sequence- and time-aware session kNN.

STAN: Garg, Gupta, Malhotra, Vig and Shroff, "Sequence and Time Aware Neighborhood for
Session-based Recommendations: STAN", SIGIR 2019. VSTAN: Ludewig, Latifi and Jannach, "Empirical
analysis of session-based recommendation algorithms", UMUAI 31, 2021 (the authors' code: the
session-rec framework, ``algorithms/knn/stan.py`` and ``vstan.py``, read to settle the details
below; none of it is used here).

For the current session s = (s_1 .. s_L) and a training session n:

* **Position in the current session** (``lambda_spw``): item i of s weighs
  ``w(i) = exp((p(i) - L) / lambda_spw)``, p(i) its most recent position (1-based), so the last
  click weighs 1.
* **Similarity**: ``sim(s, n) = sum_{i in s & n} w(i) / (sqrt(sum_{i in s} w(i)^2) sqrt(|n|))``,
  |n| the number of distinct items of n (the cosine of the weighted and the binary vector).
* **Recency of the neighbour** (``lambda_snh``, days): ``sim *= exp(-(t - t(n)) / lambda_snh)``,
  t(n) the time of n's last click. The current time t is common to every neighbour of a
  session, so it scales all of that session's scores alike and changes no ranking; the model
  uses the last training click's time, and needs no timestamp when it serves.
* **Neighbours**: the ``k`` most similar of the training sessions sharing an item with s (the
  ``sample_size`` most recent of them when > 0), the most recent first among equals.
* **Position in the neighbour** (``lambda_inh``): item j of neighbour n adds
  ``sim(s, n) exp(-|p_n(j) - p_n*| / lambda_inh)`` to j's score, p_n(j) j's most recent
  position in n and p_n* the last position in n of an item of s.

VSTAN adds two factors to every item a neighbour adds:

* **Position of the match in the current session** (``lambda_ipw``): ``exp((q_n - L) /
  lambda_ipw)``, q_n the last position in s of an item that n holds (neighbours found through
  the latest clicks count more).
* **Rarity** (``lambda_idf``): ``(1 + lambda_idf idf(j))``, ``idf(j) = log(N / c(j))`` with N
  training sessions and c(j) the training clicks on j.

A ``lambda_*`` of 0 turns its factor off (weight 1). STAN is VSTAN with ``lambda_ipw`` =
``lambda_idf`` = 0.

Deviations from the papers and the authors' code: none in the scores. The authors' code
recommends items of the current session too (its default ``remind=True``), as here; leaving them
out is the caller's ``exclude_seen``. Without timestamps the recency factor is off. Defaults are
the authors' code's (k = 100 as V-SKNN's; tune them with ``nextclick tune``).

Everything is sparse or flat array work over a batch of sessions (the similarity is a sparse
product, the neighbours' items are expanded into one flat array per batch): no Python loop per
click, session or neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import Sessions, gather_prefixes
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender
from nextclick.models.sknn import topk_per_row

DAY = 86_400.0


@dataclass
class STANConfig:
    k: int = 100  # neighbours
    sample_size: int = 5000  # the most recent sessions sharing an item considered (0 = all of them)
    lambda_spw: float = 1.02  # position in the current session (clicks); 0 = off
    lambda_snh: float = 5.0  # recency of the neighbour (days); 0 = off
    lambda_inh: float = 2.05  # position in the neighbour (clicks); 0 = off
    lambda_ipw: float = 0.0  # VSTAN: position in the current session of the neighbour's match; 0 = off
    lambda_idf: float = 0.0  # VSTAN: weight of the items' idf; 0 = off


@dataclass
class VSTANConfig(STANConfig):
    lambda_ipw: float = 1.02
    lambda_idf: float = 5.0


def _last_occurrence(row: np.ndarray, item: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (row, item, position) triples with each item's most recent position per row, sorted
    by row, then item."""
    order = np.lexsort((pos, item, row))
    row, item, pos = row[order], item[order], pos[order]
    last = np.ones(row.size, dtype=bool)
    last[:-1] = (row[1:] != row[:-1]) | (item[1:] != item[:-1])
    return row[last], item[last], pos[last]


class STAN(Recommender):
    name = "stan"
    Config = STANConfig
    # chosen by `nextclick tune` (Optuna TPE, 40 trials, MRR@20) on rsc15-100k train_tr -> train_valid
    # only (space: benchmarks/spaces/stan.json; commands and figures: docs/benchmarks.md)
    presets = {"tuned_rsc15": dict(k=205, sample_size=10000, lambda_spw=0.304, lambda_snh=5.28, lambda_inh=8.01)}
    recommended = {"sessions like rsc15": "tuned_rsc15"}

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        c = self.config
        if c.k < 1 or c.sample_size < 0:
            raise NextclickError(f"{self.name}: k must be >= 1 and sample_size >= 0, got k={c.k}, sample_size={c.sample_size}")
        for f in ("lambda_spw", "lambda_snh", "lambda_inh", "lambda_ipw", "lambda_idf"):
            if not getattr(c, f) >= 0:
                raise NextclickError(f"{self.name}: {f} must be a number >= 0, got {getattr(c, f)!r}")
        sid = train.session_index()
        pos = np.arange(train.n_events, dtype=np.int64) - train.offsets[sid] + 1
        r, i, p = _last_occurrence(sid, train.items.astype(np.int64), pos)
        s = sp.csr_matrix((p.astype(np.float32), (r, i)), shape=(train.n_sessions, self.n_items_ + 1))
        times = None if train.times is None else train.times[train.offsets[1:] - 1].astype(np.float64)
        self._set(s, times)

    def _set(self, positions: sp.csr_matrix, times: np.ndarray | None) -> None:
        self.positions_ = positions  # (N, V+1): each item's most recent position (1-based) per session
        binary = positions.copy()
        binary.data[:] = 1.0
        self.items_sess_ = binary.T.tocsr()  # (V+1, N)
        self.sess_norm_ = np.sqrt(np.diff(positions.indptr)).astype(np.float64)
        self.timed_ = times is not None
        n = positions.shape[0]
        self.session_time_ = times if times is not None else np.arange(n, dtype=np.float64)
        self.t_ref_ = float(self.session_time_.max()) if n else 0.0
        counts = self.popularity_.astype(np.float64)
        self.idf_ = np.where(counts > 0, np.log(max(n, 1) / np.maximum(counts, 1.0)), 0.0)

    # ------------------------------------------------------------------ scoring
    def _query(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per row of the batch, its distinct items with their most recent position and weight."""
        row, item, pos = gather_prefixes(sessions, sess, plen)
        row, item, pos = _last_occurrence(row, item.astype(np.int64), pos)
        lam = self.config.lambda_spw
        w = np.exp((pos - plen[row]) / lam) if lam > 0 else np.ones(row.size)
        return row, item, pos, w

    def neighbours(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> sp.csr_matrix:
        """(B, N) sparse: each row's ``k`` neighbours and their similarity (recency included)."""
        row, item, _, w = self._query(sessions, sess, np.asarray(plen, dtype=np.int64))
        return self._neighbours(row, item, w, len(sess))

    def _neighbours(self, row: np.ndarray, item: np.ndarray, w: np.ndarray, B: int) -> sp.csr_matrix:
        """:meth:`neighbours` from the rows' items and weights (:meth:`_query`)."""
        c = self.config
        q = sp.csr_matrix((w, (row, item)), shape=(B, self.n_items_ + 1))
        sims = (q @ self.items_sess_).tocsr()  # sum of w over the items shared with each session
        if c.sample_size > 0:
            sims = topk_per_row(sims, c.sample_size, key=self.session_time_[sims.indices])
        qn = np.sqrt(np.bincount(row, weights=w * w, minlength=B))
        rows = np.repeat(np.arange(sims.shape[0]), np.diff(sims.indptr))
        sims.data /= np.maximum(qn[rows] * self.sess_norm_[sims.indices], 1e-300)
        if c.lambda_snh > 0 and self.timed_:
            sims.data *= np.exp(-(self.t_ref_ - self.session_time_[sims.indices]) / (c.lambda_snh * DAY))
        return topk_per_row(sims, c.k, tiebreak=self.session_time_)

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        c = self.config
        B, V1 = len(sess), self.n_items_ + 1
        plen = np.asarray(plen, dtype=np.int64)
        qrow, qitem, qpos, w = self._query(sessions, sess, plen)
        nb = self._neighbours(qrow, qitem, w, B).tocoo()
        keep = nb.data > 0
        pr, pn, sim = nb.row[keep].astype(np.int64), nb.col[keep].astype(np.int64), nb.data[keep]
        if pr.size == 0:
            return np.zeros((B, V1), dtype=np.float32)
        # every neighbour's items, one flat run per (row, neighbour) pair
        P = self.positions_
        cnt = (P.indptr[pn + 1] - P.indptr[pn]).astype(np.int64)
        seg = np.concatenate([[0], np.cumsum(cnt)[:-1]])
        pair = np.repeat(np.arange(pr.size), cnt)
        at = np.repeat(P.indptr[pn].astype(np.int64), cnt) + np.arange(int(cnt.sum())) - seg[pair]
        e_item, e_pos = P.indices[at].astype(np.int64), P.data[at].astype(np.float64)
        # which of them the current session holds, and at which position
        qkey = qrow * V1 + qitem  # sorted (by row, then item)
        ekey = pr[pair] * V1 + e_item
        j = np.minimum(np.searchsorted(qkey, ekey), max(qkey.size - 1, 0))
        shared = qkey[j] == ekey
        star = np.maximum.reduceat(np.where(shared, e_pos, 0.0), seg)  # p_n*: last position in n of an item of s
        contrib = sim[pair]
        if c.lambda_inh > 0:
            contrib = contrib * np.exp(-np.abs(e_pos - star[pair]) / c.lambda_inh)
        if c.lambda_ipw > 0:
            q_n = np.maximum.reduceat(np.where(shared, qpos[j], 0), seg)  # last position in s of an item n holds
            contrib = contrib * np.exp((q_n - plen[pr]) / c.lambda_ipw)[pair]
        if c.lambda_idf > 0:
            contrib = contrib * (1.0 + c.lambda_idf * self.idf_[e_item])
        out = sp.csr_matrix((contrib, (pr[pair], e_item)), shape=(B, V1)).toarray()  # sums each item's shares
        return out.astype(np.float32)

    # ------------------------------------------------------------------ artifact
    def _state(self) -> dict[str, np.ndarray]:
        P = self.positions_
        return {"indptr": P.indptr.astype(np.int64), "indices": P.indices.astype(np.int64),
                "positions": P.data.astype(np.int32), "session_time": self.session_time_,
                "timed": np.array([self.timed_])}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        n = a["indptr"].size - 1
        P = sp.csr_matrix((a["positions"].astype(np.float32), a["indices"], a["indptr"]), shape=(n, self.n_items_ + 1))
        self._set(P, a["session_time"] if bool(a["timed"][0]) else None)


class VSTAN(STAN):
    name = "vstan"
    Config = VSTANConfig
    # as STAN's (space: benchmarks/spaces/vstan.json)
    presets = {"tuned_rsc15": dict(k=570, sample_size=5000, lambda_spw=4.90, lambda_snh=6.90, lambda_inh=9.18,
                                   lambda_ipw=0.375, lambda_idf=9.78)}
