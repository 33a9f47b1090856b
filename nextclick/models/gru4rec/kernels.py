"""Compiled (numba) loops of GRU4Rec's training step.

Each one fuses what would otherwise be a chain of whole-array tensor operations (each reading and
writing the full arrays) into one or two passes over the data a step touches:

* :class:`RowUpdater` -- Adagrad with momentum on the rows of an item matrix that a step touched:
  the gradient rows of repeated indices are summed first (the update is non-linear), then the
  accumulator, velocity and weights of each touched row are updated in one pass. Untouched rows
  are never read.
* :func:`adagrad_dense` -- the same update on a flat vector (the GRU weights).
* :func:`vexp` -- an exponential the compiler vectorises (numba's own calls libm value by value).
* :func:`xe_rows` and :func:`bpr_max_rows` -- the two losses and their gradients, a row at a time.
* :func:`step_columns`, :func:`gru_forward`, :func:`gru_backward`, :func:`dropout_mask` -- a
  step's output columns (distinct negatives with their counts), a GRU layer's gates forward and
  backward, inverted dropout from counter-based random bits.
* :func:`gather_rows_par`, :func:`layer_forward_par`, :func:`loss_phase_par`,
  :func:`backward_products_par`, :func:`update_phase_par` -- the phases of a training step, each
  split over numba's threads (row blocks of the batch, column blocks of the output rows, or
  separate tasks) with the matrix products inside calling BLAS on blocks of the arrays
  (:func:`_gemm`: scipy's ``sgemm`` with strides, no copies); with one thread :class:`Phases`
  runs their blocks directly.

They run on zero-copy numpy views of the tensors, the phases on as many of numba's threads as
``numba.set_num_threads`` allows (GRU4Rec sets its ``n_threads`` and keeps BLAS single-threaded
meanwhile). Compilation and its disk cache: :mod:`nextclick.compiled`. The arithmetic is float32
like the tensors (row sums of the losses in float64), so results equal the tensor-operation form
up to rounding.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding
import numba
import numpy as np
from numba import types

from nextclick.compiled import JIT as _JIT


@numba.njit(inline="always", **_JIT)
def _span(t: int, parts: int, n: int) -> tuple[int, int]:
    """Block ``t`` of ``n`` items shared out in ``parts`` nearly equal blocks: ``(lo, hi)``."""
    return t * n // parts, (t + 1) * n // parts


# ---------------------------------------------------------------------------------- Adagrad
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
    lr: float, m: float, nesterov: bool,
) -> None:
    """Adagrad-with-momentum update of the ``n`` buffered rows (``mom`` of width 0: no momentum);
    resets their ``pos`` entries."""
    lr32, m32 = np.float32(lr), np.float32(m)
    use_mom = mom.shape[1] > 0
    for j in range(n):
        r = rows[j]
        pos[r] = -1
        _update(p[r], acc[r], mom[r], buf[j], lr32, m32, use_mom, nesterov)


@numba.njit(**_JIT)
def _coalesce_in_place(
    pos: np.ndarray, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray, first: np.ndarray,
    xrows: np.ndarray, xbuf: np.ndarray,
) -> tuple[int, int]:
    """The coalescing half of :func:`_update_in_place`: sums a repeated item's rows of ``g0`` into
    its first row there, and the second part's rows (``g1``, possibly narrower) into that row too,
    or, for items the first part lacks, into ``xbuf``. Lists the ``nf`` first rows in ``first`` and
    the ``nx`` items of ``xbuf`` in ``xrows``; returns ``(nf, nx)``. ``pos`` (item -> ``k`` >= 0: row
    ``k`` of ``g0``, <= -2: row ``-2 - pos`` of ``xbuf``, -1: none) is left set for those items
    (:func:`_apply_rows` resets it)."""
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
def _apply_rows(
    t: int, parts: int, p: np.ndarray, acc: np.ndarray, mom: np.ndarray, pos: np.ndarray, idx0: np.ndarray,
    g0: np.ndarray, first: np.ndarray, nf: int, xrows: np.ndarray, xbuf: np.ndarray, nx: int,
    lr: float, m: float, nesterov: bool,
) -> None:
    """Share ``t`` of ``parts`` of the coalesced rows of :func:`_coalesce_in_place`: updates them
    and resets their ``pos`` entries."""
    lr32, m32 = np.float32(lr), np.float32(m)
    use_mom = mom.shape[1] > 0
    lo, hi = _span(t, parts, nf)
    for u in range(lo, hi):
        k = first[u]
        r = idx0[k]
        pos[r] = -1
        _update(p[r], acc[r], mom[r], g0[k], lr32, m32, use_mom, nesterov)
    lo, hi = _span(t, parts, nx)
    for u in range(lo, hi):
        r = xrows[u]
        pos[r] = -1
        _update(p[r], acc[r], mom[r], xbuf[u], lr32, m32, use_mom, nesterov)


@numba.njit(**_JIT)
def _update_in_place(
    p: np.ndarray, acc: np.ndarray, mom: np.ndarray, pos: np.ndarray, idx0: np.ndarray, g0: np.ndarray,
    idx1: np.ndarray, g1: np.ndarray, first: np.ndarray, xrows: np.ndarray, xbuf: np.ndarray,
    lr: float, m: float, nesterov: bool,
) -> None:
    """:func:`_coalesce` and :func:`_update_rows` for two parts, using the first part's gradient
    ``g0`` (full width) as the buffer (:func:`_coalesce_in_place`, then :func:`_apply_rows`). Saves
    copying the first part (a step's output rows, ~1.5 MB) into the buffer. ``pos`` is left all
    -1. ``first``, ``xrows``: int64 scratch (len(idx0), len(idx1))."""
    nf, nx = _coalesce_in_place(pos, idx0, g0, idx1, g1, first, xrows, xbuf)
    _apply_rows(0, 1, p, acc, mom, pos, idx0, g0, first, nf, xrows, xbuf, nx, lr, m, nesterov)


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

    def update(self, parts: list[tuple[np.ndarray, np.ndarray]], lr: float, m: float, nesterov: bool) -> None:
        """``parts``: (row indices (k,) int64, gradient rows (k, <= width) float32) pairs; indices
        may repeat within and across parts (their gradients are summed first)."""
        k = sum(int(i.shape[0]) for i, _ in parts)
        if k > self.buf.shape[0]:
            self.rows = np.zeros(k, np.int64)
            self.buf = np.zeros((k, self.p.shape[1]), np.float32)
        n = 0
        for idx, g in parts:
            n = _coalesce(self.pos, self.rows, self.buf, n, idx, g)
        _update_rows(self.p, self.acc, self.mom, self.pos, self.rows, self.buf, n, lr, m, nesterov)

    def update_scratch(
        self, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray, lr: float, m: float, nesterov: bool
    ) -> None:
        """:meth:`update` with two parts, ``(idx0, g0)`` (full width) and ``(idx1, g1)`` (may be
        empty or narrower), where ``g0`` is scratch: the rows of repeated items are summed into it
        in place instead of into a copy."""
        _update_in_place(*self.scratch_args(idx0, g0, idx1, g1), lr, m, nesterov)

    def scratch_args(self, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray) -> tuple:
        """The arrays :func:`_update_in_place` takes for these parts (scratch sized to fit)."""
        k1 = int(idx1.shape[0])
        if k1 > self.buf.shape[0]:
            self.rows = np.zeros(k1, np.int64)
            self.buf = np.zeros((k1, self.p.shape[1]), np.float32)
        first = np.empty(idx0.shape[0], np.int64)
        return (self.p, self.acc, self.mom, self.pos, idx0, g0, idx1, g1, first, self.rows, self.buf)


# ---------------------------------------------------------------------------------- exponentials
_F = np.float32


@numba.njit(fastmath={"contract"}, **_JIT)
def vexp(x: np.ndarray, y: np.ndarray, e: np.ndarray, fast: bool) -> None:
    """``y = exp(x)`` over 1-D arrays; ``e``: int32 scratch of the same size. ``y`` must not be
    ``x``: the vectorised loop checks for overlap at run time and runs one value at a time if so.

    ``fast`` (float32 only): a loop the compiler vectorises (numba calls the scalar libm ``expf``
    otherwise, ~3.7 ns a value here against ~0.7): ``exp(x) = 2^t exp(r)`` with ``t`` the nearest
    integer to ``x / ln 2``, ``r = x - t ln 2`` in ``[-ln 2 / 2, ln 2 / 2]`` (``ln 2`` split in two
    for exactness), ``exp(r)`` by its Taylor polynomial to degree 7 (truncation below 1e-8
    relative) and ``2^t`` written as float32 bits. Within 1 ulp of the exact value over the
    clamped range ``[-87, 88]``; below it returns ``exp(-87)`` (~1.6e-38) instead of 0 or a
    subnormal. Otherwise ``np.exp`` value by value.
    """
    n = x.shape[0]
    if not fast:
        for i in range(n):
            y[i] = np.exp(x[i])
        return
    for i in range(n):
        v = min(max(x[i], _F(-87.0)), _F(88.0))
        t = np.floor(v * _F(1.4426950408889634) + _F(0.5))
        r = v - t * _F(0.693145751953125) - t * _F(1.4286068203094173e-06)
        p = r * _F(1.0 / 5040.0) + _F(1.0 / 720.0)
        p = p * r + _F(1.0 / 120.0)
        p = p * r + _F(1.0 / 24.0)
        p = p * r + _F(1.0 / 6.0)
        p = p * r + _F(0.5)
        p = p * r + _F(1.0)
        y[i] = p * r + _F(1.0)
        e[i] = (np.int32(t) + np.int32(127)) << np.int32(23)
    ef = e.view(np.float32)
    for i in range(n):
        y[i] *= ef[i]


@numba.njit(fastmath=True, **_JIT)
def _max(x: np.ndarray) -> float:
    """The largest of a 1-D array's values, vectorised (no NaN expected: a NaN score fails training
    at the loss check anyway)."""
    c = x[0]
    for j in range(x.shape[0]):
        c = max(c, x[j])
    return c


# ---------------------------------------------------------------------------------- losses
def constants(dtype: np.dtype, a: float, bpreg: float, scale: float) -> np.ndarray:
    """The BPR-max kernel's scalars in the scores' dtype (so float32 scores stay float32)."""
    return np.array([a, bpreg, scale, 0.0, 1.0, 2.0, 80.0], dtype=dtype)


@numba.njit(fastmath=True, **_JIT)  # finite scores: a NaN fails training at the loss check anyway
def xe_rows(R: np.ndarray, lq: np.ndarray, scale: float, eps: float, fast: bool, out: np.ndarray, off: int) -> float:
    """Cross-entropy over each row's softmax, row ``i``'s target column ``off + i``, per row:
    ``z = R - lq`` (``lq`` empty: no correction), ``p = softmax(z)``; returns ``-scale * sum_i
    log(p_ii + eps)`` and writes ``scale * (p - onehot)`` to ``out``. Sums in float64; ``fast``:
    float32 scores, exponentials by :func:`vexp`'s vectorised loop."""
    b, M = R.shape
    use_lq = lq.shape[0] > 0
    v = np.empty(M, R.dtype)
    z = np.empty(M, R.dtype)
    e = np.empty(M, np.int32)
    tmp = np.empty(1, R.dtype)
    loss = 0.0
    for i in range(b):
        c = R[i, 0] - lq[0] if use_lq else R[i, 0]
        for j in range(M):
            vj = R[i, j] - lq[j] if use_lq else R[i, j]
            v[j] = vj
            c = max(c, vj)
        for j in range(M):
            v[j] -= c
        vexp(v, z, e, fast)
        S = 0.0
        for j in range(M):
            S += z[j]
        loss -= np.log(z[off + i] / S + eps)
        tmp[0] = scale / S
        inv = tmp[0]
        for j in range(M):
            out[i, j] = z[j] * inv
        out[i, off + i] -= scale
    return loss * scale


@numba.njit(fastmath={"reassoc", "contract"}, **_JIT)
def bpr_max_rows(
    R: np.ndarray, w: np.ndarray, k: np.ndarray, eps: float, fast: bool, out: np.ndarray, off: int
) -> float:
    """:func:`nextclick.models.gru4rec.bpr_max_loss_grad`, one row at a time, every pass in cache.

    ``R`` raw scores, ``w`` the negatives' weights (empty: all 1), ``k`` :func:`constants`, ``fast``
    as in :func:`xe_rows`. Row
    ``i``'s target is column ``off + i``. Per row: ``o = elu(R)`` (``R`` when ``a`` is 0), ``x = exp(o -
    c)`` with ``c`` the largest score among the negatives (so their softmax stays defined however far
    the target leads), then the sums and the gradient; ``sigmoid(t - o_j) = 1 / (1 + x_j exp(c -
    t))`` reuses the softmax's exponentials. Writes dL/dR to ``out`` and returns the loss.
    """
    b, M = R.shape
    use_w = w.shape[0] > 0
    a, bpreg, scale, zero, one, two, big = k[0], k[1], k[2], k[3], k[4], k[5], k[6]
    O = np.empty(M, R.dtype)
    X = np.empty(M, R.dtype)
    T = np.empty(M, R.dtype)
    e = np.empty(M, np.int32)
    loss = 0.0
    tmp = np.empty(4, dtype=R.dtype)
    for i in range(b):
        if a > zero:
            for j in range(M):
                T[j] = min(R[i, j], zero)
            vexp(T, X, e, fast)
            for j in range(M):
                r = R[i, j]
                O[j] = r if r > zero else a * (X[j] - one)
        else:
            for j in range(M):
                O[j] = R[i, j]
        ti = off + i
        t = O[ti]
        O[ti] = -3.0e38  # the softmax runs over the negatives: their maximum (finite: _max is fast-math)
        c = _max(O)
        O[ti] = t
        for j in range(M):
            T[j] = O[j] - c
        vexp(T, X, e, fast)
        kt = np.exp(min(c - t, big))
        S = 0.0  # sums over the negatives in float64
        SA = 0.0
        SB = 0.0
        SC = 0.0
        for j in range(M):
            ex = X[j] * w[j] if use_w else X[j]
            if j == ti:
                ex = zero
            sig = one / (one + X[j] * kt)
            o = O[j]
            S += ex
            SA += ex * sig
            SB += ex * sig * sig
            SC += ex * o * o
        A = SA / S
        C = SC / S
        Ae = A + eps
        loss += k[1] * C - np.log(Ae)
        inv = k[2] / Ae  # float64
        tmp[0], tmp[1], tmp[2], tmp[3] = A, C, inv, 1.0 / S  # the row's scalars in the scores' dtype
        A_, C_, inv_, iS = tmp[0], tmp[1], tmp[2], tmp[3]
        for j in range(M):
            s = (X[j] * w[j] if use_w else X[j]) * iS
            sig = one / (one + X[j] * kt)
            o = O[j]
            g = s * ((A_ - sig * sig) * inv_ + bpreg * scale * (o * o + two * o - C_))
            if a > zero and R[i, j] <= zero:
                g *= o + a  # d elu / dR = a exp(R) = elu(R) + a
            out[i, j] = g
        g_t = -(A - SB / S) * inv
        if a > zero and R[i, ti] <= zero:
            g_t *= O[ti] + a
        out[i, ti] = g_t
    return loss * k[2]


# ---------------------------------------------------------------------------------- output columns
@numba.njit(**_JIT)
def step_columns(
    y: np.ndarray, neg: np.ndarray, counts: np.ndarray, xe: bool, logq_t: np.ndarray, logq_s: np.ndarray,
    y_all: np.ndarray, lq: np.ndarray, w: np.ndarray,
) -> int:
    """A training step's output columns: the targets ``y`` (b,), then each distinct drawn negative
    once, in item order (``counts``: zeros, one per item; left zero). Writes ``y_all``; for the
    cross-entropy ``lq``, what is subtracted from each column's score: ``logq_t[y]`` for targets
    and ``logq_s[item] - log(count)`` for negatives (a negative drawn c times enters the softmax c
    times; empty ``logq_t`` / ``logq_s``: no logQ correction), else ``w``, how many draws each
    column stands for (1 for targets). Returns the number of columns. O(draws + items)."""
    b = y.shape[0]
    use_t, use_s = logq_t.shape[0] > 0, logq_s.shape[0] > 0
    for t in range(b):
        y_all[t] = y[t]
        if xe:
            lq[t] = logq_t[y[t]] if use_t else 0.0
        else:
            w[t] = 1.0
    for t in range(neg.shape[0]):
        counts[neg[t]] += 1
    n = b
    for v in range(counts.shape[0]):
        c = counts[v]
        if c:
            counts[v] = 0
            y_all[n] = v
            if xe:
                lq[n] = (logq_s[v] if use_s else 0.0) - np.log(np.float32(c))
            else:
                w[n] = c
            n += 1
    return n


# ---------------------------------------------------------------------------------- GRU gates
_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)


@numba.njit(**_JIT)
def dropout_mask(key: np.uint64, start: int, thr: np.uint32, keep: float, mask: np.ndarray) -> None:
    """Inverted dropout from counter-based random bits: ``mask[j] = keep`` (``1 / (1 - p)``) where
    ``u_j >= thr`` (``thr = p * 2^32``, rounded: probability ``p`` to within 2^-33), else 0, with
    ``u_j`` the top 32 bits of SplitMix64's output at counter ``start + j`` of stream ``key``
    (``mix(key + (start + j) * gamma)``). A mask element's bits depend only on the key and its
    counter, so any split of the rows over threads draws the same mask; the loop vectorises."""
    k, z0 = _F(keep), _F(0.0)
    base = key + np.uint64(start) * _GAMMA
    for j in range(mask.shape[0]):
        z = base + np.uint64(j) * _GAMMA
        z = (z ^ (z >> _S30)) * _M1
        z = (z ^ (z >> _S27)) * _M2
        z = z ^ (z >> _S31)
        mask[j] = k if np.uint32(z >> _S32) >= thr else z0


@numba.njit(**_JIT)
def _drop_row(key: np.uint64, start: int, thr: np.uint32, keep: float, mask: np.ndarray, row: np.ndarray) -> None:
    """Draw a row's dropout ``mask`` (:func:`dropout_mask`) and apply it to ``row`` in place."""
    dropout_mask(key, start, thr, keep, mask)
    for j in range(row.shape[0]):
        row[j] *= mask[j]


@numba.njit(fastmath={"contract"}, **_JIT)
def gru_forward(
    gx: np.ndarray, gh: np.ndarray, b_hh: np.ndarray, H: np.ndarray, key: np.uint64, row0: int, thr: np.uint32,
    keep: float, rz: np.ndarray, n: np.ndarray, dn: np.ndarray, mask: np.ndarray, h: np.ndarray,
) -> None:
    """A GRU layer's gates from its input and recurrent pre-activations, ``gx`` (b, 3D, input bias
    included) and ``gh`` (b, 3D, without ``b_hh``, which is added in place). Writes ``rz =
    sigmoid(gx + gh)[:, :2D]`` (reset, update), ``n = tanh(gx_n + r * gh_n)``, ``dn = n - H`` and
    ``h = (H + z dn) * mask`` with the dropout mask of :func:`dropout_mask` (stream ``key``, the
    rows being rows ``row0``... of the layer's (b, D) mask; ``mask`` empty: no dropout). float32 (see :func:`vexp`); row slices, so that the loops index
    from 0 and vectorise."""
    b, D = H.shape
    e = np.empty(2 * D, np.int32)
    s = np.empty(2 * D, gx.dtype)
    x = np.empty(2 * D, gx.dtype)
    v = np.empty(D, gx.dtype)
    drop = mask.shape[0] > 0
    one, two, zero = _F(1.0), _F(2.0), _F(0.0)
    for i in range(b):
        gxi, ghi, rzi = gx[i], gh[i], rz[i]
        for j in range(3 * D):
            ghi[j] += b_hh[j]
        for j in range(2 * D):
            x[j] = -(gxi[j] + ghi[j])
        vexp(x, s, e, True)
        for j in range(2 * D):
            rzi[j] = one / (one + s[j])
        gxn, ghn, r, z = gxi[2 * D :], ghi[2 * D :], rzi[:D], rzi[D:]
        for j in range(D):
            v[j] = gxn[j] + r[j] * ghn[j]
        for j in range(D):  # tanh(v) = sign(v) (1 - exp(-2|v|)) / (1 + exp(-2|v|))
            x[j] = -two * abs(v[j])
        vexp(x[:D], s[:D], e, True)
        Hi, ni, dni, hi = H[i], n[i], dn[i], h[i]
        for j in range(D):
            t = (one - s[j]) / (one + s[j])
            ni[j] = t if v[j] >= zero else -t
        for j in range(D):
            dni[j] = ni[j] - Hi[j]
        for j in range(D):
            hi[j] = Hi[j] + z[j] * dni[j]
        if drop:
            _drop_row(key, (row0 + i) * D, thr, keep, mask[i], hi)


@numba.njit(fastmath={"contract"}, **_JIT)
def gru_backward(
    dh: np.ndarray, mask: np.ndarray, rz: np.ndarray, n: np.ndarray, gh: np.ndarray, dn: np.ndarray,
    dg: np.ndarray, dgh: np.ndarray, db_ih: np.ndarray, db_hh: np.ndarray,
) -> None:
    """Back through a GRU layer's gates: from dL/d(output) ``dh`` (b, D; times ``mask`` when that
    is not empty) to the gradients of the input pre-activations ``dg`` (b, 3D) and of the recurrent
    ones ``dgh`` (``dg`` with the candidate part times ``r``), and the two bias gradients (their
    column sums). The tensors are :func:`gru_forward`'s (``gh`` with its bias)."""
    b, D = dn.shape
    drop = mask.shape[0] > 0
    d = np.empty(D, dh.dtype)
    one = _F(1.0)
    db_ih[:] = 0.0
    db_hh[:] = 0.0
    for i in range(b):  # short loops over few arrays each: the compiler vectorises those
        dhi = dh[i]
        if drop:
            mi = mask[i]
            for j in range(D):
                d[j] = dhi[j] * mi[j]
        else:
            d[:] = dhi
        r, z, ni, dni, ghn = rz[i, :D], rz[i, D:], n[i], dn[i], gh[i, 2 * D :]
        gr, gz, gn = dg[i, :D], dg[i, D : 2 * D], dg[i, 2 * D :]
        for j in range(D):
            gz[j] = d[j] * dni[j] * z[j] * (one - z[j])
        for j in range(D):
            gn[j] = d[j] * z[j] * (one - ni[j] * ni[j])
        for j in range(D):
            gr[j] = gn[j] * ghn[j] * r[j] * (one - r[j])
        dgi, dghi = dg[i], dgh[i]
        dghi[: 2 * D] = dgi[: 2 * D]
        hn = dghi[2 * D :]
        for j in range(D):
            hn[j] = gn[j] * r[j]
        for j in range(3 * D):
            db_ih[j] += dgi[j]
        for j in range(3 * D):
            db_hh[j] += dghi[j]


# ---------------------------------------------------------------------------------- BLAS on strided blocks
def _sgemm_address() -> int:
    """Address of the Fortran ``sgemm`` in scipy's BLAS, the one numba's ``np.dot`` calls; checks
    that it takes 32-bit integers (an ILP64 build would read past the ones :func:`_gemm` hands it)."""
    from numba.extending import get_cython_function_address
    from scipy.linalg import cython_blas

    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    signature = (get_name(cython_blas.__pyx_capi__["sgemm"]) or b"").decode()
    if signature.count("int *") != 6 or "int64" in signature or "long" in signature:
        raise ImportError(f"nextclick: scipy's BLAS sgemm has an unexpected signature: {signature!r}")
    return int(get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))


# Registered under a symbol name (not a ctypes pointer, whose address numba would bake into the
# code): the loops that call it stay cacheable. Every argument is a pointer (Fortran).
llvmlite.binding.add_symbol("nextclick_sgemm", _sgemm_address())
_sgemm = types.ExternalFunction("nextclick_sgemm", types.void(*([types.uintp] * 13)))
_N, _T = ord("N"), ord("T")


@numba.njit(**_JIT)
def _last(t: int, rows: int, cols: int, off: int, ld: int) -> int:
    """The last element a column-major ``op(X)`` (rows, cols) at ``off`` with leading dimension
    ``ld`` touches (``t``: transposed)."""
    if t == _N:
        return off + rows - 1 + (cols - 1) * ld
    return off + cols - 1 + (rows - 1) * ld


@numba.njit(**_JIT)
def _gemm(
    ta: int, tb: int, m: int, n: int, k: int, a: np.ndarray, ao: int, lda: int, b: np.ndarray, bo: int, ldb: int,
    c: np.ndarray, co: int, ldc: int,
) -> None:
    """Column-major ``C = op(A) op(B)`` (m, n) on blocks of C-contiguous float32 arrays: ``A``
    starts at element ``ao`` of ``a`` with leading dimension ``lda``, likewise ``B`` and ``C``;
    ``ta``, ``tb``: ``_N`` or ``_T``. A row-major block (r, c) with row stride ``L`` is the
    column-major (c, r) with leading dimension ``L``, so products of row and column blocks of C
    arrays need no copies. Nothing happens for ``m`` or ``n`` 0; ``k`` must be positive. Raises
    ValueError for other arrays or for blocks reaching past their array."""
    if m <= 0 or n <= 0:
        return
    ok = a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
    ok = ok and a.itemsize == 4 and b.itemsize == 4 and c.itemsize == 4 and k > 0 and min(ao, bo, co) >= 0
    ok = ok and _last(ta, m, k, ao, lda) < a.size and _last(tb, k, n, bo, ldb) < b.size
    ok = ok and _last(_N, m, n, co, ldc) < c.size and lda >= (m if ta == _N else k) and ldb >= (k if tb == _N else n)
    if not (ok and ldc >= m):
        raise ValueError("_gemm: arrays must be C-contiguous float32 and the blocks inside them")
    buf = np.empty(10, np.int32)  # m n k lda ldb ldc | alpha beta (float32) | ta tb (bytes)
    buf[0], buf[1], buf[2], buf[3], buf[4], buf[5] = m, n, k, lda, ldb, ldc
    fl = buf[6:8].view(np.float32)
    fl[0], fl[1] = 1.0, 0.0
    ch = buf[8:10].view(np.uint8)
    ch[0], ch[1] = ta, tb
    p = buf.ctypes.data
    _sgemm(
        p + 32, p + 33, p, p + 4, p + 8, p + 24, a.ctypes.data + 4 * ao, p + 12, b.ctypes.data + 4 * bo, p + 16,
        p + 28, c.ctypes.data + 4 * co, p + 20,
    )
    _alive(buf)  # numba frees an array after its last use: the pointers' array lives up to here


@numba.njit(inline="never", **_JIT)
def _alive(buf: np.ndarray) -> None:
    pass


# ---------------------------------------------------------------------------------- a training step's phases
# Each phase is one or more block functions (``_*_block(t, ...)``: block or task ``t``) and a
# driver that shares the blocks out to numba's threads (``*_par``, ``parallel=True``, same
# arguments without ``t``); the products inside call BLAS (scipy's, one thread each) on blocks of
# the arrays. One thread pool for the whole step: BLAS's own threads would spin on the same cores
# (docs/benchmarks.md). With one thread, :class:`Phases` calls the blocks directly on the calling
# thread (or ``*_one``, the same blocks in turn) and never starts numba's thread pool, so a
# one-thread fit stays safe to fork after and to run from several Python threads at once (numba's
# OpenMP pool and its ``workqueue`` fallback are not).
_PAR = dict(_JIT, parallel=True)


@numba.njit(**_JIT)
def _gather_block(
    t: int, src: np.ndarray, idx: np.ndarray, dst: np.ndarray, src_in: np.ndarray, x: np.ndarray, inp: np.ndarray,
    key: np.uint64, thr: np.uint32, keep: float, mask: np.ndarray, parts: int,
) -> None:
    """Block ``t`` of ``parts`` of :func:`gather_rows_par`."""
    n = idx.shape[0]
    lo, hi = _span(t, parts, n)
    for k in range(lo, hi):
        dst[k] = src[idx[k]]
    w, nx = inp.shape[1], x.shape[0]
    lo, hi = _span(t, parts, nx)
    for k in range(lo, hi):
        inp[k] = src_in[x[k], :w]
        if mask.shape[0] > 0:
            _drop_row(key, k * w, thr, keep, mask[k], inp[k])


@numba.njit(**_PAR)
def gather_rows_par(
    src: np.ndarray, idx: np.ndarray, dst: np.ndarray, src_in: np.ndarray, x: np.ndarray, inp: np.ndarray,
    key: np.uint64, thr: np.uint32, keep: float, mask: np.ndarray, parts: int,
) -> None:
    """``dst[k] = src[idx[k]]`` (the output rows), and the first layer's input rows ``inp[k] =
    src_in[x[k], :width of inp]`` (``x`` empty: none) with the embedding dropout on them where
    ``mask`` is not empty (:func:`dropout_mask`, stream ``key``)."""
    for t in numba.prange(parts):
        _gather_block(t, src, idx, dst, src_in, x, inp, key, thr, keep, mask, parts)


@numba.njit(**_JIT)
def _layer_products_block(
    t: int, inp: np.ndarray, w_ih: np.ndarray, H: np.ndarray, w_hh: np.ndarray, parts: int,
    gx: np.ndarray, gh: np.ndarray,
) -> None:
    """Column block ``t`` of ``parts`` of a layer's products ``gx = inp w_ih^T`` (none where ``inp``
    is empty) and ``gh = H w_hh^T``: each thread packs only its own rows of the weights."""
    b, G3 = gh.shape
    lo, hi = _span(t, parts, G3)
    if inp.shape[0] > 0:
        d_in = inp.shape[1]
        _gemm(_T, _N, hi - lo, b, d_in, w_ih, lo * d_in, d_in, inp, 0, d_in, gx, lo, G3)
    D = H.shape[1]
    _gemm(_T, _N, hi - lo, b, D, w_hh, lo * D, D, H, 0, D, gh, lo, G3)


@numba.njit(**_JIT)
def _gates_block(
    t: int, add_b_ih: bool, b_ih: np.ndarray, H: np.ndarray, b_hh: np.ndarray, key: np.uint64, thr: np.uint32,
    keep: float, parts: int, gx: np.ndarray, gh: np.ndarray, rz: np.ndarray, n: np.ndarray, dn: np.ndarray,
    mask: np.ndarray, h: np.ndarray, hx: np.ndarray,
) -> None:
    """Row block ``t`` of ``parts`` of a layer's gates (:func:`gru_forward`, after adding ``b_ih`` to
    ``gx`` where ``add_b_ih``), and the top layer's ``hx``."""
    b, D = H.shape
    lo, hi = _span(t, parts, b)
    if lo >= hi:
        return
    if add_b_ih:
        for i in range(lo, hi):
            g = gx[i]
            for j in range(g.shape[0]):
                g[j] += b_ih[j]
    drop = mask.shape[0] > 0
    gru_forward(
        gx[lo:hi], gh[lo:hi], b_hh, H[lo:hi], key, lo, thr, keep,
        rz[lo:hi], n[lo:hi], dn[lo:hi], mask[lo:hi] if drop else mask, h[lo:hi],
    )
    if hx.shape[0] > 0:
        for i in range(lo, hi):
            hx[i, :D] = h[i]
            hx[i, D] = 1.0


@numba.njit(**_PAR)
def layer_forward_par(
    inp: np.ndarray, w_ih: np.ndarray, b_ih: np.ndarray, H: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray,
    key: np.uint64, thr: np.uint32, keep: float, parts: int,
    gx: np.ndarray, gh: np.ndarray, rz: np.ndarray, n: np.ndarray, dn: np.ndarray, mask: np.ndarray, h: np.ndarray,
    hx: np.ndarray,
) -> None:
    """A GRU layer over the batch: ``gx = inp w_ih^T + b_ih`` (``inp`` empty: ``gx`` already holds
    the input pre-activations) and ``gh = H w_hh^T`` in column blocks, then :func:`gru_forward`
    (the other arguments as there) in row blocks; the top layer also writes its output to ``hx``
    (b, D + 1) with a last column of ones (empty: not the top layer)."""
    for t in numba.prange(parts):
        _layer_products_block(t, inp, w_ih, H, w_hh, parts, gx, gh)
    for t in numba.prange(parts):
        _gates_block(t, inp.shape[0] > 0, b_ih, H, b_hh, key, thr, keep, parts, gx, gh, rz, n, dn, mask, h, hx)


def layer_forward_one(
    inp: np.ndarray, w_ih: np.ndarray, b_ih: np.ndarray, H: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray,
    key: np.uint64, thr: np.uint32, keep: float, parts: int,
    gx: np.ndarray, gh: np.ndarray, rz: np.ndarray, n: np.ndarray, dn: np.ndarray, mask: np.ndarray, h: np.ndarray,
    hx: np.ndarray,
) -> None:
    """:func:`layer_forward_par` in one block (``parts`` 1) on the calling thread."""
    _layer_products_block(0, inp, w_ih, H, w_hh, 1, gx, gh)
    _gates_block(0, inp.shape[0] > 0, b_ih, H, b_hh, key, thr, keep, 1, gx, gh, rz, n, dn, mask, h, hx)


@numba.njit(**_JIT)
def _scores_block(t: int, parts: int, hx: np.ndarray, G: np.ndarray, R: np.ndarray) -> None:
    """Column block ``t`` of ``parts`` of the scores ``R = hx G^T``: each thread reads (and BLAS
    packs) only its own rows of ``G``."""
    M, K1 = G.shape
    lo, hi = _span(t, parts, M)
    _gemm(_T, _N, hi - lo, hx.shape[0], K1, G, lo * K1, K1, hx, 0, K1, R, lo, M)


@numba.njit(**_JIT)
def _loss_rows_block(
    t: int, parts: int, R: np.ndarray, xe: bool, lq: np.ndarray, w: np.ndarray, k: np.ndarray, scale: float,
    eps: float, dR: np.ndarray,
) -> float:
    """Row block ``t`` of ``parts`` of the loss (:func:`xe_rows` or :func:`bpr_max_rows`) from the
    scores ``R``; writes ``dR``, returns the block's loss."""
    b = R.shape[0]
    lo, hi = _span(t, parts, b)
    if lo >= hi:
        return 0.0
    if xe:
        return xe_rows(R[lo:hi], lq, scale, eps, True, dR[lo:hi], lo)
    return bpr_max_rows(R[lo:hi], w, k, eps, True, dR[lo:hi], lo)


@numba.njit(**_JIT)
def _out_grads_block(
    t: int, parts: int, dR: np.ndarray, G: np.ndarray, hx: np.ndarray, dhs: np.ndarray, g_out: np.ndarray
) -> None:
    """Column block ``t`` of ``parts`` of ``dR``: its share of ``dh = dR G`` (a sum over the
    columns) to ``dhs[t]``, and its rows of the output rows' gradient ``g_out = dR^T hx``."""
    b, M = dR.shape
    K1 = G.shape[1]
    lo, hi = _span(t, parts, M)
    if lo >= hi:
        dhs[t] = 0.0
        return
    _gemm(_N, _N, K1, b, hi - lo, G, lo * K1, K1, dR, lo, M, dhs[t], 0, K1)
    _gemm(_N, _T, K1, hi - lo, b, hx, 0, K1, dR, lo, M, g_out, lo * K1, K1)


@numba.njit(**_JIT)
def _top_backward_block(
    t: int, parts: int, dhs: np.ndarray, dh: np.ndarray, mask: np.ndarray, rz: np.ndarray, n: np.ndarray,
    gh: np.ndarray, dn: np.ndarray, dg: np.ndarray, dgh: np.ndarray, db: np.ndarray,
) -> None:
    """Row block ``t`` of ``parts``: ``dh`` as the sum of the column blocks' shares ``dhs``, then
    :func:`gru_backward` of the top layer, its bias gradients' partial sums to ``db[t]`` (2, 3D)."""
    b = dh.shape[0]
    lo, hi = _span(t, parts, b)
    if lo >= hi:
        db[t] = 0.0
        return
    for i in range(lo, hi):
        d = dh[i]
        d[:] = dhs[0, i]
        for u in range(1, dhs.shape[0]):
            e = dhs[u, i]
            for j in range(d.shape[0]):
                d[j] += e[j]
    D = dn.shape[1]
    gru_backward(
        dh[lo:hi, :D], mask[lo:hi] if mask.shape[0] > 0 else mask, rz[lo:hi], n[lo:hi], gh[lo:hi], dn[lo:hi],
        dg[lo:hi], dgh[lo:hi], db[t, 0], db[t, 1],
    )


@numba.njit(**_PAR)
def loss_phase_par(
    hx: np.ndarray, G: np.ndarray, xe: bool, lq: np.ndarray, w: np.ndarray, k: np.ndarray, scale: float, eps: float,
    parts: int, R: np.ndarray, dR: np.ndarray, dhs: np.ndarray, dh: np.ndarray, g_out: np.ndarray,
    mask: np.ndarray, rz: np.ndarray, n: np.ndarray, gh: np.ndarray, dn: np.ndarray,
    dg: np.ndarray, dgh: np.ndarray, db: np.ndarray, db_ih: np.ndarray, db_hh: np.ndarray,
) -> float:
    """Scores, loss, the output rows' gradient and the backward through the top GRU layer's gates,
    each product split so that no two threads pack the same large operand:

    1. ``R = hx G^T`` (``hx`` (b, D + 1) with a last column of ones, ``G`` (M, D + 1) the output
       rows and biases) in column blocks (:func:`_scores_block`);
    2. the loss rows (:func:`xe_rows` with offsets ``lq``, or :func:`bpr_max_rows` with weights
       ``w`` and constants ``k``) writing ``dR`` (b, M), in row blocks;
    3. per column block, its share of ``dh = dR G`` (to ``dhs`` (parts, b, D + 1)) and its rows of
       ``g_out = dR^T hx`` (M, D + 1);
    4. in row blocks, ``dh`` (b, D + 1; the last column is the bias's and unused) and
       :func:`gru_backward` of the top layer (its dropout ``mask`` and forward arrays; writes
       ``dg``, ``dgh``, and the bias gradients ``db_ih``, ``db_hh`` through the scratch ``db``
       (parts, 2, 3D)).

    Returns the loss."""
    for t in numba.prange(parts):
        _scores_block(t, parts, hx, G, R)
    losses = np.zeros(parts)
    for t in numba.prange(parts):
        losses[t] = _loss_rows_block(t, parts, R, xe, lq, w, k, scale, eps, dR)
    for t in numba.prange(parts):
        _out_grads_block(t, parts, dR, G, hx, dhs, g_out)
    for t in numba.prange(parts):
        _top_backward_block(t, parts, dhs, dh, mask, rz, n, gh, dn, dg, dgh, db)
    _sum_blocks(db, db_ih, db_hh)
    return losses.sum()


@numba.njit(**_JIT)
def _sum_blocks(db: np.ndarray, db_ih: np.ndarray, db_hh: np.ndarray) -> None:
    db_ih[:] = db[0, 0]
    db_hh[:] = db[0, 1]
    for t in range(1, db.shape[0]):
        db_ih += db[t, 0]
        db_hh += db[t, 1]


def loss_phase_one(
    hx: np.ndarray, G: np.ndarray, xe: bool, lq: np.ndarray, w: np.ndarray, k: np.ndarray, scale: float, eps: float,
    parts: int, R: np.ndarray, dR: np.ndarray, dhs: np.ndarray, dh: np.ndarray, g_out: np.ndarray,
    mask: np.ndarray, rz: np.ndarray, n: np.ndarray, gh: np.ndarray, dn: np.ndarray,
    dg: np.ndarray, dgh: np.ndarray, db: np.ndarray, db_ih: np.ndarray, db_hh: np.ndarray,
) -> float:
    """:func:`loss_phase_par` in one block (``parts`` 1) on the calling thread."""
    _scores_block(0, 1, hx, G, R)
    loss = _loss_rows_block(0, 1, R, xe, lq, w, k, scale, eps, dR)
    _out_grads_block(0, 1, dR, G, hx, dhs, g_out)
    _top_backward_block(0, 1, dhs, dh, mask, rz, n, gh, dn, dg, dgh, db)
    _sum_blocks(db, db_ih, db_hh)
    return loss


@numba.njit(**_JIT)
def _products_block(
    t: int, dgh: np.ndarray, H: np.ndarray, gw_hh: np.ndarray,
    dg: np.ndarray, inp: np.ndarray, gw_ih: np.ndarray, w_ih: np.ndarray, d_in: np.ndarray, m_in: np.ndarray,
) -> None:
    """Task ``t`` (0 or 1) of :func:`backward_products_par`."""
    b, G3 = dgh.shape
    D = H.shape[1]
    work_hh = G3 * D
    work_in = G3 * inp.shape[1] * ((inp.shape[0] > 0) + (d_in.shape[0] > 0))
    split = min(G3, max(0, (work_hh + work_in) // 2 * G3 // max(work_hh, 1)))  # rows of gw_hh for the first task
    lo, hi = (0, split) if t == 0 else (split, G3)
    _gemm(_N, _T, D, hi - lo, b, H, 0, D, dgh, lo, G3, gw_hh, lo * D, D)  # gw_hh[lo:hi] = dgh[:, lo:hi]^T H
    if t == 1:
        if inp.shape[0] > 0:
            np.dot(dg.T, inp, gw_ih)
        if d_in.shape[0] > 0:
            np.dot(dg, w_ih, d_in)
            if m_in.shape[0] > 0:
                for i in range(d_in.shape[0]):
                    d, m = d_in[i], m_in[i]
                    for j in range(d.shape[0]):
                        d[j] *= m[j]


@numba.njit(**_PAR)
def backward_products_par(
    dgh: np.ndarray, H: np.ndarray, gw_hh: np.ndarray,
    dg: np.ndarray, inp: np.ndarray, gw_ih: np.ndarray, w_ih: np.ndarray, d_in: np.ndarray, m_in: np.ndarray,
) -> None:
    """A layer's weight-gradient products as two tasks of about equal work: ``gw_hh = dgh^T H``,
    ``gw_ih = dg^T inp`` and ``d_in = dg w_ih`` (the gradient of the layer's input, times the
    input's dropout mask ``m_in`` where that is not empty; each skipped where its input array is
    empty). The first task takes the first rows of ``gw_hh``, the second the rest."""
    for t in numba.prange(2):
        _products_block(t, dgh, H, gw_hh, dg, inp, gw_ih, w_ih, d_in, m_in)


@numba.njit(**_JIT)
def _update_block(
    t: int, parts: int, p: np.ndarray, acc: np.ndarray, mom: np.ndarray, pos: np.ndarray, idx0: np.ndarray,
    g0: np.ndarray, first: np.ndarray, nf: int, xrows: np.ndarray, xbuf: np.ndarray, nx: int,
    pd: np.ndarray, accd: np.ndarray, momd: np.ndarray, gd: np.ndarray, lr: float, m: float, nesterov: bool,
) -> None:
    """Share ``t`` of ``parts`` of :func:`update_phase_par`: its coalesced rows and its slice of the
    flat vector."""
    _apply_rows(t, parts, p, acc, mom, pos, idx0, g0, first, nf, xrows, xbuf, nx, lr, m, nesterov)
    n = pd.shape[0]
    lo, hi = _span(t, parts, n)
    adagrad_dense(pd[lo:hi], accd[lo:hi], momd[lo:hi] if momd.shape[0] > 0 else momd, gd[lo:hi], lr, m, nesterov)


@numba.njit(**_PAR)
def update_phase_par(
    parts: int, p: np.ndarray, acc: np.ndarray, mom: np.ndarray, pos: np.ndarray, idx0: np.ndarray,
    g0: np.ndarray, first: np.ndarray, nf: int, xrows: np.ndarray, xbuf: np.ndarray, nx: int,
    pd: np.ndarray, accd: np.ndarray, momd: np.ndarray, gd: np.ndarray, lr: float, m: float, nesterov: bool,
) -> None:
    """The optimiser's update after :func:`_coalesce_in_place`: the output matrix's coalesced rows
    and the flat GRU vector ``pd`` (:func:`adagrad_dense`), each thread a share of both."""
    for t in numba.prange(parts):
        _update_block(t, parts, p, acc, mom, pos, idx0, g0, first, nf, xrows, xbuf, nx, pd, accd, momd, gd, lr, m, nesterov)


class Phases:
    """The phase functions a trainer calls, each with its ``*_par`` driver's arguments: the drivers
    for ``parts`` > 1, else the blocks one after the other on the calling thread (``parts`` must
    then be passed as 1), which never start numba's thread pool. ``parts``: the blocks (threads)."""

    def __init__(self, parts: int) -> None:
        self.parts = parts
        if parts > 1:
            self.gather_rows, self.layer_forward, self.loss_phase = gather_rows_par, layer_forward_par, loss_phase_par
            self.backward_products, self.update_phase = backward_products_par, update_phase_par
        else:
            self.gather_rows = functools.partial(_gather_block, 0)
            self.layer_forward = layer_forward_one
            self.loss_phase = loss_phase_one
            self.backward_products = functools.partial(_both_tasks, _products_block)
            self.update_phase = functools.partial(_update_block, 0)


def _both_tasks(block, *args) -> None:  # type: ignore[no-untyped-def]
    block(0, *args)
    block(1, *args)


