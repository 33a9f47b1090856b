"""Compiled (numba) loops for GRU4Rec's training step.

Each one fuses what would otherwise be a chain of whole-array tensor operations (each reading and
writing the full arrays) into one or two passes over the data a step touches:

* :class:`RowUpdater` -- Adagrad with momentum on the rows of an item matrix that a step touched:
  the gradient rows of repeated indices are summed first (the update is non-linear), then the
  accumulator, velocity and weights of each touched row are updated in one pass. Untouched rows
  are never read.
* :func:`adagrad_dense` -- the same update on a flat vector (the GRU weights).
* :func:`elu_rows` and :func:`bpr_max_rows` -- the element-wise part of the BPR-max loss and its
  gradient (the exponentials stay in vectorised tensor operations between them).

They run on zero-copy numpy views of the tensors, single-threaded. They are compiled on first
use and cached on disk next to this file (``cache=True``), so only the first process pays the
compilation (seconds). The arithmetic is float32 like the tensors (row sums of the loss in
float64), so results equal the tensor-operation form up to rounding.
"""

from __future__ import annotations

import numba
import numpy as np

# error_model="numpy": no zero-division checks, which would stop the loops from being vectorised
_JIT = dict(nogil=True, cache=True, error_model="numpy", boundscheck=False)


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


# ---------------------------------------------------------------------------------- BPR-max
def constants(dtype: np.dtype, a: float, bpreg: float, scale: float) -> np.ndarray:
    """The BPR-max kernels' scalars in the scores' dtype (so float32 scores stay float32)."""
    return np.array([a, bpreg, scale, 0.0, 1.0, 2.0, 80.0], dtype=dtype)


@numba.njit(**_JIT)
def elu_rows(R: np.ndarray, E: np.ndarray, k: np.ndarray) -> None:
    """``E`` holds ``exp(min(R, 0))`` on entry and ``elu(R) = max(R, 0) + a (exp(min(R, 0)) - 1)``
    on return. ``k``: :func:`constants`."""
    a, one = k[0], k[4]
    for i in range(R.shape[0]):
        for j in range(R.shape[1]):
            r = R[i, j]
            E[i, j] = r if r > 0 else a * (E[i, j] - one)


@numba.njit(fastmath={"reassoc", "contract"}, **_JIT)
def bpr_max_rows(
    R: np.ndarray, O: np.ndarray, X: np.ndarray, cmax: np.ndarray, w: np.ndarray, k: np.ndarray, eps: float, out: np.ndarray
) -> float:
    """The rest of :func:`nextclick.models.gru4rec.bpr_max_loss_grad`, one row at a time.

    ``R`` raw scores, ``O`` ELU scores (``R`` itself when ``a`` is 0), ``X = exp(O - cmax)`` with
    ``cmax`` the row maxima of ``O``, ``w`` the negatives' weights (empty: all 1), ``k``
    :func:`constants`. Row ``i``'s target is column ``i``. Writes dL/dR to ``out`` and returns
    the loss. ``sigmoid(t - o_j) = 1 / (1 + X_j exp(cmax - t))`` reuses the softmax's
    exponentials.
    """
    b, M = R.shape
    use_w = w.shape[0] > 0
    a, bpreg, scale, zero, one, two, big = k[0], k[1], k[2], k[3], k[4], k[5], k[6]
    loss = 0.0
    tmp = np.empty(4, dtype=O.dtype)
    for i in range(b):
        t = O[i, i]
        kt = np.exp(min(cmax[i] - t, big))
        S = 0.0  # sums over the negatives in float64
        SA = 0.0
        SB = 0.0
        SC = 0.0
        for j in range(M):
            e = X[i, j] * w[j] if use_w else X[i, j]
            if j == i:
                e = zero
            sig = one / (one + X[i, j] * kt)
            o = O[i, j]
            S += e
            SA += e * sig
            SB += e * sig * sig
            SC += e * o * o
        A = SA / S
        C = SC / S
        Ae = A + eps
        loss += k[1] * C - np.log(Ae)
        inv = k[2] / Ae  # float64
        tmp[0], tmp[1], tmp[2], tmp[3] = A, C, inv, 1.0 / S  # the row's scalars in the scores' dtype
        A_, C_, inv_, iS = tmp[0], tmp[1], tmp[2], tmp[3]
        for j in range(M):
            s = (X[i, j] * w[j] if use_w else X[i, j]) * iS
            sig = one / (one + X[i, j] * kt)
            o = O[i, j]
            g = s * ((A_ - sig * sig) * inv_ + bpreg * scale * (o * o + two * o - C_))
            if a > zero and R[i, j] <= zero:
                g *= o + a  # d elu / dR = a exp(R) = elu(R) + a
            out[i, j] = g
        g_t = -(A - SB / S) * inv
        if a > zero and R[i, i] <= zero:
            g_t *= O[i, i] + a
        out[i, i] = g_t
    return loss * k[2]
