"""Exact top-k over a large catalogue for dot-product models, fast enough to serve.

GRU4Rec and SASRec score the next click as ``q @ W.T (+ b)``: a query vector per session against
the whole item matrix W (n_items + 1, d). At 100k items and d = 100, W is 42 MB of float32, bigger
than this machine's 32 MB L3 cache, so every click streams it from memory (about 4 ms on one core).

:class:`TopK` keeps a half-precision copy of W packed for fbgemm's fp16 GEMM (21 MB: cache
resident, about 0.6 ms per click at 100k items), uses it only to pick ``k + margin`` candidates,
re-scores those candidates exactly in float32, and proves the result exact: with
``e = max_i ||W_i - fp16(W_i)||_2`` every approximate score is within ``||q||_2 * e`` of the exact
one, so if the k-th exact candidate score beats the largest approximate score left outside the
candidates by more than that bound, no item outside can belong to the top k. A row that fails the
check (rare: near-ties at the cut) is scored again exactly over the whole catalogue, and counted.
The returned items and scores are therefore always those of exact float32 scoring.

Norm pruning (exact; after the length-based bucketing of exact maximum-inner-product search, e.g.
Teflioudi et al., "LEMP", SIGMOD 2015): the rows are stored in order of decreasing norm, in up to
8 chunks. The first chunk's approximate scores give a lower bound on each query's k-th exact score;
every row of a later chunk scores at most ``||q|| max ||W_i|| + max b_i`` over the rows from that
chunk on (Cauchy-Schwarz), so chunks whose bound is below it are never scored, and the bound joins
the exactness proof. Trained recommenders leave long-tail items with small vectors (in the
benchmark's 105k-item GRU4Rec about half the rows), which is what this skips; with norms all alike
everything is scored, as before.

The fp16 products run batched (one fbgemm call per chunk for all queries); everything else runs
per query in two compiled loops (:mod:`nextclick.kernels`, numba, compiled once and cached): the
chunks a query needs, its candidates (pre-filtered by the C-th best approximate score of the first
chunk: each of the C best scores is at least that), their exact scores, the exclusions and the
proof. A few dozen numpy and torch calls per batch, which took as long as the product for the
one to eight queries a service scores at once, became two calls.

``mode``: ``exact`` (float32 product only), ``fp16`` (candidates from the packed half-precision
copy, proven exact as above), ``auto`` (fp16 when W is larger than ``auto_bytes`` and the fbgemm
op is available, else exact).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from nextclick.models.base import top_k_rows

log = logging.getLogger(__name__)

Mode = Literal["auto", "exact", "fp16"]
MODES = ("auto", "exact", "fp16")


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
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor | None = None, mode: Mode = "auto",
                 margin: int = 32, auto_bytes: int = 8 << 20, chunk_rows: int = 8192) -> None:
        if mode not in MODES:
            raise ValueError(f"scoring mode must be one of {MODES}, got {mode!r}")
        self.W = W.detach().float().contiguous()
        self.b = None if b is None else b.detach().float().contiguous()
        self.margin = int(margin)
        big = self.W.numel() * 4 > auto_bytes
        self.mode: str = "fp16" if mode == "fp16" or (mode == "auto" and big) else "exact"
        if self.mode == "fp16" and not fp16_available():
            log.warning("fbgemm fp16 GEMM unavailable in this torch build: exact float32 scoring")
            self.mode = "exact"
        self.fallbacks = 0  # rows re-scored over the whole catalogue after a failed check
        self.rows = 0
        self.scored = 0  # catalogue columns scored by the fp16 product (pruning skips the others)
        if self.mode == "fp16":
            self._prepare_fp16(chunk_rows)
            # compile the loops (or load them from numba's cache) now rather than on a first request
            self.topk(torch.zeros(1, self.W.shape[1]), 1)
            self.rows = self.scored = self.fallbacks = 0

    def _prepare_fp16(self, chunk_rows: int) -> None:
        """Rows sorted by norm, largest first, in chunks each packed for fbgemm's fp16 GEMM (the
        bias goes into the packed op; its half-precision rounding is covered by ``_eb``), and for
        each chunk a bound on the score of every row from that chunk on (see :meth:`topk`)."""
        W, b = self.W, self.b
        V = W.shape[0]
        norms = torch.linalg.vector_norm(W.double(), dim=1)
        self._order = torch.argsort(norms, descending=True, stable=True)
        n_chunks = max(1, min(8, V // max(chunk_rows, 1)))
        self._bounds = np.linspace(0, V, n_chunks + 1).astype(np.int64)
        Ws = W[self._order]
        bs = None if b is None else b[self._order]
        self._packs = [
            torch.ops.quantized.linear_prepack_fp16(Ws[lo:hi].contiguous(), None if bs is None else bs[lo:hi].contiguous())
            for lo, hi in zip(self._bounds[:-1], self._bounds[1:])
        ]
        ns = norms[self._order].numpy()
        bsn = np.zeros(V) if bs is None else bs.double().numpy()
        suffix_b = np.maximum.accumulate(bsn[::-1])[::-1]
        starts = self._bounds[:-1]
        self._tail_norm = np.append(ns[starts], 0.0)  # max ||W_i|| over the rows from chunk c on
        self._tail_b = np.append(suffix_b[starts], -np.inf)  # max b_i over the same rows
        err = W - W.half().float()
        self._e = float(torch.linalg.vector_norm(err, dim=1).max())
        self._eb = 0.0 if b is None else float((b - b.half().float()).abs().max())
        self._order_np, self._W_np = self._order.numpy(), W.numpy()  # zero-copy views
        self._b_np = np.zeros(0, np.float32) if b is None else b.numpy()  # empty: no bias

    # ------------------------------------------------------------------ scoring
    def exact_scores(self, Q: torch.Tensor) -> torch.Tensor:
        """(B, V) float32 scores."""
        return torch.addmm(self.b, Q, self.W.t()) if self.b is not None else Q @ self.W.t()

    def _approx(self, Q: torch.Tensor, chunk: int) -> torch.Tensor:
        """Half-precision scores of the rows of ``chunk`` (in norm order)."""
        return torch.ops.quantized.linear_dynamic_fp16(Q, self._packs[chunk])

    def _exact_top(self, P: torch.Tensor, k: int, exclude: list, deny: list) -> tuple[np.ndarray, np.ndarray]:
        """The fallback: exact scores over the whole catalogue, masked, top k."""
        sf = self.exact_scores(P)
        self._mask_rows(sf, exclude, deny)
        v, ix = self._top(sf, k)
        return ix.numpy(), v.numpy()

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

    @staticmethod
    def _mask_rows(s: torch.Tensor, exclude: list, deny: list) -> None:
        """-inf at column 0 and at each row's excluded and denied items, in one indexing call."""
        B, V = s.shape
        parts = [np.arange(B, dtype=np.int64) * V]
        for r in range(B):
            for lst in (exclude[r], deny[r]):
                if lst is not None and len(lst):
                    parts.append(np.asarray(lst, np.int64) + r * V)
        s.view(-1)[torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])] = -torch.inf

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
                    sn[i, self._dropped(exclude[r], deny[r])] = -np.inf
                ixn, vn = top_k_rows(sn, k)
            else:
                drop = [self._dropped(exclude[r], deny[r]) for r in plain]
                ixn, vn = self._fp16_topk(P, k, drop, exclude, deny, plain)
            if n == B:
                ids, out = ixn.astype(np.int64, copy=True), vn.astype(np.float32, copy=True)
            else:
                ids[plain], out[plain] = ixn, vn
        bad = ~np.isfinite(out)
        ids[bad] = 0
        return ids, out

    def _fp16_topk(self, P: torch.Tensor, k: int, drop: list[np.ndarray], exclude: list, deny: list,
                   plain: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """fp16 candidates, proven exact (module docstring). ``drop``: per row, the sorted item
        indices it must not return (repeats allowed)."""
        from nextclick import kernels

        V, n = self.W.shape[0], P.shape[0]
        Q = P.numpy()
        first = self._approx(P, 0)
        nd = np.array([d.size for d in drop], dtype=np.int64)
        C = k + self.margin + nd  # candidates per row (before the cap by the rows scored)
        slack, stops, tail, t0 = kernels.fp16_prune(first.numpy(), Q, np.minimum(k + nd, V), C, self._tail_norm,
                                                    self._tail_b, self._e, self._eb)
        top = int(stops.max())
        S = first if top == 1 else torch.cat([first] + [self._approx(P, c) for c in range(1, top)], 1)
        lens = self._bounds[stops]
        self.scored += n * int(self._bounds[top])  # the products score the chunks any row needs, for every row
        ids = np.zeros((n, k), np.int64)
        out = np.full((n, k), -np.inf, np.float32)
        bad = kernels.fp16_top_rows(S.numpy(), lens, t0, np.minimum(C, lens),
                                    self._order_np, self._W_np, self._b_np, Q, np.concatenate(drop),
                                    np.concatenate([[0], np.cumsum(nd)]), slack, tail, ids, out)
        for i in np.flatnonzero(bad):  # a near-tie at the cut: this row over the whole catalogue
            self.fallbacks += 1
            r = plain[i]
            (ids[i],), (out[i],) = self._exact_top(P[i : i + 1], k, [exclude[r]], [deny[r]])
        return ids, out

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
