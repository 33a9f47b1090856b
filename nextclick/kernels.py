"""Compiled (numba) loops: GRU4Rec's training step and the served top-k.

Each one fuses what would otherwise be a chain of whole-array tensor operations (each reading and
writing the full arrays) into one or two passes over the data a step touches:

* :class:`RowUpdater` -- Adagrad with momentum on the rows of an item matrix that a step touched:
  the gradient rows of repeated indices are summed first (the update is non-linear), then the
  accumulator, velocity and weights of each touched row are updated in one pass. Untouched rows
  are never read.
* :func:`adagrad_dense` -- the same update on a flat vector (the GRU weights).
* :func:`elu_rows` and :func:`bpr_max_rows` -- the element-wise part of the BPR-max loss and its
  gradient (the exponentials stay in vectorised tensor operations between them).
* :func:`fp16_prune` and :func:`fp16_top_rows` -- the per-query part of
  :class:`nextclick.scoring.TopK` around its half-precision products (the chunks to score, the
  candidates, their exact scores, the exclusions and the exactness proof).

They run on zero-copy numpy views of the tensors, single-threaded. They are compiled on first
use and cached on disk (next to this file, else in the user's cache folder or ``NUMBA_CACHE_DIR``),
so only the first process pays the compilation (seconds); where no such folder is writable, every
process compiles them. The arithmetic is float32 like the tensors (row sums of the loss in
float64), so results equal the tensor-operation form up to rounding.
"""

from __future__ import annotations

import logging

import numba
import numpy as np

log = logging.getLogger(__name__)


def _probe() -> int:
    return 0


def _can_cache() -> bool:
    """Whether numba can keep compiled loops on disk for this file: next to it, in the user's cache
    folder or in ``NUMBA_CACHE_DIR``. A read-only install without a writable home (a locked-down
    container, say) has none, and numba would refuse ``cache=True`` at import."""
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        log.info("numba finds no writable cache folder for %s: its loops are compiled in every process "
                 "(seconds); set NUMBA_CACHE_DIR to a writable folder to keep them", __file__)
        return False
    return True


# error_model="numpy": no zero-division checks, which would stop the loops from being vectorised
_JIT = dict(nogil=True, cache=_can_cache(), error_model="numpy", boundscheck=False)


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


# ---------------------------------------------------------------------------------- top-k
@numba.njit(inline="always", **_JIT)
def _sift_down(h: np.ndarray, i: int, n: int) -> None:
    """Restore the min-heap ``h[:n]`` below position ``i``."""
    while True:
        c = 2 * i + 1
        if c >= n:
            return
        if c + 1 < n and h[c + 1] < h[c]:
            c += 1
        if h[i] <= h[c]:
            return
        h[i], h[c] = h[c], h[i]
        i = c


@numba.njit(**_JIT)
def _kth_largest(a: np.ndarray, m: int, h: np.ndarray) -> float:
    """The ``m``-th largest value of ``a`` (1 <= m <= a.size), keeping the best ``m`` seen so far
    in the min-heap ``h``: one pass, most values rejected by one comparison."""
    for j in range(m):
        h[j] = a[j]
    for i in range(m // 2 - 1, -1, -1):
        _sift_down(h, i, m)
    for j in range(m, a.shape[0]):
        if a[j] > h[0]:
            h[0] = a[j]
            _sift_down(h, 0, m)
    return h[0]


@numba.njit(**_JIT)
def fp16_prune(
    first: np.ndarray, Q: np.ndarray, kk: np.ndarray, C: np.ndarray, tail_norm: np.ndarray, tail_b: np.ndarray,
    e: float, eb: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first half of :class:`nextclick.scoring.TopK`'s proof, per query row ``i`` of ``Q``:
    ``slack`` (the largest |approximate - exact| score: ``||q|| e + eb``), how many chunks in
    norm order must be scored (``stops``), a bound on the exact score of every row left
    unscored (``tail``, -inf when none is), and the candidates' pre-filter ``t0`` for
    :func:`fp16_top_rows` (the ``C[i]``-th best of chunk 0; -inf when chunk 0 is shorter).

    ``first``: approximate scores of chunk 0. At least ``kk[i]`` of them are at or above their
    ``kk[i]``-th best, so ``theta`` (that minus ``slack``) bounds the exact ``kk[i]``-th best
    score from below. Every row from chunk c on scores at most ``||q|| tail_norm[c] +
    tail_b[c]`` (Cauchy-Schwarz), so the chunks from the first whose bound is below ``theta``
    on can be skipped. (Margins: float32 rounding.) One pass over chunk 0 keeps its best
    ``min(C[i], r0)`` scores, which give both order statistics (``kk <= C``)."""
    n, r0 = first.shape
    n_chunks = tail_norm.shape[0] - 1
    slack = np.empty(n)
    stops = np.full(n, n_chunks, dtype=np.int64)
    tail = np.full(n, -np.inf)
    t0 = np.full(n, -np.inf)
    h = np.empty(max(1, min(r0, C.max())), dtype=first.dtype)
    for i in range(n):
        ss = 0.0
        for t in range(Q.shape[1]):
            ss += np.float64(Q[i, t]) * np.float64(Q[i, t])
        qn = np.sqrt(ss)
        slack[i] = qn * e * 1.001 + eb
        m = min(C[i], r0)
        if m < 1:
            continue
        last = _kth_largest(first[i], m, h)  # h[:m]: the m best of chunk 0
        if C[i] <= r0:
            t0[i] = last
        if n_chunks > 1 and 1 <= kk[i] <= m:
            kth = np.float64(np.sort(h[:m])[m - kk[i]])
            theta = kth - slack[i] - 1e-5 * abs(kth) - 1e-6
            for c in range(1, n_chunks):
                bound = qn * tail_norm[c] * (1 + 1e-5) + tail_b[c] + 1e-6
                if bound < theta:
                    stops[i], tail[i] = c, bound
                    break
    return slack, stops, tail, t0


@numba.njit(**_JIT)
def fp16_top_rows(
    S: np.ndarray, lens: np.ndarray, t0: np.ndarray, C: np.ndarray, order: np.ndarray, W: np.ndarray, b: np.ndarray,
    Q: np.ndarray, drop: np.ndarray, drop_at: np.ndarray, slack: np.ndarray, tail: np.ndarray, ids: np.ndarray,
    vals: np.ndarray,
) -> np.ndarray:
    """The candidate step of :class:`nextclick.scoring.TopK` for a few queries, one row at a time.

    Row ``i``: ``S[i, :lens[i]]`` are the approximate scores of the item rows in norm order. Its
    ``C[i]`` best are the candidates (each at least ``t0[i]``, the ``C[i]``-th best of chunk 0
    from :func:`fp16_prune`: a pre-filter), scored exactly as ``W[order[p]] . Q[i] + b`` (float64 sums
    rounded to float32); the items in ``drop[drop_at[i]:drop_at[i + 1]]`` (sorted) get -inf, and
    the ``k`` best go to ``ids[i]`` / ``vals[i]`` (``vals`` pre-filled with -inf), ties in
    candidate order. Returns per row whether the proof failed (a near-tie at the cut): every
    scored row outside the candidates scores at most the last candidate's approximate score +
    ``slack[i]`` exactly, every unscored row at most ``tail[i]`` (:func:`fp16_prune`), and the
    k-th result must beat both."""
    n, k = ids.shape
    d = W.shape[1]
    use_b = b.shape[0] > 0
    pos = np.empty(S.shape[1], dtype=np.int64)
    val = np.empty(S.shape[1], dtype=S.dtype)
    h = np.empty(max(1, C.max()), dtype=S.dtype)
    bad = np.zeros(n, dtype=np.bool_)
    V = order.shape[0]
    for i in range(n):
        L, c, lo_s = lens[i], C[i], t0[i]
        Si = S[i]
        m = 0
        for blk in range(0, L, 256):  # count first (a vectorised loop): most blocks hold no candidate
            end = min(blk + 256, L)
            hits = 0
            for p in range(blk, end):
                hits += Si[p] >= lo_s
            if hits:
                for p in range(blk, end):
                    if Si[p] >= lo_s:
                        pos[m] = p
                        val[m] = Si[p]
                        m += 1
        if m > c:  # keep the c best: those above the c-th best value, then ties at it by position
            t1 = _kth_largest(val[:m], c, h)
            j = 0
            for p in range(m):
                if val[p] > t1:
                    pos[j] = pos[p]
                    val[j] = val[p]
                    j += 1
            for p in range(m):
                if j < c and val[p] == t1:
                    pos[j] = pos[p]
                    val[j] = val[p]
                    j += 1
            m = j
        sel = np.argsort(-val[:m], kind="mergesort")  # best first, ties by position
        ex = np.empty(m, dtype=np.float64)
        cand = np.empty(m, dtype=np.int64)
        lo, hi = drop_at[i], drop_at[i + 1]
        for j in range(m):
            it = order[pos[sel[j]]]
            s = 0.0
            for t in range(d):
                s += np.float64(W[it, t]) * np.float64(Q[i, t])
            v = np.float32(s)
            if use_b:
                v = np.float32(v + b[it])
            at = lo + np.searchsorted(drop[lo:hi], it)
            ex[j] = -np.inf if (at < hi and drop[at] == it) else np.float64(v)
            cand[j] = it
        top = np.argsort(-ex, kind="mergesort")[: min(k, m)]
        for j in range(top.shape[0]):
            vals[i, j] = ex[top[j]]
            ids[i, j] = cand[top[j]]
        if c < V:
            outside = tail[i]
            if m > 0:
                cut = np.float64(val[sel[m - 1]])
                outside = max(cut + slack[i] + 1e-5 * abs(cut) + 1e-6, outside)
            bad[i] = not np.float64(vals[i, k - 1]) > outside
    return bad
