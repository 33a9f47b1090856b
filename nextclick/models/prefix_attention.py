"""Additive attention of a session prefix over its own clicks, computed on the (query, click)
pairs only: the one home of NARM's local encoder and STAMP's attention memory.

A batch of left-padded windows is packed: the N real clicks, row by row in position order, row b
holding ``n[b]`` of them from offset ``off[b]``. A query reads the clicks of its row up to and
including its own position, so its keys are one contiguous range of the packed clicks. The
weight of query q on click i is the unnormalised ``a_qi = v . sigmoid(K_i + Q_q)`` of both
papers (K and Q already projected, a bias in either), and the pooled value is
``sum_i a_qi V_i``.

A dense (B, t, t) grid would spend almost all of its work on padding and on later clicks: on
sessions of a few clicks in windows of 20, the P pairs are a few percent of B t^2. Here the
cost is O(P d), with one gather and one ``index_add`` (a gather in the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class PrefixPairs:
    """The P (query, click) pairs of a batch, indices into the Q queries and the N packed clicks."""

    query: torch.Tensor  # (P,)
    click: torch.Tensor  # (P,)
    n_queries: int

    @classmethod
    def ranges(cls, start: np.ndarray, count: np.ndarray, device: torch.device) -> PrefixPairs:
        """Query j reads the clicks ``start[j] .. start[j] + count[j] - 1`` (``count`` may be 0)."""
        count = np.asarray(count, dtype=np.int64)
        q = np.repeat(np.arange(count.size), count)
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        click = np.repeat(np.asarray(start, dtype=np.int64), count) + within
        return cls(torch.from_numpy(q).to(device), torch.from_numpy(click).to(device), int(count.size))

    @classmethod
    def every_prefix(cls, n: np.ndarray, device: torch.device) -> PrefixPairs:
        """One query per packed click, reading its row's clicks up to and including itself."""
        n = np.asarray(n, dtype=np.int64)
        off = np.cumsum(n) - n
        start = np.repeat(off, n)
        return cls.ranges(start, np.arange(int(n.sum())) - start + 1, device)

    @classmethod
    def last(cls, n: np.ndarray, device: torch.device) -> PrefixPairs:
        """One query per row, reading all of the row's clicks (none for an empty row)."""
        n = np.asarray(n, dtype=np.int64)
        return cls.ranges(np.cumsum(n) - n, n, device)

    def weights(self, keys: torch.Tensor, queries: torch.Tensor, v: nn.Linear) -> torch.Tensor:
        """(P,) ``v . sigmoid(keys[click] + queries[query])`` for (N, h) keys and (Q, h) queries."""
        return v(torch.sigmoid(keys[self.click] + queries[self.query])).squeeze(-1)

    def pool(self, weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(Q, d): each query's weighted sum of the (N, d) values of its clicks (0 with none)."""
        out = values.new_zeros(self.n_queries, values.shape[-1])
        return out.index_add_(0, self.query, weights[:, None] * values[self.click])

    def dense(self, weights: torch.Tensor, n: np.ndarray, t: int) -> torch.Tensor:
        """(B, t, t) the weights in the left-padded layout (query slot, click slot), 0 off the
        pairs; for pairs of :meth:`every_prefix` over rows of ``n`` clicks in windows of ``t``."""
        n = np.asarray(n, dtype=np.int64)
        row = np.repeat(np.arange(n.size), n)
        slot = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n) + np.repeat(t - n, n)
        row_t, slot_t = torch.from_numpy(row), torch.from_numpy(slot)
        q, c = self.query.cpu(), self.click.cpu()
        out = torch.zeros(n.size, t, t, dtype=weights.dtype)
        out[row_t[q], slot_t[q], slot_t[c]] = weights.detach().cpu().to(out.dtype)
        return out
