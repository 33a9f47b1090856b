"""Sequential rules (SR; Ludewig & Jannach, "Evaluation of session-based recommendation
algorithms", UMUAI 2018) -- and first-order item-to-item transitions as its ``steps=1`` preset.

A rule a -> b is counted each time b follows a within ``steps`` clicks of the same training
session, weighted by the distance d (``div``: 1/d, ``linear``: max(1 - 0.1 (d - 1), 0.1),
``same``: 1). A session is scored by the rules of its last click. The rules are one sparse matrix;
scoring is a row gather, with no Python loop per click. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender


@dataclass
class SRConfig:
    steps: int = 10  # how far after a click a following click still forms a rule
    weighting: Literal["div", "linear", "same"] = "div"
    pop_tiebreak: float = 0.0  # add this times normalised popularity (0 = plain SR)


class SequentialRules(Recommender):
    name = "sr"
    Config = SRConfig
    presets = {"transitions": {"steps": 1, "weighting": "same"}}

    def _weight(self, d: int) -> float:
        w = self.config.weighting
        if w == "div":
            return 1.0 / d
        if w == "linear":
            return max(1.0 - 0.1 * (d - 1), 0.1)
        return 1.0

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        if self.config.steps < 1:
            raise NextclickError(f"sr: steps must be an integer >= 1, got {self.config.steps}")
        sid = train.session_index()
        rows, cols, vals = [], [], []
        for d in range(1, self.config.steps + 1):  # loop over distances, vectorized over clicks
            same = sid[d:] == sid[:-d]
            rows.append(train.items[:-d][same])
            cols.append(train.items[d:][same])
            vals.append(np.full(int(same.sum()), self._weight(d), dtype=np.float32))
        v = self.n_items_ + 1
        self.rules_ = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(v, v), dtype=np.float32
        )
        self.rules_.sum_duplicates()

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        last = sessions.items[sessions.offsets[sess] + plen - 1]
        out = self.rules_[last].toarray()
        if self.config.pop_tiebreak:
            out += self.config.pop_tiebreak * self.popularity_ / (self.popularity_.max() + 1.0)
        return out

    def _state(self) -> dict[str, np.ndarray]:
        r = self.rules_
        return {"indptr": r.indptr.astype(np.int64), "indices": r.indices.astype(np.int64), "data": r.data}

    def _set_state(self, a: dict[str, np.ndarray]) -> None:
        v = self.n_items_ + 1
        self.rules_ = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=(v, v))
