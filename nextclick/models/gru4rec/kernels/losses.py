"""The two losses and their gradients, compiled, a row of scores at a time, and a step's output
columns (the targets, then each distinct drawn negative once with its count).

The arithmetic is float32 like the scores (the row sums in float64), so results equal the
tensor-operation form up to rounding; the tests check both losses against autograd.
"""

from __future__ import annotations

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT
from nextclick.models.gru4rec.kernels.exp import vexp, vmax


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
    """:func:`nextclick.models.gru4rec.losses.bpr_max_loss_grad`, one row at a time, every pass in cache.

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
        O[ti] = -3.0e38  # the softmax runs over the negatives: their maximum (finite: vmax is fast-math)
        c = vmax(O)
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

