"""GRU4Rec's negatives: shared by a mini-batch and drawn from popularity ** alpha with Walker's
alias method (exact, O(1) per draw; :mod:`nextclick.data.sampling`), in advance, from a store
that refills itself."""

from __future__ import annotations

import numpy as np
import torch

from nextclick.data.sampling import alias_draw, alias_table


class SampleStore:
    """Negatives drawn in advance from ``weights`` (popularity ** alpha), handed out a row at a time.

    ``size // n_sample`` rows of ``n_sample`` item indices are drawn at once; when they are used
    up the store is refilled. ``next()`` returns a (n_sample,) int32 tensor.
    """

    def __init__(self, weights: np.ndarray, n_sample: int, size: int, rng: np.random.Generator) -> None:
        self.n_sample = int(n_sample)
        self.rows = max(1, int(size) // max(self.n_sample, 1))
        prob, alias = alias_table(weights)
        self.prob, self.alias = prob.astype(np.float32), alias.astype(np.int32)  # half the bytes per draw
        self.rng = rng
        self.refills = 0
        self._ptr = self.rows
        self._buf: torch.Tensor | None = None

    def draw(self, n: int) -> np.ndarray:
        """``n`` item indices (int32), drawn in chunks so that the temporaries stay small."""
        return alias_draw(self.rng, self.prob, self.alias, np.empty(n, np.int32))

    def next(self) -> torch.Tensor:
        if self._ptr >= self.rows:
            self._buf = torch.from_numpy(self.draw(self.rows * self.n_sample).reshape(self.rows, self.n_sample))
            self._ptr = 0
            self.refills += 1
        row = self._buf[self._ptr]  # type: ignore[index]
        self._ptr += 1
        return row

