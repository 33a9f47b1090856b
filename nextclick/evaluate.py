"""Next-click evaluation with full-catalogue ranking and conservative ties.

For every test session and every position t (given clicks 1..t, the target is click t+1; only the
last click for leave-one-out data) the model scores the WHOLE catalogue. The target's rank is the
number of items scoring strictly higher plus the number of OTHER items scoring the same: a target
that ties is ranked after all items it ties with, so a constant model scores zero. NaN scores
count as -inf.

Metrics for K in ``cutoffs``: Recall@K (hit rate), MRR@K, NDCG@K, item coverage@K (share of the
catalogue that appears in any top-K list) and popularity@K (mean training popularity of the
recommended items, relative to the most popular item).

``sampled_negatives=N`` adds the paper-comparison protocol: the target ranked against N items
drawn uniformly from items the session/user never clicked
(:func:`nextclick.data.sampling.uniform_not_in`). Those figures are labelled as sampled wherever
they are printed and are never a substitute for the full-ranking ones.

``max_sessions=N`` evaluates a random subset of N test sessions (those with a target; drawn with
``seed``). The result states it as a subset of SESSIONS: every prediction of those sessions still
ranks the full catalogue, which is not sampling of negatives.

Memory: score blocks hold at most ``batch_size x chunk_items`` scores. A catalogue that fits in
``chunk_items`` columns is scored in whole rows (:meth:`Recommender.iter_scores`). A larger one is
ranked in catalogue chunks for dot-product models (scores ``q @ W.T + b``:
``model.live().output_layer()`` is not None), from their query vectors
(:meth:`Recommender.iter_queries`, in the batches ``iter_scores`` would yield), with no
(targets x catalogue) matrix: :func:`rank_in_chunks` gives the ranks and top-K lists that whole rows
would give. Other models are scored in whole rows of fewer predictions per batch.

Depends only on the recommender interface (``iter_scores``, ``iter_queries``, ``live``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from nextclick.data.sampling import uniform_not_in
from nextclick.data.sessions import Sessions, gather_prefixes
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender
from nextclick.ranking import conservative_rank, top_k_rows

log = logging.getLogger(__name__)

CUTOFFS = (1, 5, 10, 20)
LENGTH_BUCKETS = ((2, 2), (3, 3), (4, 4), (5, 6), (7, 9), (10, 19), (20, 10**9))
#: Default ``chunk_items``: catalogue columns scored at once (a 512-row block of them is 64 MB).
CHUNK_ITEMS = 32768
_MIN_ROWS = 16  # rows of a matrix product formed again for rows a tie decides
SUBSET_PROTOCOL = "random subset of test SESSIONS; each prediction ranks the full catalogue (NOT sampled negatives)"


def _clean(scores: np.ndarray) -> np.ndarray:
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


@dataclass
class EvalResult:
    metrics: dict[str, float]
    by_length: list[dict[str, Any]] = field(default_factory=list)
    sampled: dict[str, Any] | None = None
    subset: dict[str, Any] | None = None  # set when a random subset of the test sessions was evaluated

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        if self.subset is not None:
            out["session_subset"] = self.subset
        if self.by_length:
            out["by_session_length"] = self.by_length
        if self.sampled is not None:
            out["sampled"] = self.sampled
        return out

    def table(self, cutoffs: Sequence[int] = CUTOFFS) -> str:
        m = self.metrics
        lines = [
            f"full-catalogue ranking, {m['n_predictions']:,} predictions over {m['n_items']:,} items (conservative ties)",
        ]
        if self.subset is not None:
            s = self.subset
            lines.append(
                f"on a random SUBSET of the test sessions: {s['n_sessions']:,} of {s['of_sessions']:,} (seed {s['seed']}); "
                "each prediction still ranks the full catalogue (not sampled negatives)"
            )
        lines.append(f"{'K':>4} {'Recall':>8} {'MRR':>8} {'NDCG':>8} {'Coverage':>9} {'Pop':>7}")
        for k in cutoffs:
            lines.append(
                f"{k:>4} {m[f'recall@{k}']:8.4f} {m[f'mrr@{k}']:8.4f} {m[f'ndcg@{k}']:8.4f} "
                f"{m[f'coverage@{k}']:9.4f} {m[f'popularity@{k}']:7.4f}"
            )
        if self.by_length:
            lines.append("by session length:  length  n  Recall@20  MRR@20")
            for b in self.by_length:
                lines.append(f"  {b['length']:>10} {b['n']:>7,} {b['recall@20']:9.4f} {b['mrr@20']:8.4f}")
        if self.sampled is not None:
            s = self.sampled
            lines.append(
                f"SAMPLED metrics ({s['n_negatives']} uniform negatives per target; for comparison with papers "
                "only, not full ranking):"
            )
            lines.append("  " + "  ".join(f"{k}={v:.4f}" for k, v in s.items() if "@" in k))
        return "\n".join(lines)


def _check_vocabulary(model: Recommender, test: Sessions) -> None:
    """Refuse test sessions whose item indices mean other items than the model's."""
    vocab = getattr(model, "vocab_", None)
    if test.vocab is not None and vocab is not None and not test.vocab.same_as(vocab):
        raise NextclickError(
            f"the test sessions are encoded with another item vocabulary ({test.vocab.n_items:,} items) than the "
            f"model's ({vocab.n_items:,} items); encode them with the model's: load_sessions(path, 'test', vocab=model.vocab_)"
        )
    if test.n_items != model.n_items_:
        raise NextclickError(f"the test sessions index {test.n_items:,} items, the model {model.n_items_:,}; encode them with the model's vocabulary")


def evaluate(
    model: Recommender,
    test: Sessions,
    cutoffs: Sequence[int] = CUTOFFS,
    batch_size: int = 512,
    sampled_negatives: int | None = None,
    by_length: bool = False,
    seed: int = 0,
    progress: bool = False,
    max_sessions: int | None = None,
    chunk_items: int | None = CHUNK_ITEMS,
    on_batch: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> EvalResult:
    """Evaluate ``model`` on every next-click target of ``test`` (see the module docstring).

    ``max_sessions``: only a random subset of that many test sessions (drawn with ``seed``), stated in the result.
    ``chunk_items``: catalogue columns scored at once (None: whole score rows of ``batch_size`` predictions, whatever
    the catalogue). ``on_batch(ranks, top-K items, sessions, clicks given)``: called with every batch's predictions.
    """
    if batch_size < 1:
        raise NextclickError(f"batch_size must be >= 1, got {batch_size}")
    if chunk_items is not None and chunk_items < 1:
        raise NextclickError(f"chunk_items must be >= 1, got {chunk_items}")
    _check_vocabulary(model, test)
    cutoffs = tuple(sorted(set(int(k) for k in cutoffs)))
    subset = None
    if max_sessions is not None:
        test, subset = session_subset(test, max_sessions, seed)
    n_items = model.n_items_
    tally = _Tally(cutoffs, model.popularity_, n_items)
    draw = None
    if sampled_negatives:
        draw = partial(_draw_negatives, test, n_neg=sampled_negatives, n_items=n_items, rng=np.random.default_rng(seed))
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=test.n_predictions(), desc="evaluate", unit="pred", leave=False)
    k = min(max(cutoffs), n_items)
    for rank, top, sess, srank, plen in _ranked_batches(model, test, k, batch_size, chunk_items, draw):
        tally.add(rank, top, test.lengths[sess], srank)
        if on_batch is not None:
            on_batch(rank, top, sess, plen)
        if bar is not None:
            bar.update(len(rank))
    if bar is not None:
        bar.close()
    res = tally.result(int(np.count_nonzero(test.lengths >= 2)), by_length, sampled_negatives)
    res.metrics["eval_seconds"] = time.perf_counter() - t0
    res.subset = subset
    return res


def session_subset(test: Sessions, max_sessions: int, seed: int = 0) -> tuple[Sessions, dict[str, Any] | None]:
    """A random subset of ``max_sessions`` of the sessions of ``test`` that have a target (kept in
    their order) and its description; ``test`` itself and None when it has no more than that."""
    if max_sessions < 1:
        raise NextclickError(f"max_sessions must be >= 1, got {max_sessions}")
    has = np.flatnonzero(test.lengths >= 2)
    if has.size <= max_sessions:
        log.info("max_sessions=%d: the test data has %d sessions with a target, evaluating them all", max_sessions, has.size)
        return test, None
    pick = np.sort(np.random.default_rng(seed).choice(has, size=max_sessions, replace=False))
    info = {"n_sessions": int(max_sessions), "of_sessions": int(has.size), "seed": int(seed), "protocol": SUBSET_PROTOCOL}
    return test.select(pick), info


class _Tally:
    """The per-batch figures (ranks, top-K lists, session lengths, sampled ranks), summed up."""

    def __init__(self, cutoffs: tuple[int, ...], popularity: np.ndarray, n_items: int) -> None:
        pop = popularity.astype(np.float64)
        self.pop_rel = pop / max(pop.max(), 1.0)
        self.cutoffs, self.n_items = cutoffs, n_items
        self.seen = {k: np.zeros(n_items + 1, dtype=bool) for k in cutoffs}
        self.pop_sum = {k: 0.0 for k in cutoffs}
        self.ranks: list[np.ndarray] = []
        self.lens: list[np.ndarray] = []
        self.sranks: list[np.ndarray] = []

    def add(self, rank: np.ndarray, top: np.ndarray, lengths: np.ndarray, srank: np.ndarray | None) -> None:
        self.ranks.append(rank)
        self.lens.append(lengths)
        for k in self.cutoffs:
            tk = top[:, :k]
            self.seen[k][tk.ravel()] = True
            self.pop_sum[k] += float(self.pop_rel[tk].sum())
        if srank is not None:
            self.sranks.append(srank)

    def result(self, n_sessions: int, by_length: bool, sampled_negatives: int | None) -> EvalResult:
        rank = np.concatenate(self.ranks) if self.ranks else np.zeros(0, np.int64)
        n, n_items = int(rank.size), self.n_items
        metrics: dict[str, float] = {"n_predictions": n, "n_sessions": n_sessions, "n_items": n_items}
        for k in self.cutoffs:
            metrics[f"recall@{k}"], metrics[f"mrr@{k}"], metrics[f"ndcg@{k}"] = rank_metrics(rank, k)
            metrics[f"coverage@{k}"] = float(self.seen[k][1:].mean())
            metrics[f"popularity@{k}"] = self.pop_sum[k] / max(n * min(k, n_items), 1)
        res = EvalResult(metrics)
        if by_length and n:
            res.by_length = _by_length(rank, np.concatenate(self.lens))
        if sampled_negatives and n:
            res.sampled = _sampled_metrics(np.concatenate(self.sranks), self.cutoffs, sampled_negatives)
        return res


def _ranked_batches(
    model: Recommender,
    test: Sessions,
    k: int,
    batch_size: int,
    chunk_items: int | None,
    draw: Callable[[np.ndarray], np.ndarray] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]]:
    """``(ranks, top-k items, sessions, sampled ranks or None, prefix lengths)`` batch by batch: from whole score
    rows when the catalogue fits in ``chunk_items`` columns or the model is not a dot-product one
    (then ``batch_size x chunk_items`` scores a batch at most), else from query vectors ranked in
    catalogue chunks. ``draw(sess)`` gives the sampled negatives of a batch."""
    n_cols = model.n_items_ + 1
    layer = model.live().output_layer() if chunk_items is not None and n_cols > chunk_items else None
    if layer is None:
        rows = batch_size if chunk_items is None else max(1, min(batch_size, batch_size * chunk_items // n_cols))
        for scores, targets, sess, plen in model.iter_scores(test, batch_size=rows):
            scores = _clean(scores)
            scores[:, 0] = -np.inf
            srank = None
            if draw is not None:
                t = scores[np.arange(targets.size), targets][:, None]
                srank = (np.take_along_axis(scores, draw(sess), axis=1) >= t).sum(axis=1)
            yield conservative_rank(scores, targets), top_k_rows(scores, k)[0], sess, srank, plen
        return
    W, b = layer
    bounds = chunk_bounds(n_cols, chunk_items)
    for q, targets, sess, plen in model.iter_queries(test, batch_size=batch_size):
        neg = None if draw is None else draw(sess)
        r = rank_in_chunks(q, W, b, targets, k, bounds, neg)
        srank = None if r.extra is None else (r.extra >= r.target[:, None]).sum(axis=1)
        yield r.rank, r.top, sess, srank, plen


def rank_metrics(rank: np.ndarray, k: int) -> tuple[float, float, float]:
    """(hit rate = recall, MRR, NDCG) at cutoff ``k`` of 0-based ranks; zeros when there are none."""
    if rank.size == 0:
        return 0.0, 0.0, 0.0
    hit = rank < k
    return (float(hit.mean()), float(np.where(hit, 1.0 / (rank + 1), 0.0).mean()),
            float(np.where(hit, 1.0 / np.log2(rank + 2), 0.0).mean()))


def _by_length(rank: np.ndarray, lengths: np.ndarray) -> list[dict[str, Any]]:
    """Recall@20 and MRR@20 per session-length bucket (``lengths``: each prediction's session length)."""
    out = []
    for lo, hi in LENGTH_BUCKETS:
        m = (lengths >= lo) & (lengths <= hi)
        if m.any():
            recall, mrr, _ = rank_metrics(rank[m], 20)
            label = str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+")
            out.append({"length": label, "n": int(m.sum()), "recall@20": recall, "mrr@20": mrr})
    return out


def _sampled_metrics(sr: np.ndarray, cutoffs: Sequence[int], n_negatives: int) -> dict[str, Any]:
    """HR / NDCG / MRR at each cutoff of the ranks among sampled negatives, labelled as sampled."""
    s: dict[str, Any] = {"n_negatives": int(n_negatives), "protocol": "sampled uniform negatives (NOT full ranking)"}
    for k in cutoffs:
        hr, mrr, ndcg = rank_metrics(sr, k)
        s[f"hr@{k}"], s[f"ndcg@{k}"], s[f"mrr@{k}"] = hr, ndcg, mrr
    return s


def _draw_negatives(test: Sessions, sess: np.ndarray, n_neg: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_neg) uniform negatives per prediction, never an item clicked in its session/sequence."""
    rows, clicked, _ = gather_prefixes(test, sess, test.lengths[sess])  # every click of each row's session
    return uniform_not_in(rng, n_items, (sess.size, n_neg), rows, clicked, max_rounds=100)


# ---------------------------------------------------------------------------- ranking in chunks
class ChunkRanks(NamedTuple):
    """What :func:`rank_in_chunks` finds for a batch of B predictions."""

    rank: np.ndarray  # (B,) conservative 0-based rank of each target
    top: np.ndarray  # (B, k) best items of each row, best first
    target: np.ndarray  # (B,) float32 score of each target
    extra: np.ndarray | None  # (B, n) float32 scores of the asked columns


def chunk_bounds(n_cols: int, chunk_items: int) -> np.ndarray:
    """Boundaries of the fewest column chunks of at most ``chunk_items`` columns, of equal widths
    (to one column), so no chunk is a narrow remainder."""
    n = -(-n_cols // chunk_items)
    return np.arange(n + 1, dtype=np.int64) * n_cols // n


def rank_in_chunks(
    q: Any, W: Any, b: Any | None, targets: np.ndarray, k: int, bounds: np.ndarray, extra: np.ndarray | None = None
) -> ChunkRanks:
    """Ranks and top-``k`` lists under the scores ``q @ W.T + b`` (torch: ``q`` (B, d), ``W`` (V, d),
    ``b`` (V,) or None) with column 0 and NaN at -inf -- what :func:`conservative_rank` and
    :func:`top_k_rows` give on the whole score rows -- forming one chunk of columns (``bounds``) at
    a time; ``extra`` (B, n) columns whose scores to return as well.

    One pass over the chunks. Each row's target score, as any float32 product forms it, lies in a
    window around its float64 dot product (:func:`_target_window`): scores above the window are
    counted, scores inside it kept, and once the chunk holding the target gives its exact score the
    kept ones are compared with it. A row whose exact target score falls outside its window (a
    non-finite score) is counted again against it in a second pass over the same products. The
    top-k lists are merged chunk by chunk (:class:`_RunningTop`); a row whose list a tie decides
    takes :func:`top_k_rows` of its whole row, formed again (:func:`_top_of_whole_rows`), so ties
    are broken as they are on whole rows.
    """
    B = targets.size
    q = q.to(device=W.device, dtype=W.dtype)
    lo, hi = _target_window(q, W, b, targets)
    above = np.zeros(B, np.int64)
    near_rows: list[np.ndarray] = []
    near_vals: list[np.ndarray] = []
    t = np.full(B, np.nan, np.float32)
    ev = None if extra is None else np.full(extra.shape, np.nan, np.float32)
    top = _RunningTop(B, k)
    for a, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        s = _chunk_scores(q, W, b, a, e)
        above += _count_window(s, lo, hi, near_rows, near_vals)
        _gather(s, a, targets[:, None], t[:, None])
        if ev is not None:
            _gather(s, a, extra, ev)
        top.add(s, a)
    nr = np.concatenate(near_rows) if near_rows else np.zeros(0, np.int64)
    nv = np.concatenate(near_vals) if near_vals else np.zeros(0, np.float32)
    rank = above + np.bincount(nr[nv >= t[nr]], minlength=B) - 1
    redo = ~((t >= lo) & (t <= hi))
    if redo.any():
        log.debug("rank_in_chunks: %d of %d targets outside their windows, counted again", int(redo.sum()), B)
        rank[redo] = _count_at_least(q, W, b, t, bounds, redo) - 1
    tied = np.flatnonzero(top.decided_by_ties())
    if tied.size:
        cols = np.concatenate([top.items[tied], targets[tied, None]], axis=1)
        vals = np.concatenate([top.vals[tied], t[tied, None]], axis=1)
        top.items[tied] = _top_of_whole_rows(q, W, b, bounds, tied, k, cols, vals)
    return ChunkRanks(rank, top.items, t, ev)


def _target_window(q: Any, W: Any, b: Any | None, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row float32 bounds ``(lo, hi)`` sure to hold the target's score as a float32 matrix
    product forms it, in any order of summation: its float64 dot product (bias included) +- twice
    the worst-case rounding error of a (d + 2)-term float32 sum. (+inf, +inf) for a non-finite one."""
    import torch

    with torch.no_grad():
        idx = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(W.device)
        prod = q.double() * W[idx].double()  # (B, d)
        t, mag = prod.sum(1), prod.abs().sum(1)
        if b is not None:
            bt = b[idx].double()
            t, mag = t + bt, mag + bt.abs()
    t, mag = t.cpu().numpy(), mag.cpu().numpy()
    n_terms = q.shape[1] + 2
    eps = 2.0 * n_terms * (2.0**-24 * mag + float(np.finfo(np.float32).tiny))
    with np.errstate(over="ignore", invalid="ignore"):
        lo = np.nextafter((t - eps).astype(np.float32), np.float32(-np.inf))
        hi = np.nextafter((t + eps).astype(np.float32), np.float32(np.inf))
    bad = ~(np.isfinite(lo) & np.isfinite(hi))
    lo[bad] = hi[bad] = np.inf
    return lo, hi


def _chunk_scores(q: Any, W: Any, b: Any | None, a: int, e: int) -> np.ndarray:
    """Scores (B, e - a) of columns ``a .. e - 1`` as float32 numpy, column 0 and NaN at -inf."""
    import torch

    with torch.no_grad():
        w = W[a:e]
        s = q @ w.T if b is None else torch.addmm(b[a:e], q, w.T)
    s = s.float().cpu().numpy()
    if a == 0:
        s[:, 0] = -np.inf
    return _clean(s)


def _count_window(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, near_rows: list, near_vals: list) -> np.ndarray:
    """Per row the number of scores above ``hi``; the (row, score) of those in ``[lo, hi]`` are
    appended to ``near_rows`` / ``near_vals``."""
    over = s > hi[:, None]
    at_least = s >= lo[:, None]
    n_over = over.sum(axis=1)
    rows = np.flatnonzero(at_least.sum(axis=1) > n_over)
    if rows.size:
        r, c = np.nonzero(at_least[rows] & ~over[rows])
        near_rows.append(rows[r])
        near_vals.append(s[rows[r], c])
    return n_over


def _gather(s: np.ndarray, a: int, cols: np.ndarray, out: np.ndarray) -> None:
    """``out[i, j] = s[i, cols[i, j] - a]`` wherever ``cols[i, j]`` is a column of the chunk ``s``
    starting at column ``a``."""
    r, c = np.nonzero((cols >= a) & (cols < a + s.shape[1]))
    out[r, c] = s[r, cols[r, c] - a]


def _count_at_least(q: Any, W: Any, b: Any | None, t: np.ndarray, bounds: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row of the mask ``rows``, the number of scores >= ``t`` of that row (the products of the
    first pass again: the same batch, the same chunks)."""
    n = np.zeros(int(rows.sum()), np.int64)
    tr = t[rows][:, None]
    for a, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        n += (_chunk_scores(q, W, b, a, e)[rows] >= tr).sum(axis=1)
    return n


class _RunningTop:
    """The best ``k`` (score, item) of each of ``B`` rows over the chunks seen so far, best first,
    and which rows met a tie that decides the list (:attr:`tied`). The first chunk goes through
    :func:`top_k_rows`; a later one offers the scores at or above a row's current k-th best. A row
    keeps ``tied`` False only if its list is that of ``top_k_rows`` on the whole row: no two of its
    scores are equal and no score left out equals the k-th (a score left out at any merge equal to
    the one kept at k-th place is one; every later merge only raises the k-th place)."""

    def __init__(self, B: int, k: int) -> None:
        self.k = k
        self.vals = np.full((B, k), -np.inf, np.float32)
        self.items = np.zeros((B, k), np.int64)
        self.tied = np.zeros(B, dtype=bool)
        self.first = True

    def add(self, s: np.ndarray, a: int) -> None:
        """Merge the chunk ``s`` (B, w) of columns ``a .. a + w - 1``."""
        B = s.shape[0]
        if self.first:
            self.first = False
            ci, cv = top_k_rows(s, min(self.k + 1, s.shape[1]))
            ci = ci + a
        else:
            over = s >= self.vals[:, -1:]
            n = over.sum(axis=1)
            if not n.any():
                return
            r, c = np.nonzero(over)
            pos = np.arange(r.size) - np.repeat(np.cumsum(n) - n, n)  # place within its row
            cv = np.full((B, int(n.max())), -np.inf, np.float32)
            ci = np.zeros(cv.shape, np.int64)
            cv[r, pos], ci[r, pos] = s[r, c], c + a
        vals = np.concatenate([self.vals, cv], axis=1)
        sel, v = top_k_rows(vals, min(self.k + 1, vals.shape[1]))
        if v.shape[1] > self.k:
            self.tied |= v[:, self.k] == v[:, self.k - 1]
        self.vals = v[:, : self.k]
        self.items = np.take_along_axis(np.concatenate([self.items, ci], axis=1), sel[:, : self.k], axis=1)

    def decided_by_ties(self) -> np.ndarray:
        """Rows whose list a tie decides: ``tied``, or two equal scores in the list."""
        return self.tied | (self.vals[:, 1:] == self.vals[:, :-1]).any(axis=1)


def _top_of_whole_rows(
    q: Any, W: Any, b: Any | None, bounds: np.ndarray, rows: np.ndarray, k: int, cols: np.ndarray, vals: np.ndarray
) -> np.ndarray:
    """:func:`top_k_rows` of the whole score rows ``rows`` (indices) of the batch, a few rows at a
    time so they hold no more scores than the batch's chunks. The rows are formed again from
    products of those rows alone (at least :data:`_MIN_ROWS` of them, so the product is a matrix
    product like the first pass's), and checked against the first pass's scores ``vals`` (R, m)
    of their columns ``cols``; a group that differs is formed from the batch's products instead."""
    n_cols, B = int(bounds[-1]), q.shape[0]
    per = max(1, B * int(np.diff(bounds).max()) // n_cols)
    spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    out = []
    for g in range(0, rows.size, per):
        rg = rows[g : g + per]
        pad = np.concatenate([rg, np.setdiff1d(np.arange(B), rg)[: max(0, _MIN_ROWS - rg.size)]])
        whole = np.concatenate([_chunk_scores(q[pad], W, b, a, e)[: rg.size] for a, e in spans], axis=1)
        if not np.array_equal(np.take_along_axis(whole, cols[g : g + per], axis=1), vals[g : g + per]):
            log.debug("rank_in_chunks: products of %d rows differ from the batch's, forming them from the batch", rg.size)
            whole = np.concatenate([_chunk_scores(q, W, b, a, e)[rg] for a, e in spans], axis=1)
        out.append(top_k_rows(whole, k)[0])
    return np.concatenate(out)
