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

Depends only on the recommender interface (``iter_scores``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nextclick.data.sampling import uniform_not_in
from nextclick.data.sessions import Sessions, gather_prefixes
from nextclick.models.base import Recommender
from nextclick.ranking import conservative_rank, top_k_rows

log = logging.getLogger(__name__)

CUTOFFS = (1, 5, 10, 20)
LENGTH_BUCKETS = ((2, 2), (3, 3), (4, 4), (5, 6), (7, 9), (10, 19), (20, 10**9))


def _clean(scores: np.ndarray) -> np.ndarray:
    if np.isnan(scores).any():
        scores = np.where(np.isnan(scores), -np.inf, scores)
    return scores


@dataclass
class EvalResult:
    metrics: dict[str, float]
    by_length: list[dict[str, Any]] = field(default_factory=list)
    sampled: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        if self.by_length:
            out["by_session_length"] = self.by_length
        if self.sampled is not None:
            out["sampled"] = self.sampled
        return out

    def table(self, cutoffs: Sequence[int] = CUTOFFS) -> str:
        m = self.metrics
        lines = [
            f"full-catalogue ranking, {m['n_predictions']:,} predictions over {m['n_items']:,} items (conservative ties)",
            f"{'K':>4} {'Recall':>8} {'MRR':>8} {'NDCG':>8} {'Coverage':>9} {'Pop':>7}",
        ]
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


def evaluate(
    model: Recommender,
    test: Sessions,
    cutoffs: Sequence[int] = CUTOFFS,
    batch_size: int = 512,
    sampled_negatives: int | None = None,
    by_length: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``model`` on every next-click target of ``test`` (see module docstring)."""
    cutoffs = tuple(sorted(set(int(k) for k in cutoffs)))
    kmax = max(cutoffs)
    n_items = model.n_items_
    pop = model.popularity_.astype(np.float64)
    pop_rel = pop / max(pop.max(), 1.0)
    rng = np.random.default_rng(seed)
    ranks, sranks, lens = [], [], []
    seen_items = {k: np.zeros(n_items + 1, dtype=bool) for k in cutoffs}
    pop_sum = {k: 0.0 for k in cutoffs}
    lengths = test.lengths
    t0 = time.perf_counter()
    total = test.n_predictions()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="evaluate", unit="pred", leave=False)
    for scores, targets, sess, _plen in model.iter_scores(test, batch_size=batch_size):
        scores = _clean(scores)
        scores[:, 0] = -np.inf
        ranks.append(conservative_rank(scores, targets))
        lens.append(lengths[sess])
        top, _ = top_k_rows(scores, min(kmax, n_items))
        for k in cutoffs:
            tk = top[:, :k]
            seen_items[k][tk.ravel()] = True
            pop_sum[k] += float(pop_rel[tk].sum())
        if sampled_negatives:
            sranks.append(_sampled_rank(scores, targets, test, sess, sampled_negatives, n_items, rng))
        if bar is not None:
            bar.update(len(targets))
    if bar is not None:
        bar.close()
    rank = np.concatenate(ranks) if ranks else np.zeros(0, np.int64)
    n = int(rank.size)
    metrics: dict[str, float] = {"n_predictions": n, "n_sessions": int(np.count_nonzero(lengths >= 2)), "n_items": n_items}
    for k in cutoffs:
        metrics[f"recall@{k}"], metrics[f"mrr@{k}"], metrics[f"ndcg@{k}"] = rank_metrics(rank, k)
        metrics[f"coverage@{k}"] = float(seen_items[k][1:].mean())
        metrics[f"popularity@{k}"] = pop_sum[k] / max(n * min(k, n_items), 1)
    metrics["eval_seconds"] = time.perf_counter() - t0
    res = EvalResult(metrics)
    if by_length and n:
        res.by_length = _by_length(rank, np.concatenate(lens))
    if sampled_negatives and n:
        res.sampled = _sampled_metrics(np.concatenate(sranks), cutoffs, sampled_negatives)
    return res


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


def _sampled_rank(
    scores: np.ndarray, targets: np.ndarray, test: Sessions, sess: np.ndarray, n_neg: int, n_items: int, rng: np.random.Generator
) -> np.ndarray:
    """Rank of the target among ``n_neg`` uniform negatives never clicked in that session/sequence."""
    b = targets.size
    rows, clicked, _ = gather_prefixes(test, sess, test.lengths[sess])  # every click of each row's session
    neg = uniform_not_in(rng, n_items, (b, n_neg), rows, clicked, max_rounds=100)
    t = scores[np.arange(b), targets][:, None]
    return (np.take_along_axis(scores, neg, axis=1) >= t).sum(axis=1)
