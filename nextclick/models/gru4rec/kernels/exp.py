"""An exponential the compiler vectorises (numba's own calls libm value by value), and a
vectorised maximum: the building blocks of the compiled losses and GRU gates."""

from __future__ import annotations

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT

_F = np.float32


@numba.njit(fastmath={"contract"}, **_JIT)
def vexp(x: np.ndarray, y: np.ndarray, e: np.ndarray, fast: bool) -> None:
    """``y = exp(x)`` over 1-D arrays; ``e``: int32 scratch of the same size. ``y`` must not be
    ``x``: the vectorised loop checks for overlap at run time and runs one value at a time if so.

    ``fast`` (float32 only): a loop the compiler vectorises (numba calls the scalar libm ``expf``
    otherwise, several times slower): ``exp(x) = 2^t exp(r)`` with ``t`` the nearest
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
def vmax(x: np.ndarray) -> float:
    """The largest of a 1-D array's values, vectorised (no NaN expected: a NaN score fails training
    at the loss check anyway)."""
    c = x[0]
    for j in range(x.shape[0]):
        c = max(c, x[j])
    return c

