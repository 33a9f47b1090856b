"""Turning sessions into model inputs. Leaf module: numpy only (models convert to tensors).

Two layouts:

* :func:`pad_prefixes` / :func:`pad_sessions` / :func:`pad_arrays` -- fixed-shape (B, T) index
  matrices, LEFT-padded with 0, keeping the most recent T clicks (what SASRec reads), and
  :func:`trim_padding` to drop the columns that are padding in every row;
* :class:`SessionParallelBatches` -- GRU4Rec's session-parallel mini-batches: B slots each
  holding one session; every step feeds the current click of every slot and asks for the next
  one; a slot whose session ends is refilled with the next session and flagged in ``reset`` so the
  model zeroes that row of its hidden state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from nextclick.data.sessions import Sessions


def pad_prefixes(items: np.ndarray, starts: np.ndarray, lengths: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad the sequences ``items[starts[b] : starts[b] + lengths[b]]`` to width ``max_len``.

    Sequences longer than ``max_len`` keep their most recent ``max_len`` clicks. Returns
    ``(x, kept)``: ``x`` is (B, max_len) int64 with 0 as padding on the left, ``kept`` the number
    of real clicks per row (``min(length, max_len)``). Vectorized: one gather, no Python loop.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    kept = np.minimum(lengths, max_len)
    ends = starts + lengths  # exclusive
    cols = np.arange(max_len, dtype=np.int64) - max_len  # -T .. -1
    pos = ends[:, None] + cols[None, :]  # (B, T) positions of the last T clicks
    valid = cols[None, :] >= -kept[:, None]
    x = np.where(valid, items[np.where(valid, pos, 0)] if items.size else 0, 0)
    return x.astype(np.int64), kept


def pad_sessions(sessions: Sessions | Sequence[Sequence[int]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad whole sessions to (B, max_len); see :func:`pad_prefixes`."""
    if not isinstance(sessions, Sessions):
        sessions = Sessions.from_lists([list(s) for s in sessions], n_items=max([max(s, default=0) for s in sessions], default=0))
    return pad_prefixes(sessions.items, sessions.offsets[:-1], sessions.lengths, max_len)


def pad_arrays(seqs: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad a list of 1-D index arrays to (B, max_len); see :func:`pad_prefixes`."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]) if seqs else np.zeros(0, np.int64)
    return pad_prefixes(items, np.cumsum(lengths) - lengths, lengths, max_len)


def trim_padding(x: np.ndarray, width: int | None = None) -> np.ndarray:
    """The last ``width`` columns of a left-padded (B, T) matrix; by default as many as the
    longest row has real clicks (at least one), so no column is padding in every row."""
    if width is None:
        width = max(int((x != 0).sum(1).max()), 1) if x.size else 1
    return x[:, x.shape[1] - width :]


def padding_mask(x: np.ndarray) -> np.ndarray:
    """True where ``x`` holds a real click (not padding)."""
    return x != 0


@dataclass
class Step:
    """One session-parallel step.

    Apply ``keep`` first (when not None, the batch shrank at the end of the data: keep these rows
    of the previous hidden state, in this order), then zero the rows where ``reset`` is True
    (a new session starts in that slot), then feed ``inputs`` and predict ``targets``.
    """

    inputs: np.ndarray  # (B,) int64 current clicks
    targets: np.ndarray  # (B,) int64 next clicks
    reset: np.ndarray  # (B,) bool: slot starts a new session at this step
    keep: np.ndarray | None  # rows of the previous step that continue, or None (all)


class SessionParallelBatches:
    """Session-parallel mini-batch iterator (Hidasi et al., ICLR 2016, Sec. 3.1.1).

    Sessions shorter than 2 clicks have no target and are skipped. ``order`` is ``"random"``
    (a new permutation of sessions every epoch, from ``seed``) or ``"given"`` (the data's order,
    i.e. time order for prepared data). With ``drop_tail=True`` iteration stops as soon as a slot
    cannot be refilled (the official implementation's behaviour); by default the batch shrinks
    instead so every click of every session is used once per epoch.
    """

    def __init__(
        self,
        sessions: Sessions,
        batch_size: int,
        order: str = "random",
        seed: int = 0,
        drop_tail: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if order not in ("random", "given"):
            raise ValueError(f"order must be 'random' or 'given', got {order!r}")
        self.sessions = sessions
        self.batch_size = batch_size
        self.order = order
        self.drop_tail = drop_tail
        self._rng = np.random.default_rng(seed)
        self._usable = np.flatnonzero(sessions.lengths >= 2)

    @property
    def n_events(self) -> int:
        """Training pairs (click, next click) per epoch when nothing is dropped."""
        return int((self.sessions.lengths[self._usable] - 1).sum())

    def __iter__(self) -> Iterator[Step]:
        sess = self._usable
        if self.order == "random":
            sess = self._rng.permutation(sess)
        offsets, items = self.sessions.offsets, self.sessions.items
        n = sess.size
        b = min(self.batch_size, n)
        if b == 0:
            return
        pos = offsets[sess[:b]].copy()  # current click position of each slot
        end = offsets[sess[:b] + 1].copy()  # exclusive end of each slot's session
        nxt = b  # next session to hand out
        reset = np.ones(b, dtype=bool)
        keep: np.ndarray | None = None
        while pos.size:
            yield Step(items[pos], items[pos + 1], reset, keep)
            pos = pos + 1
            done = np.flatnonzero(pos + 1 >= end)
            reset = np.zeros(pos.size, dtype=bool)
            keep = None
            if done.size:
                n_refill = min(done.size, n - nxt)
                if n_refill < done.size and self.drop_tail:
                    return
                refill = done[:n_refill]
                new = sess[nxt : nxt + n_refill]
                nxt += n_refill
                pos[refill] = offsets[new]
                end[refill] = offsets[new + 1]
                reset[refill] = True
                if n_refill < done.size:
                    alive = np.ones(pos.size, dtype=bool)
                    alive[done[n_refill:]] = False
                    keep = np.flatnonzero(alive)
                    pos, end, reset = pos[keep], end[keep], reset[keep]
