"""Popularity baselines: most-popular and session-popularity (Ludewig & Jannach, 2018).

No torch. Both are the accuracy floor: a sequence model that does not beat them is broken.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclick.data.sessions import Sessions, gather_prefixes
from nextclick.models.base import Recommender


@dataclass
class PopConfig:
    """Most-popular has no hyper-parameters."""


class MostPopular(Recommender):
    """Scores every item by its number of training clicks, whatever the session."""

    name = "pop"
    Config = PopConfig

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        pass

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(sess), self.popularity_.size)).copy()


@dataclass
class SessionPopConfig:
    """``pop_weight``: weight of global popularity (normalised to [0, 1)) added to in-session counts,
    so it only orders items the session has not clicked and breaks ties between those it has."""

    pop_weight: float = 1.0


class SessionPopular(Recommender):
    """Items clicked in the current session, most clicked first, then the globally popular."""

    name = "spop"
    Config = SessionPopConfig

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        pass

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        pop = self.popularity_ / (self.popularity_.max() + 1.0) * self.config.pop_weight
        out = np.broadcast_to(pop, (len(sess), pop.size)).copy()
        row, item, _ = gather_prefixes(sessions, sess, plen)
        np.add.at(out, (row, item), 1.0)
        return out
