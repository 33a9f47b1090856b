"""A GRU layer's gates forward and backward, compiled, with inverted dropout drawn from
counter-based random bits inside the loop.

:func:`gru_forward` is the compiled twin of :func:`nextclick.models.gru4rec.net.gru_cell` (the
one definition of the GRU step; the tests check that the two agree, with and without dropout);
:func:`gru_backward` its closed-form gradient (checked against autograd in the tests).
"""

from __future__ import annotations

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT
from nextclick.models.gru4rec.kernels.exp import _F, vexp

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
def drop_row(key: np.uint64, start: int, thr: np.uint32, keep: float, mask: np.ndarray, row: np.ndarray) -> None:
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
            drop_row(key, (row0 + i) * D, thr, keep, mask[i], hi)


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

