"""Adagrad with momentum, compiled: on a flat vector (the GRU weights) and on the rows of an item
matrix that a step touched. A row-sparse update sums the gradient rows of repeated items first
(the update is non-linear), then updates the accumulator, velocity and weights of each touched
row in one pass; untouched rows are never read.

The update (the official code's): ``acc += g^2; v = m v - lr g / sqrt(acc); w += v``, or with
``nesterov`` ``w += m v - lr g / sqrt(acc)``; ``acc`` starts at ``eps``. A momentum array of
width 0 means no momentum (``w -= lr g / sqrt(acc)``).
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT
from nextclick.models.gru4rec.kernels.blas import span


class AdagradStep(NamedTuple):
    """The optimiser's hyper-parameters for one update."""

    lr: float
    momentum: float
    nesterov: bool


class RowParts(NamedTuple):
    """An item matrix, its optimiser state, one step's gradient rows in two parts and the scratch
    that coalescing them needs.

    ``p``, ``acc`` (n_rows, width), ``mom`` (same, or (n_rows, 0): no momentum), ``pos`` (n_rows,)
    int32 all -1 between steps; ``(idx0, g0)`` row indices and gradient rows of full width (``g0``
    is scratch: repeated items are summed into it in place), ``(idx1, g1)`` a second part, possibly
    empty or narrower; ``first`` (len(idx0),), ``xrows`` (len(idx1),) int64 and ``xbuf`` (len(idx1),
    width) scratch.
    """

    p: np.ndarray
    acc: np.ndarray
    mom: np.ndarray
    pos: np.ndarray
    idx0: np.ndarray
    g0: np.ndarray
    idx1: np.ndarray
    g1: np.ndarray
    first: np.ndarray
    xrows: np.ndarray
    xbuf: np.ndarray


@numba.njit(inline="always", **_JIT)
def _update(p, acc, mom, g, lr32, m32, use_mom, nesterov):  # type: ignore[no-untyped-def]
    for i in range(p.shape[0]):
        gi = g[i]
        a = acc[i] + gi * gi
        acc[i] = a
        step = gi / np.sqrt(a)
        if use_mom:
            v = m32 * mom[i] - lr32 * step
            mom[i] = v
            p[i] += (m32 * v - lr32 * step) if nesterov else v
        else:
            p[i] -= lr32 * step


@numba.njit(**_JIT)
def adagrad_dense(p: np.ndarray, acc: np.ndarray, mom: np.ndarray, g: np.ndarray, lr: float, m: float, nesterov: bool) -> None:
    """Flat vectors: ``acc += g^2; v = m v - lr g / sqrt(acc); p += v`` (``p += m v - lr g /
    sqrt(acc)`` with ``nesterov``; ``mom`` empty: no momentum, ``p -= lr g / sqrt(acc)``)."""
    use_mom = mom.shape[0] > 0  # type: ignore[union-attr]
    _update(p, acc, mom, g, np.float32(lr), np.float32(m), use_mom, nesterov)


@numba.njit(**_JIT)
def _coalesce(pos: np.ndarray, rows: np.ndarray, buf: np.ndarray, n: int, idx: np.ndarray, g: np.ndarray) -> int:
    """Add ``g[k]`` into the buffer row of item ``idx[k]``. ``pos`` maps item -> buffer row (-1:
    none yet), ``rows`` lists the items in buffer order, ``n`` rows are in use; ``g`` may be
    narrower than ``buf`` (its remaining columns get nothing). Returns the new ``n``."""
    w = g.shape[1]
    for k in range(idx.shape[0]):
        r = idx[k]
        j = pos[r]
        if j < 0:
            j = n
            pos[r] = j
            rows[j] = r
            buf[j, :] = 0.0
            n += 1
        for c in range(w):
            buf[j, c] += g[k, c]
    return n


@numba.njit(**_JIT)
def _update_rows(
    p: np.ndarray, acc: np.ndarray, mom: np.ndarray, pos: np.ndarray, rows: np.ndarray, buf: np.ndarray, n: int,
    hp: AdagradStep,
) -> None:
    """Adagrad-with-momentum update of the ``n`` buffered rows (``mom`` of width 0: no momentum);
    resets their ``pos`` entries."""
    lr32, m32 = np.float32(hp.lr), np.float32(hp.momentum)
    use_mom = mom.shape[1] > 0
    for j in range(n):
        r = rows[j]
        pos[r] = -1
        _update(p[r], acc[r], mom[r], buf[j], lr32, m32, use_mom, hp.nesterov)


@numba.njit(**_JIT)
def coalesce_in_place(rp: RowParts) -> tuple[int, int]:
    """Sums a repeated item's rows of ``g0`` into its first row there, and the second part's rows
    (``g1``, possibly narrower) into that row too, or, for items the first part lacks, into
    ``xbuf``. Lists the ``nf`` first rows in ``first`` and the ``nx`` items of ``xbuf`` in
    ``xrows``; returns ``(nf, nx)``. ``pos`` (item -> ``k`` >= 0: row ``k`` of ``g0``, <= -2: row
    ``-2 - pos`` of ``xbuf``, -1: none) is left set for those items (:func:`apply_rows` resets
    it). Saves copying the first part (a step's output rows) into a buffer."""
    pos, idx0, g0, idx1, g1, first, xrows, xbuf = rp.pos, rp.idx0, rp.g0, rp.idx1, rp.g1, rp.first, rp.xrows, rp.xbuf
    nf = 0
    for k in range(idx0.shape[0]):
        r = idx0[k]
        j = pos[r]
        if j < 0:
            pos[r] = k
            first[nf] = k
            nf += 1
        else:
            g0[j] += g0[k]
    w = g1.shape[1]
    nx = 0
    for k in range(idx1.shape[0]):
        r = idx1[k]
        j = pos[r]
        if j >= 0:
            g0[j, :w] += g1[k]
        elif j == -1:
            pos[r] = -2 - nx
            xrows[nx] = r
            xbuf[nx, :] = 0.0
            xbuf[nx, :w] = g1[k]
            nx += 1
        else:
            xbuf[-2 - j, :w] += g1[k]
    return nf, nx



@numba.njit(**_JIT)
def apply_rows(t: int, parts: int, r: RowParts, nf: int, nx: int, hp: AdagradStep) -> None:
    """Share ``t`` of ``parts`` of the rows :func:`coalesce_in_place` coalesced: updates them and
    resets their ``pos`` entries."""
    p, acc, mom, pos, idx0, g0, first, xrows, xbuf = r.p, r.acc, r.mom, r.pos, r.idx0, r.g0, r.first, r.xrows, r.xbuf
    lr32, m32, nesterov = np.float32(hp.lr), np.float32(hp.momentum), hp.nesterov
    use_mom = mom.shape[1] > 0
    lo, hi = span(t, parts, nf)
    for u in range(lo, hi):
        k = first[u]
        ri = idx0[k]
        pos[ri] = -1
        _update(p[ri], acc[ri], mom[ri], g0[k], lr32, m32, use_mom, nesterov)
    lo, hi = span(t, parts, nx)
    for u in range(lo, hi):
        ri = xrows[u]
        pos[ri] = -1
        _update(p[ri], acc[ri], mom[ri], xbuf[u], lr32, m32, use_mom, nesterov)


@numba.njit(**_JIT)
def _update_in_place(r: RowParts, hp: AdagradStep) -> None:
    """:func:`coalesce_in_place`, then :func:`apply_rows` in one block; ``pos`` is left all -1."""
    nf, nx = coalesce_in_place(r)
    apply_rows(0, 1, r, nf, nx, hp)


class RowUpdater:
    """Row-sparse Adagrad with momentum for one item matrix ``p`` (n_rows, width).

    Keeps the coalescing scratch: an item -> buffer-row map (``n_rows`` int32) and a buffer of
    as many gradient rows as a step hands in, so its memory does not grow with the catalogue.
    """

    def __init__(self, p: np.ndarray, acc: np.ndarray, mom: np.ndarray) -> None:
        self.p, self.acc, self.mom = p, acc, mom  # mom: same shape as p, or (n_rows, 0) without momentum
        self.pos = np.full(p.shape[0], -1, np.int32)
        self.rows = np.zeros(0, np.int64)
        self.buf = np.zeros((0, p.shape[1]), np.float32)

    def update(self, parts: list[tuple[np.ndarray, np.ndarray]], hp: AdagradStep) -> None:
        """``parts``: (row indices (k,) int64, gradient rows (k, <= width) float32) pairs; indices
        may repeat within and across parts (their gradients are summed first)."""
        k = sum(int(i.shape[0]) for i, _ in parts)
        if k > self.buf.shape[0]:
            self.rows = np.zeros(k, np.int64)
            self.buf = np.zeros((k, self.p.shape[1]), np.float32)
        n = 0
        for idx, g in parts:
            n = _coalesce(self.pos, self.rows, self.buf, n, idx, g)
        _update_rows(self.p, self.acc, self.mom, self.pos, self.rows, self.buf, n, hp)

    def update_scratch(self, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray, hp: AdagradStep) -> None:
        """:meth:`update` with two parts, ``(idx0, g0)`` (full width) and ``(idx1, g1)`` (may be
        empty or narrower), where ``g0`` is scratch: the rows of repeated items are summed into it
        in place instead of into a copy."""
        _update_in_place(self.parts(idx0, g0, idx1, g1), hp)

    def parts(self, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray) -> RowParts:
        """The matrix, its state and these two parts with scratch sized to fit (see :class:`RowParts`)."""
        k1 = int(idx1.shape[0])
        if k1 > self.buf.shape[0]:
            self.rows = np.zeros(k1, np.int64)
            self.buf = np.zeros((k1, self.p.shape[1]), np.float32)
        first = np.empty(idx0.shape[0], np.int64)
        return RowParts(self.p, self.acc, self.mom, self.pos, idx0, g0, idx1, g1, first, self.rows, self.buf)
