"""Every evaluated prediction of a model, kept for the report, and the item categories it needs.

:func:`run_model` evaluates a model once with :func:`nextclick.evaluate.evaluate` and keeps, per
prediction, the target's 0-based full-catalogue rank, its session, the number of clicks given and
the top-K list (:class:`Predictions`, int32 arrays), beside the usual :class:`EvalResult`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.evaluate import EvalResult, evaluate, session_subset
from nextclick.models.base import Recommender

log = logging.getLogger(__name__)


class Predictions(NamedTuple):
    """The evaluated predictions of one model, in evaluation order."""

    rank: np.ndarray  # (N,) int32 0-based full-catalogue rank of the target (conservative ties)
    session: np.ndarray  # (N,) int32 index of the prediction's session in the evaluated Sessions
    position: np.ndarray  # (N,) int32 clicks given (1: after the session's first click)
    top: np.ndarray  # (N, K) int32 the K best items, best first

    @property
    def size(self) -> int:
        return int(self.rank.size)


class PredictionLog:
    """``on_batch`` of :func:`nextclick.evaluate.evaluate`: keeps every batch's predictions."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def __call__(self, rank: np.ndarray, top: np.ndarray, sess: np.ndarray, plen: np.ndarray) -> None:
        self._parts.append((rank.astype(np.int32), sess.astype(np.int32), plen.astype(np.int32), top.astype(np.int32)))

    def predictions(self) -> Predictions:
        if not self._parts:
            return Predictions(*(np.zeros(0, np.int32) for _ in range(3)), np.zeros((0, 0), np.int32))
        return Predictions(*(np.concatenate(p) for p in zip(*self._parts)))


@dataclass
class ModelRun:
    """What the report shows of one model: its evaluation, kept predictions and training record."""

    name: str
    result: EvalResult
    predictions: Predictions
    sessions: Sessions  # the evaluated sessions (``predictions.session`` indexes them)
    popularity: np.ndarray  # (n_items + 1,) training clicks per item index
    training: dict[str, Any] = field(default_factory=dict)  # the artifact's "training" record
    fit_seconds: float | None = None
    categories: np.ndarray | None = None  # (n_items + 1,) category code per item index, -1: unknown

    @property
    def curve(self) -> list[dict[str, float]]:
        """Per-epoch records (``epoch``, ``loss``, ``seconds``, ``valid_*``); empty for models without epochs."""
        c = self.training.get("curve")
        return c if isinstance(c, list) else []


def run_model(
    model: Recommender,
    test: Sessions,
    name: str | None = None,
    categories: np.ndarray | None = None,
    max_sessions: int | None = None,
    seed: int = 0,
    **eval_options: Any,
) -> ModelRun:
    """Evaluate ``model`` on ``test`` (a random subset of ``max_sessions`` sessions, drawn with
    ``seed``) keeping every prediction; ``eval_options`` go to :func:`nextclick.evaluate.evaluate`."""
    subset = None
    if max_sessions is not None:
        test, subset = session_subset(test, max_sessions, seed)
    kept = PredictionLog()
    res = evaluate(model, test, seed=seed, on_batch=kept, **eval_options)
    res.subset = subset
    return ModelRun(
        name=name or model.name,
        result=res,
        predictions=kept.predictions(),
        sessions=test,
        popularity=np.asarray(model.popularity_, dtype=np.float64),
        training=dict(getattr(model, "training_", {}) or {}),
        fit_seconds=getattr(model, "fit_seconds_", None),
        categories=categories,
    )


def read_items(path: str | Path, category_col: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(item ids, categories)`` of the items an item table gives a category
    (:class:`nextclick.data.items.ItemTable`; ``category_col`` names the category column, else it is
    found by name). Rows without a category are left out, and counted in the log."""
    from nextclick.data.items import ItemTable

    table = ItemTable.read(path, need=("id", "category"), columns={"category": category_col} if category_col else None)
    cats = table.frame.get_column("category")
    has = cats.is_not_null().to_numpy()
    if not has.all():
        log.warning("item table %s: %d of %d items have no category (left out of the intent-shift figures)",
                    path, int((~has).sum()), has.size)
    return table.id_array()[has], cats.to_numpy()[has]


def item_categories(vocab: ItemVocab, item_ids: np.ndarray, categories: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``(codes, names)``: the category code of every item index of ``vocab`` ((n_items + 1,), -1
    where the item table does not name one, index 0 included) and the categories' names."""
    names, code = np.unique(np.asarray(categories).astype(str), return_inverse=True)
    idx = vocab.encode(item_ids)
    out = np.full(vocab.n_items + 1, -1, np.int32)
    known = idx > 0
    out[idx[known]] = code[known]
    if not known.any():
        log.warning("the item table names none of the model's items: no intent-shift figure")
    return out, [str(n) for n in names]
