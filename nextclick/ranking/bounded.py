"""Exact top-k over a large catalogue for dot-product models, fast enough to serve.

GRU4Rec and SASRec score the next click as ``q @ W.T (+ b)``: a query vector per session against
the whole item matrix W (n_items + 1, d). At 100k items and d = 100, W is 42 MB of float32, bigger
than this machine's 32 MB L3 cache, so every click streams it from memory (about 4 ms on one core).

:class:`TopK` (mode ``fp16``) never computes most of those scores exactly. It bounds them from
above with a small approximate copy of W, scores exactly only the rows whose bound reaches the
k-th best exact score found so far, and so returns exactly what float32 scoring returns (the
same items and scores, up to summation order):

* **Projection.** The rows are projected on their first ``rank`` principal directions P (64 of
  d = 100 in the benchmark's GRU4Rec). For a row x and a query q, ``q . x = (P'q) . (P'x) + r_q .
  r_x`` where r are the parts P leaves out, so ``q . x <= (P'q) . (P'x) + ||r_q|| ||r_x||``
  (Cauchy-Schwarz); ``||r_x||`` is stored per row (rounded up). Trained item vectors concentrate
  on few directions, so this bound is tight: in the benchmark about a hundred rows of 105k reach
  the k-th best score. With ``rank`` = d nothing is left out.
* **Approximate copies.** The projected rows are kept twice: in half precision packed for
  fbgemm's fp16 GEMM (the product path: one product for all queries of a batch) and in int8
  steps per dimension, blocked and transposed for a compiled scan (the scan path, for one or two
  queries: a quarter of the bytes and no per-call overhead). The largest rounding error of a row
  in each copy (``e``) and a float32 margin enter the bound; the bias is added in float32.
* **Norm order.** The rows are stored by decreasing norm; no row from position p on scores more
  than ``||q|| ||x_p|| + max b``, so the scan stops, and the product skips whole chunks (up to 8),
  once that falls below the k-th best (after the length-based bucketing of exact
  maximum-inner-product search, e.g. Teflioudi et al., "LEMP", SIGMOD 2015).
* **Order of work.** The best approximate scores of the first rows (``k + margin`` of them) are
  scored exactly first, so the k-th best is known early and most bounds fail at once.

The per-query work runs in compiled loops (:mod:`nextclick.ranking.kernels`, numba, compiled once and
cached). Which rank, and whether the scan path is used, is decided when the index is built, on
proxy queries (sums of three of the largest rows): if the projection bounds too loosely, rank =
d; if the int8 copy does, the product path serves every batch. A scan that would score more than
``max(4096, V // 16)`` rows exactly gives the query to the product path (counted in
``fallbacks``).

``mode``: ``exact`` (float32 product only), ``fp16`` (the bounds above), ``auto`` (fp16 when W is
larger than ``auto_bytes``, else exact). Without fbgemm's fp16 GEMM (non-x86 torch builds) the
scan path serves every batch and a query it gives up on is scored exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from nextclick.ranking.exact import top_k_rows

log = logging.getLogger(__name__)

Mode = Literal["auto", "exact", "fp16"]
MODES = ("auto", "exact", "fp16")
BLOCK = 256  # rows per block of the int8 copy
PROXY_BUDGET = 512  # rows scored exactly per proxy query, on average, above which a bound is too loose
BUILD_ROWS = 1 << 16  # rows handled at a time while the index is built (float64 slices of ~50 MB at d = 100)


def fp16_available() -> bool:
    """Whether this torch build has fbgemm's packed fp16 linear (x86 CPU builds do)."""
    try:
        w = torch.zeros(2, 2)
        p = torch.ops.quantized.linear_prepack_fp16(w, None)
        torch.ops.quantized.linear_dynamic_fp16(torch.zeros(1, 2), p)
        return True
    except (RuntimeError, AttributeError):
        return False


class TopK:
    """Top-k of ``q @ W.T + b`` per query row, with exclusions, allow- and deny-lists.

    ``W``: (V, d) float32 item matrix (row 0 = padding, never returned); ``b``: (V,) or None.
    ``rank``: principal directions of the bound (None: up to 64, checked on proxy queries);
    ``scan_max``: batches of up to this many queries take the scan path (when it passed its
    check); ``chunk_rows``: rows per chunk of the product path (at most 8 chunks).
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor | None = None, mode: Mode = "auto",
                 margin: int = 8, auto_bytes: int = 8 << 20, chunk_rows: int = 8192, rank: int | None = None,
                 scan_max: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"scoring mode must be one of {MODES}, got {mode!r}")
        self.W = W.detach().float().contiguous()
        self.b = None if b is None else b.detach().float().contiguous()
        self.margin = int(margin)
        big = self.W.numel() * 4 > auto_bytes
        self.mode: str = "fp16" if mode == "fp16" or (mode == "auto" and big) else "exact"
        self.fallbacks = 0  # scan-path rows that gave up (too many rows to score exactly)
        self.rows = 0
        self.scored = 0  # catalogue rows the fp16 product computed (the norm order skips the others)
        self.exact = 0  # rows scored exactly
        if self.mode == "fp16":
            self.product = fp16_available()
            if not self.product:
                log.warning("fbgemm fp16 GEMM unavailable in this torch build: the int8 scan serves every batch")
            self.scan_max = int(scan_max) if self.product else 1 << 62
            self._prepare(chunk_rows, rank)
            self.rows = self.scored = self.fallbacks = self.exact = 0

    # ------------------------------------------------------------------ index
    def _prepare(self, chunk_rows: int, rank: int | None) -> None:
        V, d = self.W.shape
        # row norms and the Gram matrix W'W in float64, a slice of rows at a time: no float64
        # copy of W (at two million rows that would be gigabytes)
        norms = np.empty(V)
        gram = torch.zeros(d, d, dtype=torch.float64)
        for lo in range(0, V, BUILD_ROWS):
            c = self.W[lo : lo + BUILD_ROWS].double()
            norms[lo : lo + len(c)] = torch.linalg.vector_norm(c, dim=1).numpy()
            gram += c.T @ c
        order = np.argsort(-norms, kind="stable")  # decreasing norm, ties in item order
        self._order_np, self._W_np = order, self.W.numpy()  # zero-copy views
        self._b_np = np.zeros(0, np.float32) if self.b is None else self.b.numpy()  # empty: no bias
        bs = np.zeros(V) if self.b is None else self._b_np[order].astype(np.float64)
        ns = norms[order]
        self._norm0 = float(ns[0]) if V else 0.0
        finite = bs[np.isfinite(bs)]  # (an item with bias -inf can never score)
        self._bmax = float(np.abs(finite).max()) if finite.size else 0.0
        suffix_b = np.maximum.accumulate(bs[::-1])[::-1]
        self._norms = ns * (1 + 1e-9)  # per row in norm order: the scan's stopping bound
        self._tail_b_rows = suffix_b.copy()
        self._r0 = int(min(V, max(4096, chunk_rows)))
        self._chunk_rows = chunk_rows
        vecs = torch.linalg.eigh(gram)[1].flip(1) if (rank is None or rank < d) else None
        r = min(64, d) if rank is None else max(1, min(int(rank), d))
        self._build(bs, vecs, r)
        if rank is None and r < d and self._proxy_cost(self.product) > PROXY_BUDGET:
            log.info("top-k: the first %d principal directions bound the scores too loosely; using all %d", r, d)
            self._packs, self._Wq = [], np.zeros((0, 0, 0), np.int8)  # let the first copies go before the second
            self._build(bs, vecs, d)
        self.scan = self.scan_max > 0
        if self.scan and self.product and self._proxy_cost(False) > PROXY_BUDGET:
            log.info("top-k: the int8 copy bounds the scores too loosely; fp16 products for every batch")
            self.scan = False
        # compile the loops (or load them from numba's cache) now rather than on a first request,
        # with the largest rows as queries (a zero query would tie every item and score them all)
        warm = torch.from_numpy(self._W_np[self._order_np[:3]].copy())
        self.topk(warm, 1)
        self.topk(warm[:1], 1)

    def _projected(self, lo: int, hi: int, P: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``lo:hi`` in norm order, float64, and their projection on ``P`` (themselves without)."""
        Ws = torch.from_numpy(self._W_np[self._order_np[lo:hi]]).double()
        return Ws, (Ws if P is None else Ws @ P)

    def _build(self, bs: np.ndarray, vecs: torch.Tensor | None, r: int) -> None:
        """The approximate copies of the rows (in norm order, float64 a slice at a time) projected
        on the first ``r`` of ``vecs`` (all of them, not projected, when r = d). Two passes over
        the rows: the int8 steps need every row's projection first."""
        V, d = self.W.shape
        self.rank = r
        # float32 rounding of the approximate sums (r terms, the bias, the residual term) and of
        # the exact score, relative to the largest finite score: at least 1e-5
        self._rel = max(1e-5, 2 * (r + 4) * 2.0**-24)
        P = vecs[:, :r].contiguous() if r < d else None
        self._P = P.numpy() if P is not None else np.zeros((d, 0))
        nb = (V + BLOCK - 1) // BLOCK
        pad = nb * BLOCK - V
        res = np.zeros(V, np.float64)
        Wp32 = torch.empty(V, r) if self.product else None
        amax = torch.zeros(r, dtype=torch.float64)
        e16 = 0.0
        for lo in range(0, V, BUILD_ROWS):
            hi = min(V, lo + BUILD_ROWS)
            Ws, Wp = self._projected(lo, hi, P)
            if P is not None:
                res[lo:hi] = torch.linalg.vector_norm(Ws - Wp @ P.T, dim=1).numpy() * (1 + 1e-6)
            amax = torch.maximum(amax, Wp.abs().amax(0))
            if Wp32 is not None:
                c32 = Wp.float().clamp(-65504, 65504)  # what fbgemm's packing does to the half-precision range
                Wp32[lo:hi] = c32
                e16 = max(e16, float(torch.linalg.vector_norm(Wp - c32.half().double(), dim=1).max()))
        res32 = np.nextafter(res.astype(np.float32), np.float32(np.inf)) if P is not None else np.zeros(V, np.float32)
        self._res = np.concatenate([res32, np.zeros(pad, np.float32)])  # rounded up
        if Wp32 is not None:  # fp16 copy in chunks packed for fbgemm, the bias (float32) in the packed op
            n_chunks = max(1, min(8, V // max(self._chunk_rows, 1)))
            self._bounds = np.linspace(0, V, n_chunks + 1).astype(np.int64)
            b32 = None if self.b is None else torch.from_numpy(bs.astype(np.float32))
            self._packs = [
                torch.ops.quantized.linear_prepack_fp16(Wp32[lo:hi].contiguous(), None if b32 is None else b32[lo:hi].contiguous())
                for lo, hi in zip(self._bounds[:-1], self._bounds[1:])
            ]
            del Wp32
            starts = self._bounds[:-1]
            self._tail_norm = np.append(self._norms[starts], 0.0)  # max ||W_i|| over the rows from chunk c on
            self._tail_b = np.append(self._tail_b_rows[starts], -np.inf)  # max b_i over the same rows
            self._e16 = e16
        # int8 copy: per dimension steps, blocks of BLOCK rows stored dimension after dimension
        step = amax.clamp(min=1e-30) / 127
        Wq = np.zeros((nb * BLOCK, r), np.int8)
        e8 = 0.0
        for lo in range(0, V, BUILD_ROWS):
            hi = min(V, lo + BUILD_ROWS)
            _, Wp = self._projected(lo, hi, P)
            q = torch.round(Wp / step).to(torch.int8)
            Wq[lo:hi] = q.numpy()
            e8 = max(e8, float(torch.linalg.vector_norm(Wp - q.double() * step, dim=1).max()))
        self._e8 = e8
        self._Wq = np.ascontiguousarray(Wq.reshape(nb, BLOCK, r).transpose(0, 2, 1))
        self._step = step.numpy()
        self._bs = np.concatenate([bs.astype(np.float32), np.full(pad, -np.inf, np.float32)])  # padding never qualifies

    def _proxy_cost(self, product: bool) -> float:
        """Rows scored exactly per query, on average, by one path for 64 proxy queries: sums of
        three rows drawn from the largest tenth (seeded)."""
        V = self.W.shape[0]
        rng = np.random.default_rng(0)
        top = self._order_np[: max(3, V // 10)]
        Q = torch.from_numpy(self._W_np[rng.choice(top, (64, 3))].sum(1))
        drop = [np.zeros(1, np.int64)] * 64
        before = self.exact
        if product:
            self._product_topk(Q, 20, drop)
        else:
            self._scan_topk(Q, 20, drop, limit=V)
        cost = (self.exact - before) / 64
        self.exact = before
        return cost

    # ------------------------------------------------------------------ scoring
    def exact_scores(self, Q: torch.Tensor) -> torch.Tensor:
        """(B, V) float32 scores."""
        return torch.addmm(self.b, Q, self.W.t()) if self.b is not None else Q @ self.W.t()

    def _approx(self, Q: torch.Tensor, chunk: int) -> torch.Tensor:
        """Half-precision scores of the rows of ``chunk`` (in norm order)."""
        return torch.ops.quantized.linear_dynamic_fp16(Q, self._packs[chunk])

    @staticmethod
    def _top(s: torch.Tensor, n: int, block: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``torch.topk(s, n, dim=1)`` (the same values, best first) for long rows, about 3x faster:
        the maxima of blocks of ``block`` columns pick the ``n`` blocks that hold the top ``n``
        values (each of those values lies in a block whose maximum is at least as large), and
        top-k then runs over those ``n * block`` columns only."""
        B, V = s.shape
        if V <= 8 * n * block:
            return torch.topk(s, n, dim=1)
        nb = V // block
        bm = s[:, : nb * block].reshape(B, nb, block).amax(-1)
        if V % block:
            bm = torch.cat([bm, s[:, nb * block :].amax(-1, keepdim=True)], 1)
        _, bi = torch.topk(bm, n, dim=1)
        idx = (bi[:, :, None] * block + torch.arange(block)).reshape(B, -1)
        over = idx >= V  # the last, partial block
        v = s.gather(1, idx.clamp(max=V - 1)).masked_fill_(over, -torch.inf)
        a, j = torch.topk(v, n, dim=1)
        return a, idx.gather(1, j)

    @staticmethod
    def _dropped(exclude: np.ndarray | None, deny: np.ndarray | None) -> np.ndarray:
        """Item indices a row must not return, sorted: padding (0), excluded and denied items."""
        parts = [np.zeros(1, np.int64)] + [np.asarray(x, np.int64) for x in (exclude, deny) if x is not None and len(x)]
        return np.sort(np.concatenate(parts)) if len(parts) > 1 else parts[0]  # repeats do no harm

    def topk(
        self,
        Q: torch.Tensor | np.ndarray,
        k: int,
        exclude: Sequence[np.ndarray | None] | None = None,
        allow: Sequence[np.ndarray | None] | None = None,
        deny: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) item indices and exact scores, best first; a row ends in -inf scores (and
        index 0) when fewer than k items qualify. ``exclude``/``allow``/``deny``: per row, an
        array of item indices or None."""
        Q = torch.as_tensor(Q, dtype=torch.float32)
        if Q.ndim == 1:
            Q = Q[None]
        Q = Q.contiguous()
        B, V = Q.shape[0], self.W.shape[0]
        k = int(min(max(k, 1), V - 1))
        if self.mode == "fp16" and self.scan and 0 < B <= self.scan_max and (allow is None or all(a is None for a in allow)):
            return self._lone(Q, k, exclude, deny)
        exclude = list(exclude) if exclude is not None else [None] * B
        allow = list(allow) if allow is not None else [None] * B
        deny = list(deny) if deny is not None else [None] * B
        ids = np.zeros((B, k), np.int64)
        out = np.full((B, k), -np.inf, np.float32)
        self.rows += B
        with torch.no_grad():
            plain = [r for r in range(B) if allow[r] is None]
            for r in range(B):  # allow-lists: exact scores of the allowed items only
                if allow[r] is not None:
                    ids[r], out[r] = self._allowed(Q[r], k, allow[r], exclude[r], deny[r])
            if not plain:
                return ids, out
            P = Q[plain] if len(plain) < B else Q
            n = len(plain)
            if self.mode == "exact":  # small catalogues: numpy's partial sort of the score rows
                sn = self.exact_scores(P).numpy()
                for i, r in enumerate(plain):
                    d = self._dropped(exclude[r], deny[r])
                    sn[i, d[(d >= 0) & (d < V)]] = -np.inf  # ids outside the catalogue: nothing to drop, as in fp16
                ixn, vn = top_k_rows(sn, k)
            else:
                drop = [self._dropped(exclude[r], deny[r]) for r in plain]
                ixn, vn = self._fp16_topk(P, k, drop)
            if n == B:
                ids, out = ixn.astype(np.int64, copy=False), vn.astype(np.float32, copy=False)
            else:
                ids[plain], out[plain] = ixn, vn
        bad = ~np.isfinite(out)
        ids[bad] = 0
        return ids, out

    def _fp16_topk(self, P: torch.Tensor, k: int, drop: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The bounded paths (module docstring). ``drop``: per row, the sorted item indices it
        must not return (repeats allowed)."""
        if self.scan and P.shape[0] <= self.scan_max:
            return self._scan_topk(P, k, drop)
        return self._product_topk(P, k, drop)

    def _lone(self, Q: torch.Tensor, k: int, exclude: Sequence[np.ndarray | None] | None,
              deny: Sequence[np.ndarray | None] | None) -> tuple[np.ndarray, np.ndarray]:
        """A query or two without allow-lists (a lone click): straight to the scan in one compiled
        call; what :meth:`topk` does around it otherwise costs as much as the scan for such calls."""
        self.rows += Q.shape[0]
        return self._scan_topk(Q, k, [self._dropped(exclude[r] if exclude is not None else None,
                                                    deny[r] if deny is not None else None) for r in range(Q.shape[0])])

    def _gave_up(self, P: torch.Tensor, k: int, drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A query the scan gave up on (too many rows to score exactly): the product path, or
        exact scoring without fbgemm. ``drop``: sorted item indices it must not return."""
        self.fallbacks += 1
        if self.product:
            (ids,), (out,) = self._product_topk(P, k, [drop])
        else:
            s = self.exact_scores(P)
            s[0, torch.from_numpy(drop)] = -torch.inf
            v, ix = self._top(s, k)
            ids, out = ix[0].numpy(), v[0].numpy()
            ids[~np.isfinite(out)] = 0
        return ids, out

    def _product_topk(self, P: torch.Tensor, k: int, drop: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from nextclick.ranking import kernels

        V, n = self.W.shape[0], P.shape[0]
        Q = P.numpy()
        qp, qres, qn, slack = kernels.bound_queries(Q, self._P, self._e16, self._rel, self._norm0, self._bmax)
        qpt = torch.from_numpy(qp)
        first = self._approx(qpt, 0)
        C = min(k + self.margin, V)  # stage-1 rows per query
        hv = np.full((n, k), -np.inf)
        hi = np.zeros((n, k), np.int64)
        nh = np.zeros(n, np.int64)
        cand = np.empty((n, max(1, C)), np.int64)
        nc = np.zeros(n, np.int64)
        drops, drop_at = self._flat(drop)
        stops = kernels.bound_first(first.numpy(), Q, C, qn, self._tail_norm, self._tail_b, self._order_np, self._W_np,
                                    self._b_np, drops, drop_at, hv, hi, nh, cand, nc)
        top = int(stops.max())
        S = first if top == 1 else torch.cat([first] + [self._approx(qpt, c) for c in range(1, top)], 1)
        self.scored += n * int(self._bounds[top])  # the products score the chunks any row needs, for every row
        ids = np.zeros((n, k), np.int64)
        vals = np.full((n, k), -np.inf, np.float32)
        exact = kernels.bound_rest(S.numpy(), self._bounds[stops], qres, self._res, slack, Q, self._order_np,
                                   self._W_np, self._b_np, drops, drop_at, hv, hi, nh, cand, nc, ids, vals)
        self.exact += int(exact.sum())
        return ids, vals

    def _scan_topk(self, P: torch.Tensor, k: int, drop: list[np.ndarray], limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The scan path in one compiled call. ``drop``: per row, the sorted item indices it must
        not return; ``limit``: rows scored exactly before a row gives up."""
        from nextclick.ranking import kernels

        V = self.W.shape[0]
        drops, at = self._flat(drop)
        ids, out, gave_up, exact = kernels.scan_topk(
            P.numpy(), k, min(k + self.margin, V), drops, at, self._P, self._e8, self._rel, self._norm0, self._bmax,
            self._step, self._Wq, self._bs, self._res, self._norms, self._tail_b_rows, self._r0, self._order_np,
            self._W_np, self._b_np, max(4096, V // 16) if limit is None else limit)
        self.exact += int(exact)
        for i in np.flatnonzero(gave_up):
            ids[i], out[i] = self._gave_up(P[i : i + 1], k, drop[i])
        return ids, out

    @staticmethod
    def _flat(drop: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The rows' drop lists end to end, and where each starts (``at[i]:at[i + 1]``)."""
        if len(drop) == 1:  # a lone click: nothing to join
            return drop[0], np.array([0, drop[0].size], np.int64)
        at = np.zeros(len(drop) + 1, np.int64)
        np.cumsum([x.size for x in drop], out=at[1:])
        return np.concatenate(drop), at

    def _allowed(self, q: torch.Tensor, k: int, allow: np.ndarray, exclude: np.ndarray | None,
                 deny: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        a = np.unique(np.asarray(allow, np.int64))
        a = a[(a > 0) & (a < self.W.shape[0])]
        drop = [x for x in (exclude, deny) if x is not None and len(x)]
        if drop:
            a = np.setdiff1d(a, np.concatenate([np.asarray(x, np.int64) for x in drop]))
        ids = np.zeros(k, np.int64)
        out = np.full(k, -np.inf, np.float32)
        if a.size:
            at = torch.from_numpy(a)
            s = self.W[at] @ q + (self.b[at] if self.b is not None else 0.0)
            n = min(k, a.size)
            v, ix = torch.topk(s, n)
            ids[:n], out[:n] = a[ix.numpy()], v.numpy()
        return ids, out
