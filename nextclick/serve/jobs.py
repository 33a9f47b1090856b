"""What the model side computes for a request: a :class:`Job` (a session's clicks, its state and
the top-k rules, as internal indices) scored in batches by :func:`run_jobs`, and the popularity
answer for sessions with no known click (:func:`popular`).

Every top-k here is :func:`nextclick.ranking.top_k` (or :func:`~nextclick.ranking.mask_scores`
over the popularity ranking), or, for dot-product models, the bounded
:class:`nextclick.ranking.bounded.TopK` that returns the same items.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nextclick.ranking import mask_scores, top_k
from nextclick.serve.artifacts import Loaded


@dataclass
class Job:
    clicks: np.ndarray  # known clicks (internal indices), most recent last
    new_item: int | None  # index of the new click (0 unknown), None: no new click
    state: np.ndarray | None  # float32 state before the click (None: zero / none)
    replay: bool  # state must be rebuilt from clicks first (new model or lost state)
    k: int
    exclude: np.ndarray | None
    allow: np.ndarray | None
    deny: np.ndarray | None
    gen: int = 0  # the model generation the indices belong to
    future: asyncio.Future = field(default=None, repr=False)  # type: ignore[assignment]
    loop: asyncio.AbstractEventLoop = field(default=None, repr=False)  # type: ignore[assignment]


Result = tuple[np.ndarray | None, np.ndarray, np.ndarray]  # new state, item indices, scores


def finite(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A top-k row without its ``-inf`` tail (fewer items qualified than asked for)."""
    keep = np.isfinite(scores)
    return ids[keep], scores[keep]


def popular(
    loaded: Loaded, k: int, exclude: np.ndarray | None, allow: np.ndarray | None, deny: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most popular items after the exclusion rules of :func:`nextclick.ranking.mask_scores`.
    Without an allow-list: the first of the precomputed candidates (``Loaded.popular_order``, ties
    by lower index) that the rules leave; with one: :func:`nextclick.ranking.top_k` over every item
    (allowed items may lie beyond the candidates)."""
    seen = None if exclude is None else [exclude]
    if allow is not None:
        ids, sc = top_k(loaded.popularity[None, :], k, seen, allow, deny)
        return finite(ids[0], sc[0])
    scores = mask_scores(loaded.popularity[None, :].copy(), seen, None, deny)[0]
    order = loaded.popular_order
    top = order[np.isfinite(scores[order])][:k]
    return top, scores[top]


def _replay(loaded: Loaded, jobs: Sequence[Job]) -> None:
    """Rebuild the state of each job that asks for it from its clicks (stateless calls, a reload
    or a lost state): state updates only, no catalogue scoring per click."""
    live = loaded.live
    if not loaded.state_size:
        return
    for j in jobs:
        if not j.replay:
            continue
        st = live.start(1)
        prior = j.clicks[:-1] if j.new_item else j.clicks
        for i in range(prior.size):
            st = live.advance(st, prior[i : i + 1])
        j.state = np.asarray(st, dtype=np.float32).reshape(-1)


def _states(loaded: Loaded, jobs: Sequence[Job]) -> np.ndarray | None:
    """The jobs' states after their new click (None for a model without a state): one
    ``advance`` for the whole batch, index 0 (no new click, or an unknown one) leaving a state as
    it is."""
    size = loaded.state_size
    if not size:
        return None
    st = np.stack([j.state if j.state is not None else np.zeros(size, np.float32) for j in jobs])
    new_items = np.array([j.new_item or 0 for j in jobs], dtype=np.int64)
    return loaded.live.advance(st, new_items) if new_items.any() else st


def _top_per_job(scores: np.ndarray, jobs: Sequence[Job]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each job's top k of its row of ``scores``: one call for every job without an allow- or
    deny-list (at the largest k, then cut), one call each for the others."""
    out: list[Any] = [None] * len(jobs)
    simple = [i for i, j in enumerate(jobs) if j.allow is None and j.deny is None]
    if simple:
        kmax = max(jobs[i].k for i in simple)
        seen = [jobs[i].exclude if jobs[i].exclude is not None else np.zeros(0, np.int64) for i in simple]
        ids, sc = top_k(scores[simple], kmax, seen)
        for r, i in enumerate(simple):
            out[i] = finite(ids[r, : jobs[i].k], sc[r, : jobs[i].k])
    for i, j in enumerate(jobs):
        if out[i] is None:
            ids, sc = top_k(scores[i : i + 1], j.k, None if j.exclude is None else [j.exclude], j.allow, j.deny)
            out[i] = finite(ids[0], sc[0])
    return out


def run_jobs(loaded: Loaded, jobs: Sequence[Job]) -> list[Result]:
    """Score a batch of jobs of one model: advance the states, then queries (dot-product models,
    the bounded top-k) or score rows, and the top k per job."""
    _replay(loaded, jobs)
    states = _states(loaded, jobs)
    clicks = [j.clicks for j in jobs]
    out_states = [None if states is None else states[r] for r in range(len(jobs))]
    if loaded.scorer is not None:  # dot-product models: query vectors, exact top-k from TopK
        ids, sc = loaded.scorer.topk(
            loaded.live.queries(states, clicks), max(j.k for j in jobs),
            [j.exclude for j in jobs], [j.allow for j in jobs], [j.deny for j in jobs],
        )
        return [(out_states[r], *finite(ids[r, : j.k], sc[r, : j.k])) for r, j in enumerate(jobs)]
    tops = _top_per_job(loaded.live.scores(states, clicks).astype(np.float32, copy=False), jobs)
    return [(out_states[i], *tops[i]) for i in range(len(jobs))]


def run_mixed(models: dict[int, Loaded], jobs: Sequence[Job]) -> list[Result]:
    """``run_jobs`` per model generation (a batch straddling a hot reload), results in job order."""
    gens = {j.gen for j in jobs}
    if len(gens) == 1:
        return run_jobs(models[jobs[0].gen], jobs)
    out: list[Any] = [None] * len(jobs)
    for g in gens:
        idx = [i for i, j in enumerate(jobs) if j.gen == g]
        for i, r in zip(idx, run_jobs(models[g], [jobs[i] for i in idx])):
            out[i] = r
    return out
