"""The one top-k and the one tie policy, in plain numpy.

* :func:`mask_scores` -- the exclusion rules every recommending path applies: the padding index
  0 never ranks, and optionally a row's seen items, everything outside an allow-list, and a
  deny-list are set to ``-inf``.
* :func:`top_k_rows` -- the ``k`` best columns of each row, best first.
* :func:`top_k` -- both: masked top-k, what :meth:`Recommender.recommend_batch` returns.
* :func:`conservative_rank` -- the rank of a target among the scores, counting every other item
  with an equal score as ranked above it (evaluation's tie policy: a model that scores
  everything alike gets no credit).

The bounded top-k for large catalogues (:class:`nextclick.ranking.bounded.TopK`) returns what
:func:`top_k` returns on the full score rows, and is tested equal to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``k`` largest entries of each row, best first (a partial
    sort: O(n) per row, then k log k). ``k`` must be at most the number of columns."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    ps = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(ps, order, axis=1)


def mask_scores(
    scores: np.ndarray,
    seen: Sequence[np.ndarray] | None = None,
    allow: np.ndarray | None = None,
    deny: np.ndarray | None = None,
) -> np.ndarray:
    """Set to ``-inf``, in place, the padding column 0, each row's ``seen`` items, every column
    not in ``allow`` and every column in ``deny``; returns ``scores``."""
    scores[:, 0] = -np.inf
    if seen is not None and len(seen):
        rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
        cols = np.concatenate([np.asarray(s, np.int64) for s in seen])
        scores[rows, cols] = -np.inf
    if allow is not None:
        mask = np.ones(scores.shape[1], dtype=bool)
        mask[allow] = False
        scores[:, mask] = -np.inf
    if deny is not None:
        scores[:, deny] = -np.inf
    return scores


def top_k(
    scores: np.ndarray,
    k: int,
    seen: Sequence[np.ndarray] | None = None,
    allow: np.ndarray | None = None,
    deny: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best items of each row of ``scores`` (B, n_items + 1) after :func:`mask_scores`
    (on a copy), best first; ``k`` is clipped to 1..n_items."""
    k = int(min(max(k, 1), scores.shape[1] - 1))
    return top_k_rows(mask_scores(scores.copy(), seen, allow, deny), k)


def conservative_rank(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target: #higher + #other items with an equal score."""
    t = scores[np.arange(scores.shape[0]), targets][:, None]
    return (scores >= t).sum(axis=1) - 1
