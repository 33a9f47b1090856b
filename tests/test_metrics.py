"""Metric values on hand-computed examples: conservative ties, Recall / MRR / NDCG, coverage,
popularity, the sampled-negatives mode and the breakdown by session length."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from nextclick.data.sessions import Sessions
from nextclick.evaluate import evaluate, rank_metrics
from nextclick.models.base import Recommender
from nextclick.ranking import conservative_rank


@dataclass
class TableConfig:
    """No hyper-parameters: scores come from a table fixed by the test."""


class TableModel(Recommender):
    """Scores the next click by a fixed table indexed by the session's last click."""

    name = "table"
    Config = TableConfig

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = np.asarray(table, dtype=np.float32)

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        assert self.table.shape == (self.n_items_ + 1, self.n_items_ + 1)

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        last = sessions.items[sessions.offsets[sess] + plen - 1]
        return self.table[last].copy()


class SetModel(Recommender):
    """Gives 1 to a fixed set of items and 0 to the rest."""

    name = "set"
    Config = TableConfig

    def __init__(self, high: list[int]) -> None:
        super().__init__()
        self.high = high

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        pass

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        out = np.zeros((len(sess), self.n_items_ + 1), np.float32)
        out[:, self.high] = 1.0
        return out


# ---------------------------------------------------------------------------- conservative rank
def test_conservative_rank_counts_higher_and_tied_items() -> None:
    scores = np.array(
        [
            [0.0, 0.9, 0.5, 0.1],  # target 1: best -> rank 0
            [0.0, 0.5, 0.5, 0.5],  # target 2 ties with 2 others -> ranked after both -> 2
            [0.0, 0.7, 0.2, 0.7],  # target 2: two higher -> 2
            [0.0, 0.7, 0.2, 0.7],  # target 3: ties with item 1 -> 1
        ]
    )
    assert conservative_rank(scores, np.array([1, 2, 2, 3])).tolist() == [0, 2, 2, 1]


def test_conservative_rank_of_a_constant_row_is_last() -> None:
    scores = np.ones((3, 6))
    scores[:, 0] = -np.inf
    assert conservative_rank(scores, np.array([1, 3, 5])).tolist() == [4, 4, 4]


# ---------------------------------------------------------------------------- evaluate
TRAIN = Sessions.from_lists([[1, 2, 3, 4], [1, 2], [1]], n_items=4)  # popularity 3, 2, 1, 1
TEST = Sessions.from_lists([[1, 2, 3], [2, 4]], n_items=4)  # predictions: 1->2, 2->3, 2->4
TABLE = np.zeros((5, 5))
TABLE[1] = [0, 0.1, 0.9, 0.5, 0.2]  # after 1: target 2 ranks 0
TABLE[2] = [0, 0.5, 0.0, 0.3, 0.4]  # after 2: target 3 ranks 2, target 4 ranks 1
TABLE[3] = [0, 0.2, 0.2, 0.2, 0.2]
TABLE[4] = [0, 0.2, 0.2, 0.2, 0.2]
RANKS = np.array([0, 2, 1])


def metric(ranks: np.ndarray, k: int) -> tuple[float, float, float]:
    hit = ranks < k
    return (
        hit.mean(),
        np.where(hit, 1 / (ranks + 1), 0).mean(),
        np.where(hit, 1 / np.log2(ranks + 2), 0).mean(),
    )


def test_evaluate_hand_computed_example() -> None:
    model = TableModel(TABLE).fit(TRAIN)
    m = evaluate(model, TEST, cutoffs=(1, 2, 3)).metrics
    assert m["n_predictions"] == 3 and m["n_sessions"] == 2 and m["n_items"] == 4
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["recall@2"] == pytest.approx(2 / 3)
    assert m["recall@3"] == pytest.approx(1.0)
    assert m["mrr@1"] == pytest.approx(1 / 3)
    assert m["mrr@2"] == pytest.approx((1 + 1 / 2) / 3)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 3)
    assert m["ndcg@1"] == pytest.approx(1 / 3)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(3)) / 3)
    for k in (1, 2, 3):
        r, mrr, ndcg = metric(RANKS, k)
        assert (m[f"recall@{k}"], m[f"mrr@{k}"], m[f"ndcg@{k}"]) == pytest.approx((r, mrr, ndcg))
    # coverage: top-1 lists are {2} and {1}; top-2 lists {2, 3} and {1, 4}: the whole catalogue
    assert m["coverage@1"] == pytest.approx(2 / 4)
    assert m["coverage@2"] == pytest.approx(1.0)
    # popularity relative to the most popular item (3 clicks): top-1 = item 2, item 1, item 1
    assert m["popularity@1"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert m["popularity@2"] == pytest.approx(((2 / 3 + 1 / 3) + (1 + 1 / 3) * 2) / 6)


def test_evaluate_does_not_depend_on_batch_size() -> None:
    model = TableModel(TABLE).fit(TRAIN)
    a = evaluate(model, TEST, cutoffs=(1, 2)).metrics
    b = evaluate(model, TEST, cutoffs=(1, 2), batch_size=1).metrics
    a.pop("eval_seconds"), b.pop("eval_seconds")
    assert a == pytest.approx(b, rel=1e-12)


def test_constant_model_scores_zero() -> None:
    """Ties are broken against the target, so a model that outputs constants gets no lucky hits."""
    n = 30
    train = Sessions.from_lists([list(range(1, n + 1))], n_items=n)
    test = Sessions.from_lists([[1, 2, 3, 4], [5, 6]], n_items=n)
    m = evaluate(TableModel(np.ones((n + 1, n + 1))).fit(train), test).metrics
    for k in (1, 5, 10, 20):
        assert m[f"recall@{k}"] == 0.0 and m[f"mrr@{k}"] == 0.0 and m[f"ndcg@{k}"] == 0.0


def test_ties_at_the_target_are_ranked_after_it() -> None:
    table = np.zeros((5, 5))
    table[1] = [0, 0.0, 0.5, 0.5, 0.5]  # after 1: targets 2 tie with 3 and 4
    train = Sessions.from_lists([[1, 2, 3, 4]], n_items=4)
    m = evaluate(TableModel(table).fit(train), Sessions.from_lists([[1, 2]], n_items=4), cutoffs=(1, 2, 3)).metrics
    assert (m["recall@1"], m["recall@2"], m["recall@3"]) == (0.0, 0.0, 1.0)
    assert m["mrr@3"] == pytest.approx(1 / 3)


def test_nan_scores_count_as_minus_infinity() -> None:
    table = np.zeros((5, 5))
    table[1] = [0, np.nan, 0.1, np.nan, np.nan]
    train = Sessions.from_lists([[1, 2, 3, 4]], n_items=4)
    m = evaluate(TableModel(table).fit(train), Sessions.from_lists([[1, 2]], n_items=4), cutoffs=(1,)).metrics
    assert m["recall@1"] == 1.0


def test_leave_one_out_data_scores_only_the_last_click() -> None:
    test = Sessions.from_lists([[1, 2, 3], [2, 4], [3]], n_items=4, last_only=True)
    m = evaluate(TableModel(TABLE).fit(TRAIN), test, cutoffs=(1, 2)).metrics
    assert m["n_predictions"] == 2  # 2 -> 3 (rank 2) and 2 -> 4 (rank 1)
    assert m["recall@1"] == 0.0 and m["recall@2"] == pytest.approx(0.5)


def test_by_length_breakdown() -> None:
    test = Sessions.from_lists([[1, 2, 3], [2, 4], [1, 2, 3, 4, 1]], n_items=4)
    res = evaluate(TableModel(TABLE).fit(TRAIN), test, cutoffs=(1, 20), by_length=True)
    rows = {b["length"]: b for b in res.by_length}
    assert set(rows) == {"2", "3", "5-6"}
    assert rows["2"]["n"] == 1 and rows["3"]["n"] == 2 and rows["5-6"]["n"] == 4
    assert sum(b["n"] for b in res.by_length) == res.metrics["n_predictions"] == 7
    # length-3 session: ranks 0 and 2 -> MRR@20 = (1 + 1/3) / 2
    assert rows["3"]["recall@20"] == 1.0 and rows["3"]["mrr@20"] == pytest.approx((1 + 1 / 3) / 2)
    assert rows["2"]["mrr@20"] == pytest.approx(1 / 2)
    assert "by_session_length" in res.as_dict()
    assert "by session length" in res.table(cutoffs=(1, 20))


def test_sampled_negatives_are_never_clicked_items() -> None:
    """Every item of the test session scores 1, every other item 0: the target beats each negative
    only if no negative is an item the session clicked."""
    n = 40
    train = Sessions.from_lists([list(range(1, n + 1))], n_items=n)
    test = Sessions.from_lists([[3, 7, 11, 19, 23]], n_items=n)
    model = SetModel([3, 7, 11, 19, 23]).fit(train)
    res = evaluate(model, test, cutoffs=(1, 5), sampled_negatives=100, seed=3)
    s = res.sampled
    assert s is not None and s["n_negatives"] == 100
    assert "sampled" in s["protocol"].lower() and "not full ranking" in s["protocol"].lower()
    assert s["hr@1"] == 1.0 and s["mrr@1"] == 1.0 and s["ndcg@1"] == 1.0
    # full ranking is unaffected: the target ties with the session's other 4 items
    assert res.metrics["recall@1"] == 0.0 and res.metrics["recall@5"] == 1.0
    assert res.metrics == pytest.approx(
        {**evaluate(model, test, cutoffs=(1, 5)).metrics, "eval_seconds": res.metrics["eval_seconds"]}
    )
    text = res.table(cutoffs=(1, 5))
    assert "SAMPLED" in text and "not full ranking" in text
    assert "sampled" in res.as_dict()


def test_sampled_rank_counts_negatives_scoring_at_least_the_target() -> None:
    n = 10
    train = Sessions.from_lists([list(range(1, n + 1))], n_items=n)
    test = Sessions.from_lists([[1, 2]], n_items=n)
    # the target (2) scores 0.5; unclicked items 3..10 all score 0.9 -> every negative beats it
    table = np.full((n + 1, n + 1), 0.9)
    table[:, 1], table[:, 2] = 0.0, 0.5
    res = evaluate(TableModel(table).fit(train), test, cutoffs=(1, 5), sampled_negatives=3)
    assert res.sampled["hr@5"] == 1.0 and res.sampled["hr@1"] == 0.0  # rank 3 of 4
    assert res.sampled["mrr@5"] == pytest.approx(1 / 4)
    assert res.metrics["recall@5"] == 0.0  # rank 8 in the full catalogue


def test_no_sampled_figures_unless_asked() -> None:
    res = evaluate(TableModel(TABLE).fit(TRAIN), TEST, cutoffs=(1,))
    assert res.sampled is None and "SAMPLED" not in res.table(cutoffs=(1,))
    assert "sampled" not in res.as_dict()


def test_empty_test_set() -> None:
    res = evaluate(TableModel(TABLE).fit(TRAIN), Sessions.from_lists([[1], [2]], n_items=4), cutoffs=(1,))
    assert res.metrics["n_predictions"] == 0 and res.metrics["recall@1"] == 0.0


def test_rank_metrics_by_hand_and_empty() -> None:
    ranks = np.array([0, 1, 4, 30])
    recall, mrr, ndcg = rank_metrics(ranks, 5)
    assert recall == pytest.approx(3 / 4)
    assert mrr == pytest.approx((1 + 1 / 2 + 1 / 5) / 4)
    assert ndcg == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)
    assert rank_metrics(np.zeros(0, np.int64), 5) == (0.0, 0.0, 0.0)
