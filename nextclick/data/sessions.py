"""Sessions as flat arrays: the in-memory format every model trains and evaluates on.

A :class:`Sessions` object holds all clicks of all sessions concatenated in time order (``items``)
and the start offset of each session (``offsets``, CSR style), with items already mapped to
internal indices (1..n_items, 0 = padding). This is the layout GRU4Rec's session-parallel
mini-batches read directly, and padding into (B, T) tensors is a vectorized gather over it.
Leaf module: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nextclick.data.vocab import ItemVocab


@dataclass
class Sessions:
    """Concatenated sessions. ``items[offsets[s]:offsets[s+1]]`` is session ``s``.

    ``last_only`` marks evaluation data of the leave-one-out protocol: only the last click of
    each sequence is a prediction target (the earlier clicks are the user's history).
    """

    items: np.ndarray  # (N,) int64, 1..n_items
    offsets: np.ndarray  # (S+1,) int64, offsets[0] == 0, offsets[-1] == N
    n_items: int
    session_ids: np.ndarray | None = None  # (S,) original session (or user) ids
    times: np.ndarray | None = None  # (N,) float64 seconds (or line order)
    last_only: bool = False
    vocab: ItemVocab | None = None  # maps indices back to the shop's item ids
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.items = np.asarray(self.items, dtype=np.int64)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or self.offsets.size < 1 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != self.items.size:
            raise ValueError("offsets[-1] must equal the number of clicks")
        if self.items.size and (self.items.min() < 1 or self.items.max() > self.n_items):
            raise ValueError("item indices must lie in 1..n_items (0 is padding)")

    @classmethod
    def from_lists(cls, sessions: list[list[int]], n_items: int | None = None, **kw) -> Sessions:
        """Build from Python lists of internal indices (handy in tests)."""
        lengths = np.array([len(s) for s in sessions], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.fromiter((i for s in sessions for i in s), dtype=np.int64, count=int(offsets[-1]))
        if n_items is None:
            n_items = int(items.max()) if items.size else 0
        return cls(items=items, offsets=offsets, n_items=n_items, **kw)

    @property
    def n_sessions(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def n_events(self) -> int:
        return int(self.items.size)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.n_sessions

    def session(self, s: int) -> np.ndarray:
        return self.items[self.offsets[s] : self.offsets[s + 1]]

    def to_lists(self) -> list[np.ndarray]:
        return [self.session(s) for s in range(self.n_sessions)]

    def consecutive_repeats(self) -> int:
        """Clicks on the same item as the click just before them in the same session."""
        same = self.items[1:] == self.items[:-1]
        same[self.offsets[1:-1] - 1] = False  # a session's first click repeats nothing
        return int(same.sum())

    def session_index(self) -> np.ndarray:
        """(N,) session number of every click."""
        return np.repeat(np.arange(self.n_sessions, dtype=np.int64), self.lengths)

    def item_counts(self) -> np.ndarray:
        """(n_items + 1,) click counts per index (index 0 stays 0)."""
        return np.bincount(self.items, minlength=self.n_items + 1).astype(np.int64)

    def n_predictions(self) -> int:
        """Number of next-click targets the evaluator will score."""
        lengths = self.lengths
        if self.last_only:
            return int(np.count_nonzero(lengths >= 2))
        return int(np.clip(lengths - 1, 0, None).sum())

    def select(self, idx: np.ndarray) -> Sessions:
        """Sessions ``idx`` (indices or boolean mask), in the given order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        lengths = self.lengths[idx]
        new_off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # gather positions: start of each selected session + 0..len-1
        starts = np.repeat(self.offsets[idx], lengths)
        within = np.arange(new_off[-1], dtype=np.int64) - np.repeat(new_off[:-1], lengths)
        pos = starts + within
        return Sessions(
            items=self.items[pos],
            offsets=new_off,
            n_items=self.n_items,
            session_ids=None if self.session_ids is None else self.session_ids[idx],
            times=None if self.times is None else self.times[pos],
            last_only=self.last_only,
            vocab=self.vocab,
            meta=dict(self.meta),
        )

    def prefixes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every evaluation prefix: returns (session, prefix_length, target) arrays.

        For session s of length L the prefixes are its first t clicks for t = 1..L-1 with target
        click t+1 (or only t = L-1 when ``last_only``).
        """
        lengths = self.lengths
        if self.last_only:
            sess = np.flatnonzero(lengths >= 2)
            plen = lengths[sess] - 1
        else:
            n_pred = np.clip(lengths - 1, 0, None)
            sess = np.repeat(np.arange(self.n_sessions), n_pred)
            first = np.concatenate([[0], np.cumsum(n_pred)])[:-1]
            plen = np.arange(int(n_pred.sum()), dtype=np.int64) - np.repeat(first, n_pred) + 1
        targets = self.items[self.offsets[sess] + plen]
        return sess.astype(np.int64), plen.astype(np.int64), targets


def gather_prefixes(
    sessions: Sessions, sess: np.ndarray, plen: np.ndarray, max_len: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flatten prefixes into ``(row, item, pos)`` arrays, vectorized.

    Row ``b`` lists the first ``plen[b]`` clicks of session ``sess[b]`` (only the last ``max_len``
    when given); ``pos`` is the 1-based position within the prefix, so ``pos == plen[row]`` marks
    the most recent click.
    """
    plen = np.asarray(plen, dtype=np.int64)
    take = plen if max_len is None else np.minimum(plen, max_len)
    first = np.concatenate([[0], np.cumsum(take)])[:-1]
    row = np.repeat(np.arange(plen.size, dtype=np.int64), take)
    within = np.arange(int(take.sum()), dtype=np.int64) - first[row]  # 0..take-1
    pos = plen[row] - take[row] + within + 1
    item = sessions.items[sessions.offsets[np.asarray(sess, dtype=np.int64)][row] + pos - 1]
    return row, item, pos
