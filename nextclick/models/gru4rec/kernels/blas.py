"""BLAS on blocks of arrays, for the compiled phases: scipy's single-precision ``sgemm`` called
from numba with strides, so that products of row and column blocks of C arrays need no copies,
and :func:`span`, the blocks a phase shares out to its threads."""

from __future__ import annotations

import ctypes

import llvmlite.binding
import numba
import numpy as np
from numba import types

from nextclick.compiled import JIT as _JIT


@numba.njit(inline="always", **_JIT)
def span(t: int, parts: int, n: int) -> tuple[int, int]:
    """Block ``t`` of ``n`` items shared out in ``parts`` nearly equal blocks: ``(lo, hi)``."""
    return t * n // parts, (t + 1) * n // parts


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
N, T = ord("N"), ord("T")


@numba.njit(**_JIT)
def _last(t: int, rows: int, cols: int, off: int, ld: int) -> int:
    """The last element a column-major ``op(X)`` (rows, cols) at ``off`` with leading dimension
    ``ld`` touches (``t``: transposed)."""
    if t == N:
        return off + rows - 1 + (cols - 1) * ld
    return off + cols - 1 + (rows - 1) * ld


@numba.njit(**_JIT)
def gemm(
    ta: int, tb: int, m: int, n: int, k: int, a: np.ndarray, ao: int, lda: int, b: np.ndarray, bo: int, ldb: int,
    c: np.ndarray, co: int, ldc: int,
) -> None:
    """Column-major ``C = op(A) op(B)`` (m, n) on blocks of C-contiguous float32 arrays: ``A``
    starts at element ``ao`` of ``a`` with leading dimension ``lda``, likewise ``B`` and ``C``;
    ``ta``, ``tb``: ``N`` or ``T``. A row-major block (r, c) with row stride ``L`` is the
    column-major (c, r) with leading dimension ``L``, so products of row and column blocks of C
    arrays need no copies. Nothing happens for ``m`` or ``n`` 0; ``k`` must be positive. Raises
    ValueError for other arrays or for blocks reaching past their array."""
    if m <= 0 or n <= 0:
        return
    ok = a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous
    ok = ok and a.itemsize == 4 and b.itemsize == 4 and c.itemsize == 4 and k > 0 and min(ao, bo, co) >= 0
    ok = ok and _last(ta, m, k, ao, lda) < a.size and _last(tb, k, n, bo, ldb) < b.size
    ok = ok and _last(N, m, n, co, ldc) < c.size and lda >= (m if ta == N else k) and ldb >= (k if tb == N else n)
    if not (ok and ldc >= m):
        raise ValueError("gemm: arrays must be C-contiguous float32 and the blocks inside them")
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

