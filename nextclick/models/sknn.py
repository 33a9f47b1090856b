"""V-SKNN: session-based kNN with position decay (Ludewig & Jannach, UMUAI 2018; the method
bol.com's Serenade serves).

The current session is a vector over items whose weights decay with the age of the click
(``linear``: position / length, so the latest click weighs 1; ``div``: 1 / age; ``same``: 1).
Its similarity to each training session that shares at least one item is the dot product with
that session's binary item vector (``cosine`` optional); the ``k`` most similar are the
neighbours, and an item's score is the summed similarity of the neighbours containing it.

Deviations: none from the plain method. ``sample_size`` (restrict candidates to the most recent
m sessions per item set) is available but off by default: all sessions sharing an item are
candidates, as for the plain V-SKNN reference figure on rsc15-100k (docs/benchmarks.md). A click
repeated within the session keeps the weight of its most recent occurrence.

Everything is sparse linear algebra over a batch of sessions (query matrix @ session-item
matrix, then a vectorized top-k per row): no Python loop per click or per session. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import Sessions, gather_prefixes
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender


def topk_per_row(m: sp.csr_matrix, k: int, key: np.ndarray | None = None, tiebreak: np.ndarray | None = None) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each CSR row (by ``key`` when given, else by value).

    Ties go to the larger ``tiebreak[column]`` when given, else to the lower column index.

    This is not :func:`nextclick.ranking.top_k_rows`, which would not give the same result: that
    one ranks dense rows, so it would need the (sessions x training sessions) similarities
    densified, would return absent entries as candidates in rows with fewer than ``k`` of them,
    and breaks ties at the k-th place in ``argpartition``'s order rather than by ``tiebreak``
    (here: the most recent neighbour wins). This one sorts only the stored entries."""
    m = m.tocsr()
    n_rows = m.shape[0]
    counts = np.diff(m.indptr)
    row = np.repeat(np.arange(n_rows), counts)
    k_ = m.data if key is None else key
    second = m.indices if tiebreak is None else -tiebreak[m.indices]
    order = np.lexsort((second, -k_, row))
    rank = np.arange(order.size) - np.repeat(m.indptr[:-1], counts)
    sel = order[rank < k]
    return sp.csr_matrix((m.data[sel], (row[sel], m.indices[sel])), shape=m.shape)


@dataclass
class VSKNNConfig:
    k: int = 100  # neighbours
    sample_size: int = 0  # 0 = every training session sharing an item; m > 0: the m most recent
    decay: Literal["linear", "div", "same"] = "linear"
    similarity: Literal["dot", "cosine"] = "dot"
    pop_tiebreak: float = 0.0  # add this times normalised popularity (0 = plain V-SKNN)


class VSKNN(Recommender):
    name = "vsknn"
    Config = VSKNNConfig
    # chosen on rsc15-100k train_tr -> train_valid (grid: decay x k x pop_tiebreak), never on test
    presets = {"tuned_rsc15": {"k": 100, "decay": "div", "pop_tiebreak": 0.01}}
    renamed_presets = {"rsc15": "tuned_rsc15"}
    recommended = {"sessions like rsc15": "tuned_rsc15"}

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        if self.config.k < 1:
            raise NextclickError(f"vsknn: k must be an integer >= 1, got {self.config.k}")
        sid = train.session_index()
        s = sp.csr_matrix(
            (np.ones(sid.size, dtype=np.float32), (sid, train.items)),
            shape=(train.n_sessions, self.n_items_ + 1),
        )
        s.sum_duplicates()
        s.data[:] = 1.0  # binary session vectors
        self._set_matrix(s)
        # recency of each training session (its last click time), for sample_size
        if train.times is not None:
            self.session_time_ = train.times[train.offsets[1:] - 1].astype(np.float64)
        else:
            self.session_time_ = np.arange(train.n_sessions, dtype=np.float64)

    def _set_matrix(self, s: sp.csr_matrix) -> None:
        self.sess_items_ = s  # (N, V+1) binary
        self.items_sess_ = s.T.tocsr()  # (V+1, N)
        self.sess_norm_ = np.sqrt(np.diff(s.indptr)).astype(np.float32)

    def _query(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> sp.csr_matrix:
        row, item, pos = gather_prefixes(sessions, sess, plen)
        L = plen[row].astype(np.float32)
        if self.config.decay == "linear":
            w = pos / L
        elif self.config.decay == "div":
            w = 1.0 / (L - pos + 1)
        else:
            w = np.ones_like(L)
        # a repeated item keeps its most recent (largest) weight
        order = np.lexsort((w, item, row))
        row, item, w = row[order], item[order], w[order]
        last = np.ones(row.size, dtype=bool)
        last[:-1] = (row[1:] != row[:-1]) | (item[1:] != item[:-1])
        return sp.csr_matrix((w[last].astype(np.float32), (row[last], item[last])), shape=(len(sess), self.n_items_ + 1))

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        nb = self._neighbours(sessions, sess, plen)  # (B, N)
        out = (nb @ self.sess_items_).toarray().astype(np.float32)  # (B, V+1)
        if self.config.pop_tiebreak:
            out += self.config.pop_tiebreak * self.popularity_ / (self.popularity_.max() + 1.0)
        return out

    def _neighbours(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> sp.csr_matrix:
        """(B, N) the similarity of each prefix to its ``k`` neighbour sessions (others 0)."""
        q = self._query(sessions, sess, plen)  # (B, V+1)
        sims = (q @ self.items_sess_).tocsr()  # (B, N): similarity to every session sharing an item
        if self.config.sample_size > 0:
            sims = topk_per_row(sims, self.config.sample_size, key=self.session_time_[sims.indices])
        if self.config.similarity == "cosine":
            qn = np.sqrt(np.diff(q.indptr)).astype(np.float32)  # binary-norm of the query item set
            rows = np.repeat(np.arange(sims.shape[0]), np.diff(sims.indptr))
            sims.data /= np.maximum(qn[rows] * self.sess_norm_[sims.indices], 1e-12)
        # k neighbours per row; among equally similar sessions the most recent win
        return topk_per_row(sims, self.config.k, tiebreak=self.session_time_)

    def neighbours_of(self, clicks: np.ndarray, item: int, n: int = 10) -> dict:
        """Why ``item`` (an internal index) scores what it does for one session of internal
        indices ``clicks``: its score is the summed similarity of the neighbours that hold it (plus
        the popularity term). Returns the neighbour count, the count holding ``item`` and the ``n``
        of those with the largest contribution: training session number, similarity, contribution
        (its similarity, as it holds the item) and the session's items (internal indices)."""
        self._check_fitted()
        one = Sessions.from_lists([list(np.asarray(clicks, dtype=np.int64))], n_items=self.n_items_)
        nb = self._neighbours(one, np.zeros(1, np.int64), one.lengths).tocsr()
        cols, sims = nb.indices, nb.data
        holds = np.asarray(self.sess_items_[cols, item].todense()).ravel() > 0
        order = np.argsort(-sims[holds], kind="stable")[:n]
        picked, picked_sims = cols[holds][order], sims[holds][order]
        s = self.sess_items_
        return {
            "n_neighbours": int(cols.size),
            "n_holding_item": int(holds.sum()),
            "neighbours": [{"session": int(j), "similarity": float(w), "contribution": float(w),
                            "items": s.indices[s.indptr[j] : s.indptr[j + 1]]} for j, w in zip(picked, picked_sims)],
        }

    def _state(self) -> dict[str, np.ndarray]:
        s = self.sess_items_
        return {"indptr": s.indptr.astype(np.int64), "indices": s.indices.astype(np.int64), "session_time": self.session_time_}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        n = a["indptr"].size - 1
        s = sp.csr_matrix((np.ones(a["indices"].size, np.float32), a["indices"], a["indptr"]), shape=(n, self.n_items_ + 1))
        self._set_matrix(s)
        self.session_time_ = a["session_time"]
