"""Compiled (numba) loops of the bounded top-k (:class:`nextclick.ranking.bounded.TopK`).

:func:`bound_queries`, :func:`bound_first`, :func:`bound_rest` and :func:`scan_topk` are the
per-query part of the bounded top-k: the query's projection and bounds, the heap of exact
scores, the rows whose bound reaches it (around the half-precision products, or in a scan of the
int8 copy), the exclusions. They run single-threaded on numpy arrays.
"""

from __future__ import annotations

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT


@numba.njit(inline="always", **_JIT)
def _sift(hv: np.ndarray, hi: np.ndarray, j: int, n: int) -> None:
    """Restore the min-heap ``hv[:n]`` (items ``hi``) below position ``j``."""
    while True:
        c = 2 * j + 1
        if c >= n:
            return
        if c + 1 < n and hv[c + 1] < hv[c]:
            c += 1
        if hv[j] <= hv[c]:
            return
        hv[j], hv[c] = hv[c], hv[j]
        hi[j], hi[c] = hi[c], hi[j]
        j = c


@numba.njit(inline="always", **_JIT)
def _push(hv: np.ndarray, hi: np.ndarray, n: int, k: int, v: float, it: int) -> int:
    """Offer ``(v, it)`` to the min-heap ``hv[:n]`` (items ``hi``) of the ``k`` best; returns its size."""
    if n < k:
        j = n
        hv[j], hi[j] = v, it
        while j > 0:  # sift up
            p = (j - 1) // 2
            if hv[p] <= hv[j]:
                break
            hv[p], hv[j] = hv[j], hv[p]
            hi[p], hi[j] = hi[j], hi[p]
            j = p
        return n + 1
    if v <= hv[0]:
        return n
    hv[0], hi[0] = v, it
    _sift(hv, hi, 0, n)
    return n


@numba.njit(inline="always", **_JIT)
def _exact(W: np.ndarray, b: np.ndarray, q: np.ndarray, it: int) -> float:
    """``W[it] . q + b[it]`` as exact float32 scoring gives it: a float64 sum (four running sums,
    so the additions do not wait on each other) rounded to float32, then the float32 bias."""
    d = W.shape[1]
    s0 = s1 = s2 = s3 = 0.0
    t = 0
    while t + 4 <= d:
        s0 += np.float64(W[it, t]) * np.float64(q[t])
        s1 += np.float64(W[it, t + 1]) * np.float64(q[t + 1])
        s2 += np.float64(W[it, t + 2]) * np.float64(q[t + 2])
        s3 += np.float64(W[it, t + 3]) * np.float64(q[t + 3])
        t += 4
    while t < d:
        s0 += np.float64(W[it, t]) * np.float64(q[t])
        t += 1
    v = np.float32((s0 + s1) + (s2 + s3))
    if b.shape[0] > 0:
        v = np.float32(v + b[it])
    return np.float64(v)


@numba.njit(inline="always", **_JIT)
def _dropped(drop: np.ndarray, lo: int, hi: int, it: int) -> bool:
    """Whether item ``it`` is in the sorted ``drop[lo:hi]``."""
    at = lo + np.searchsorted(drop[lo:hi], it)
    return at < hi and drop[at] == it


@numba.njit(**_JIT)
def bound_queries(
    Q: np.ndarray, P: np.ndarray, e: float, rel: float, norm0: float, bmax: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query row of ``Q``: its projection on the orthonormal columns of ``P`` (float32; ``Q``
    itself when ``P`` has no columns), the norm of what the projection leaves out (rounded up),
    its norm, and the slack of its approximate scores: the rounding of the stored projected rows
    (``e`` in norm; the bias is added in float32) plus float32 rounding (``rel`` of the largest
    possible finite score, ``||q|| norm0 + bmax``); infinite where that is not a number."""
    n, d = Q.shape
    r = P.shape[1]
    proj = r > 0
    qp = np.empty((n, r if proj else d), dtype=np.float32)
    qres = np.zeros(n)
    qn = np.empty(n)
    slack = np.empty(n)
    p64 = np.empty(r)
    for i in range(n):
        ss = 0.0
        for t in range(d):
            ss += np.float64(Q[i, t]) * np.float64(Q[i, t])
        qn[i] = np.sqrt(ss)
        pn = qn[i]
        if proj:
            p64[:] = 0.0
            for t in range(d):  # P row by row: contiguous, vectorised
                qt = np.float64(Q[i, t])
                for j in range(r):
                    p64[j] += P[t, j] * qt
            pp = 0.0
            for j in range(r):
                qp[i, j] = np.float32(p64[j])
                pp += p64[j] * p64[j]
            rr = 0.0
            for t in range(d):
                s = 0.0
                for j in range(r):
                    s += P[t, j] * p64[j]
                s = np.float64(Q[i, t]) - s
                rr += s * s
            qres[i] = np.sqrt(rr) * (1 + 1e-6)
            pn = np.sqrt(pp)
        else:
            for t in range(d):
                qp[i, t] = Q[i, t]
        sl = pn * e * 1.001 + rel * (qn[i] * norm0 + bmax) + 1e-30
        slack[i] = sl if sl == sl else np.inf
    return qp, qres, qn, slack


@numba.njit(inline="always", **_JIT)
def _insertion_sort(x: np.ndarray, lo: int, hi: int) -> None:
    """Sort ``x[lo:hi]`` in place (short runs: no sort implementation to compile)."""
    for j in range(lo + 1, hi):
        v = x[j]
        c = j - 1
        while c >= lo and x[c] > v:
            x[c + 1] = x[c]
            c -= 1
        x[c + 1] = v


@numba.njit(**_JIT)
def _start_heap(
    a: np.ndarray, m: int, h: np.ndarray, hp: np.ndarray, q: np.ndarray, order: np.ndarray, W: np.ndarray,
    b: np.ndarray, drop: np.ndarray, lo_d: int, hi_d: int, hv: np.ndarray, hi: np.ndarray, cand: np.ndarray,
) -> tuple[int, int]:
    """The ``m`` best approximate scores ``a`` of rows not dropped (rows in norm order; one pass,
    a min-heap of them in ``h``/``hp``, most values rejected by one comparison) are scored exactly
    and start the heap ``hv``/``hi``; their positions go to ``cand`` (sorted). Returns (heap
    size, count)."""
    k = hv.shape[0]
    nm = 0
    for p in range(a.shape[0]):
        if (nm < m or a[p] > h[0]) and not _dropped(drop, lo_d, hi_d, order[p]):
            nm = _push(h, hp, nm, m, a[p], p)
    cand[:nm] = hp[:nm]
    _insertion_sort(cand, 0, nm)
    nh = 0
    for j in range(nm):
        it = order[cand[j]]
        nh = _push(hv, hi, nh, k, _exact(W, b, q, it), it)
    return nh, nm


@numba.njit(**_JIT)
def _offer_block(
    a: np.ndarray, lo: int, hi_p: int, res: np.ndarray, qres: float, slack: float, q: np.ndarray, order: np.ndarray,
    W: np.ndarray, b: np.ndarray, drop: np.ndarray, lo_d: int, hi_d: int, hv: np.ndarray, hi: np.ndarray, nh: int,
    cand: np.ndarray, nc: int, hit: np.ndarray, ex: np.ndarray,
) -> tuple[int, int]:
    """Rows ``lo:hi_p`` in norm order, approximate scores ``a[:hi_p - lo]``: each whose bound
    ``a + qres res + slack`` reaches the heap's k-th best (and is not in ``cand[:nc]``, scored
    already) is scored exactly and offered to the heap. Returns (heap size, rows scored)."""
    k = hv.shape[0]
    lb = hv[0] if nh == k else -np.inf
    c = np.float32(qres)
    thr = np.float32(lb - slack)
    hits = 0
    for p in range(hi_p - lo):  # vectorised: most blocks hold no row to score
        hits += a[p] + c * res[lo + p] >= thr
    if hits == 0:
        return nh, 0
    m = 0
    for p in range(lo, hi_p):
        if a[p - lo] + c * res[p] < thr or np.float64(a[p - lo]) + qres * np.float64(res[p]) + slack < lb:
            continue
        at = np.searchsorted(cand[:nc], p)
        if at < nc and cand[at] == p:
            continue
        it = order[p]
        if not _dropped(drop, lo_d, hi_d, it):
            hit[m] = it
            m += 1
    for j in range(m):  # independent loads: several rows are fetched at once
        ex[j] = _exact(W, b, q, hit[j])
    for j in range(m):
        nh = _push(hv, hi, nh, k, ex[j], hit[j])
    return nh, m


@numba.njit(**_JIT)
def _finish(hv: np.ndarray, hi: np.ndarray, nh: int, ids: np.ndarray, vals: np.ndarray) -> None:
    """The heap to ``ids`` / ``vals``, best first (popping its minimum into the last free place),
    equal scores by item; index 0 where a score is not finite (as for places left empty)."""
    n = nh
    while n > 0:
        n -= 1
        vals[n], ids[n] = hv[0], hi[0]
        hv[0], hi[0] = hv[n], hi[n]
        _sift(hv, hi, 0, n)
    j = 0
    while j < nh:
        e = j + 1
        while e < nh and vals[e] == vals[j]:
            e += 1
        _insertion_sort(ids, j, e)  # runs of equal scores are short
        j = e
    for j in range(nh):
        if not np.isfinite(vals[j]):
            ids[j] = 0


@numba.njit(**_JIT)
def bound_first(
    first: np.ndarray, Q: np.ndarray, C: int, qn: np.ndarray, tail_norm: np.ndarray, tail_b: np.ndarray,
    order: np.ndarray, W: np.ndarray, b: np.ndarray, drop: np.ndarray, drop_at: np.ndarray, hv: np.ndarray,
    hi: np.ndarray, nh: np.ndarray, cand: np.ndarray, nc: np.ndarray,
) -> np.ndarray:
    """Stage 1 of :class:`nextclick.ranking.bounded.TopK`'s product path, per query row ``i``: the
    ``C`` best approximate scores of chunk 0 (``first[i]``) start the heap of the k best
    (``hv[i, :nh[i]]``, items ``hi[i]``; their positions in ``cand[i, :nc[i]]``). Returns how
    many chunks in norm order the row needs: those before the first whose bound ``||q||
    tail_norm[c] + tail_b[c]`` on every row from it on is below the heap's k-th best (all when
    the heap is not full). Items in ``drop[drop_at[i]:drop_at[i + 1]]`` (sorted) never enter."""
    n, r0 = first.shape
    k = hv.shape[1]
    n_chunks = tail_norm.shape[0] - 1
    stops = np.full(n, n_chunks, dtype=np.int64)
    m = min(C, r0)
    h = np.empty(max(1, m), dtype=first.dtype)
    hp = np.empty(h.shape[0], dtype=np.int64)
    for i in range(n):
        if m < 1:
            continue
        nh[i], nc[i] = _start_heap(first[i], m, h, hp, Q[i], order, W, b, drop, drop_at[i], drop_at[i + 1], hv[i],
                                   hi[i], cand[i])
        if nh[i] == k:
            lb = hv[i, 0]
            for c in range(1, n_chunks):
                if qn[i] * tail_norm[c] * (1 + 1e-5) + tail_b[c] + 1e-5 * abs(lb) < lb:
                    stops[i] = c
                    break
    return stops


@numba.njit(**_JIT)
def bound_rest(
    S: np.ndarray, lens: np.ndarray, qres: np.ndarray, res: np.ndarray, slack: np.ndarray, Q: np.ndarray,
    order: np.ndarray, W: np.ndarray, b: np.ndarray, drop: np.ndarray, drop_at: np.ndarray, hv: np.ndarray,
    hi: np.ndarray, nh: np.ndarray, cand: np.ndarray, nc: np.ndarray, ids: np.ndarray, vals: np.ndarray,
) -> np.ndarray:
    """Stage 2 of the product path, per query row ``i``: every row ``p`` of ``S[i, :lens[i]]``
    (approximate scores in norm order) whose bound ``S[i, p] + qres[i] res[p] + slack[i]`` reaches
    the heap's k-th best is scored exactly and offered to the heap, which then goes to
    ``ids[i]`` / ``vals[i]`` (``vals`` pre-filled with -inf). Returns the rows scored exactly."""
    n = S.shape[0]
    blk = 256
    scored = nc.copy()
    hit = np.empty(blk, dtype=np.int64)
    ex = np.empty(blk)
    for i in range(n):
        for lo in range(0, lens[i], blk):
            hi_p = min(lo + blk, lens[i])
            nh[i], m = _offer_block(S[i, lo:hi_p], lo, hi_p, res, qres[i], slack[i], Q[i], order, W, b, drop,
                                    drop_at[i], drop_at[i + 1], hv[i], hi[i], nh[i], cand[i], nc[i], hit, ex)
            scored[i] += m
        _finish(hv[i], hi[i], nh[i], ids[i], vals[i])
    return scored


@numba.njit(fastmath={"reassoc", "contract"}, **_JIT)
def _int8_block(Wq: np.ndarray, bs: np.ndarray, qs: np.ndarray, bi: int, out: np.ndarray) -> None:
    """``out[:blk]`` = approximate score (+ bias) of the rows of block ``bi``: ``Wq[bi]`` (r,
    blk) holds their projections in int8 steps, one dimension after another, so each dimension is
    one vectorised pass over the block's rows; ``qs`` is the query's projection x the steps."""
    r, blk = Wq.shape[1], Wq.shape[2]
    base = bi * blk
    for p in range(blk):
        out[p] = bs[base + p]
    j = 0
    while j + 4 <= r:  # four dimensions per pass: a quarter of the loads and stores of ``out``
        q0, q1, q2, q3 = qs[j], qs[j + 1], qs[j + 2], qs[j + 3]
        for p in range(blk):
            out[p] += (q0 * np.float32(Wq[bi, j, p]) + q1 * np.float32(Wq[bi, j + 1, p])) + (
                q2 * np.float32(Wq[bi, j + 2, p]) + q3 * np.float32(Wq[bi, j + 3, p]))
        j += 4
    while j < r:
        qj = qs[j]
        for p in range(blk):
            out[p] += qj * np.float32(Wq[bi, j, p])
        j += 1


@numba.njit(**_JIT)
def scan_topk(
    Q: np.ndarray, k: int, C: int, drop: np.ndarray, drop_at: np.ndarray, P: np.ndarray, e: float, rel: float,
    norm0: float, bmax: float, step: np.ndarray, Wq: np.ndarray, bs: np.ndarray, res: np.ndarray, norms: np.ndarray,
    tail_b: np.ndarray, r0: int, order: np.ndarray, W: np.ndarray, b: np.ndarray, max_scored: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The scan path of :class:`nextclick.ranking.bounded.TopK` (a lone click's whole top-k in one call),
    rows in blocks of ``blk`` in norm order: ``Wq[p // blk, :, p % blk]`` is row p's projection
    in int8 steps of ``step`` (per dimension), ``bs`` the bias (-inf on padding rows),
    ``norms[p]`` bounds the norm and ``tail_b[p]`` the bias of every row from p on; ``P``, ``e``
    (the int8 rounding), ``rel``, ``norm0``, ``bmax``: as :func:`bound_queries`.

    Stage 1: the ``C`` best approximate scores of the first ``r0`` rows start the heap. Stage 2,
    block by block: the rows whose bound reaches the heap's k-th best are scored exactly and
    offered to it (as in :func:`bound_rest`), until ``||q|| norms[p] + tail_b[p]`` falls below it.
    Row i never returns ``drop[drop_at[i]:drop_at[i + 1]]`` (sorted). Returns ids, scores (float32,
    best first; index 0 and -inf where fewer qualify), per row whether it gave up (more than
    ``max_scored`` rows to score exactly: the caller scores it another way), and the rows scored
    exactly in all."""
    n = Q.shape[0]
    V = order.shape[0]
    nb, r, blk = Wq.shape
    nb0 = min(nb, max(1, (r0 + blk - 1) // blk))
    r0 = min(nb0 * blk, V)
    qp, qres, qn, slack = bound_queries(Q, P, e, rel, norm0, bmax)
    ids = np.zeros((n, k), dtype=np.int64)
    vals = np.full((n, k), -np.inf, dtype=np.float32)
    qs = np.empty(r, dtype=np.float32)
    a = np.empty(nb0 * blk, dtype=np.float32)
    m = min(C, r0)
    h = np.empty(max(1, m), dtype=np.float32)
    hp = np.empty(h.shape[0], dtype=np.int64)
    hv = np.empty(k)
    hi = np.empty(k, dtype=np.int64)
    cand = np.empty(h.shape[0], dtype=np.int64)
    hit = np.empty(blk, dtype=np.int64)
    ex = np.empty(blk)
    gave_up = np.zeros(n, dtype=np.bool_)
    scored = 0
    for i in range(n):
        for j in range(r):
            qs[j] = np.float32(np.float64(qp[i, j]) * step[j])
        lo_d, hi_d = drop_at[i], drop_at[i + 1]
        for bi in range(nb0):
            _int8_block(Wq, bs, qs, bi, a[bi * blk :])
        nh = nc = 0
        if m >= 1:
            nh, nc = _start_heap(a[:r0], m, h, hp, Q[i], order, W, b, drop, lo_d, hi_d, hv, hi, cand)
        row = nc
        for bi in range(nb):
            lo = bi * blk
            if lo >= V:
                break
            if nh == k and qn[i] * norms[lo] * (1 + 1e-5) + tail_b[lo] + 1e-5 * abs(hv[0]) < hv[0]:
                break  # no row from here on can reach the k best
            if bi >= nb0:
                _int8_block(Wq, bs, qs, bi, a)
                blk_a = a[:blk]
            else:
                blk_a = a[lo : lo + blk]
            nh, got = _offer_block(blk_a, lo, min(lo + blk, V), res, qres[i], slack[i], Q[i], order, W, b, drop, lo_d,
                                   hi_d, hv, hi, nh, cand, nc, hit, ex)
            row += got
            if row > max_scored:
                gave_up[i] = True
                break
        scored += row
        if not gave_up[i]:
            _finish(hv, hi, nh, ids[i], vals[i])
    return ids, vals, gave_up, scored

