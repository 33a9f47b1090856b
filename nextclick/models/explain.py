"""Why a model recommends an item to a session: the one definition of an explanation.

* **Influence of each click**, for every model: the item's score and full-catalogue rank with
  the whole session, and again with each click left out (the other clicks kept in order). A
  click's influence is the change: ``score_change = score - score_without`` (positive: the click
  pushes the item up) and ``rank_change = rank_without - rank`` (positive: the item ranks higher
  because of the click). Ranks are conservative (ties count against the item) and, like the
  recommendations, leave out the session's last click when the model does
  (:attr:`Recommender.repeats_dropped`) -- unless it is the item explained. Leaving out a
  session's only known click leaves no click: the model's answer is then its popularity fallback,
  as the service's would be.
* **Attention**, for models with self-attention maps (``model.attention``: SASRec): the weights
  with which the last position reads each click, per block, averaged over heads; clicks outside
  the model's window get 0.
* **Neighbours**, for models that name them (``model.neighbours_of``: V-SKNN): the neighbour
  sessions holding the item, by contribution to its score, and ``neighbour_counts`` (how many
  neighbours the session has, how many hold the item).

The cost is bounded: the session's last ``max_clicks`` known clicks are explained (``truncated``
says when there were more), scored ``chunk`` rows at a time, so memory stays at ``chunk`` score
rows of the catalogue whatever the session's length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nextclick.errors import NextclickError
from nextclick.models.base import Recommender
from nextclick.ranking import conservative_rank

#: Most recent clicks an explanation covers.
MAX_CLICKS = 50
#: Score rows computed at once.
CHUNK = 8


def leave_one_out(clicks: np.ndarray) -> list[np.ndarray]:
    """The session itself, then the session without click 0, 1, ... (order kept)."""
    return [clicks] + [np.delete(clicks, i) for i in range(clicks.size)]


def score_and_rank(model: Recommender, sessions: list[np.ndarray], item: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ranks)`` of ``item`` after each session of internal indices, ``chunk`` score rows
    at a time. The last click's item is left out of the ranking as the model's recommendations
    leave it out, unless it is ``item``."""
    scores = np.empty(len(sessions), np.float64)
    ranks = np.empty(len(sessions), np.int64)
    for a in range(0, len(sessions), chunk):
        part = sessions[a : a + chunk]
        s = model.score_batch(part)
        last = np.array([int(x[-1]) if x.size else 0 for x in part], np.int64)
        last[last == item] = 0
        model.exclude_last_click(s, last, None)
        s = np.where(np.isnan(s), -np.inf, s)
        tgt = np.full(len(part), item, np.int64)
        scores[a : a + len(part)] = s[:, item]
        ranks[a : a + len(part)] = conservative_rank(s, tgt)
    return scores, ranks


def _attention(model: Recommender, clicks: np.ndarray) -> list[list[float]] | None:
    """Per block, the last position's weights over ``clicks`` (0 outside the model's window)."""
    attention = getattr(model, "attention", None)
    if not callable(attention):
        return None
    try:
        mats = attention(clicks)
    except NextclickError:  # a model on a trainer with no attention maps
        return None
    out = []
    for m in mats:
        w = np.zeros(clicks.size, np.float64)
        last = np.asarray(m)[-1]
        w[clicks.size - last.size :] = last
        out.append([float(x) for x in w])
    return out


def explain(model: Recommender, clicks: np.ndarray, item: int, max_clicks: int = MAX_CLICKS,
            n_neighbours: int = 10) -> dict[str, Any]:
    """The explanation of ``item`` (internal index) for a session of known internal indices
    ``clicks`` (oldest first). Item ids in the result are internal indices; see the module
    docstring for the fields."""
    if not 1 <= item <= model.n_items_:
        raise NextclickError(f"item index {item} is not in the model's catalogue of {model.n_items_} items")
    clicks = np.asarray(clicks, dtype=np.int64)
    truncated = clicks.size > max_clicks
    clicks = clicks[-max_clicks:]
    scores, ranks = score_and_rank(model, leave_one_out(clicks), item)
    influence = [
        {"position": i, "item": int(clicks[i]), "score_without": float(scores[i + 1]),
         "score_change": float(scores[0] - scores[i + 1]), "rank_without": int(ranks[i + 1]),
         "rank_change": int(ranks[i + 1] - ranks[0])}
        for i in range(clicks.size)
    ]
    out: dict[str, Any] = {"score": float(scores[0]), "rank": int(ranks[0]), "clicks": clicks, "influence": influence,
                           "attention": None, "neighbours": None, "truncated": truncated}
    if clicks.size:
        blocks = _attention(model, clicks)
        out["attention"] = None if blocks is None else {"blocks": blocks}
        nb = getattr(model, "neighbours_of", None)
        if callable(nb):
            found = nb(clicks, item, n_neighbours)
            out["neighbours"] = found.pop("neighbours")
            out["neighbour_counts"] = found
    return out


def kinds(model: Recommender) -> list[str]:
    """What :func:`explain` gives for ``model`` besides the influence of each click."""
    out = ["influence"]
    if model.n_items_ and _attention(model, np.ones(1, np.int64)) is not None:  # the model records attention maps
        out.append("attention")
    if callable(getattr(model, "neighbours_of", None)):
        out.append("neighbours")
    return out
