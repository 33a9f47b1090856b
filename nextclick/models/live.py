"""The serving interface of a fitted model: how the service keeps and scores live sessions.

A live session is its known clicks (internal indices, most recent last; the service keeps the
last :attr:`LiveSessions.max_clicks`) and, for a model with a state of its own, a float32 state
vector of :attr:`LiveSessions.state_size` that the session store keeps between clicks. A model
hands the service one :class:`LiveSessions` (``model.live()``) with four operations on batches
of sessions:

* :meth:`~LiveSessions.start` -- the state of new sessions;
* :meth:`~LiveSessions.advance` -- the states after one more click each (GRU4Rec: one GRU step;
  models without a state: nothing to do);
* :meth:`~LiveSessions.scores` -- next-click scores over the whole catalogue;
* :meth:`~LiveSessions.queries` with :meth:`~LiveSessions.output_layer` -- for dot-product models
  (scores ``q @ W.T + b``: GRU4Rec, SASRec), the query vectors, so the service can take the top k
  with :class:`nextclick.ranking.bounded.TopK` without forming score rows.

This default serves any recommender through :meth:`Recommender.score_batch` over the kept clicks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from nextclick.models.base import Recommender


class LiveSessions:
    """Live sessions of a fitted ``model`` (see the module docstring)."""

    #: Most recent clicks a live session keeps (and a model without a state of its own reads).
    max_clicks: ClassVar[int] = 50

    def __init__(self, model: Recommender) -> None:
        self.model = model

    @property
    def state_size(self) -> int:
        """Length of the float32 state a live session keeps besides its clicks (0: none)."""
        return 0

    def start(self, n: int) -> np.ndarray | None:
        """States of ``n`` new sessions, (n, state_size) zeros; None for a model without one."""
        return np.zeros((n, self.state_size), np.float32) if self.state_size else None

    def advance(self, states: np.ndarray | None, new_items: np.ndarray) -> np.ndarray | None:
        """States (B, state_size) after one more click per session: ``new_items`` (B,) internal
        indices, 0 for an unknown item (that session's state is unchanged). Returns a new array."""
        return states

    def scores(self, states: np.ndarray | None, clicks: Sequence[np.ndarray]) -> np.ndarray:
        """Next-click scores (B, n_items + 1), column 0 at -inf, of sessions whose known clicks
        (most recent last, the new click included) are ``clicks`` and states ``states``."""
        return self.model.score_batch([np.asarray(c)[-self.max_clicks :] for c in clicks])

    def output_layer(self) -> tuple[Any, Any] | None:
        """``(W (n_items + 1, d), b (n_items + 1,) or None)`` as float32 torch tensors when the
        scores are ``q @ W.T + b``; None otherwise."""
        return None

    def queries(self, states: np.ndarray | None, clicks: Sequence[np.ndarray]) -> Any:
        """The (B, d) float32 torch query vectors of the sessions (dot-product models only)."""
        raise NotImplementedError(f"{self.model.name} is not a dot-product model")
