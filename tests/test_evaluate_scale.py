"""Evaluation at scale: dot-product models ranked in catalogue chunks give the figures of whole
score rows (ranks, top-K lists, ties, NaN, sampled negatives), other models score fewer rows per
batch, and a random subset of test sessions is stated as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError
from nextclick.evaluate import _chunk_scores, _top_of_whole_rows, chunk_bounds, evaluate, rank_in_chunks, session_subset
from nextclick.models.base import Recommender
from nextclick.models.live import LiveSessions
from nextclick.ranking import conservative_rank, top_k_rows
from tests.conftest import REPO_ROOT


@dataclass
class DotConfig:
    """No hyper-parameters: the weights are fixed by the test."""


class DotModel(Recommender):
    """Scores ``Q[last click] @ W.T + b``: a dot-product model with both evaluation paths."""

    name = "dot"
    Config = DotConfig

    def __init__(self, Q: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> None:
        super().__init__()
        self.Q = torch.from_numpy(np.asarray(Q, np.float32))
        self.W = torch.from_numpy(np.asarray(W, np.float32))
        self.b = None if b is None else torch.from_numpy(np.asarray(b, np.float32))
        self.calls = {"iter_scores": 0, "iter_queries": 0}

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        assert self.W.shape[0] == self.n_items_ + 1

    def _queries(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> torch.Tensor:
        return self.Q[torch.from_numpy(sessions.items[sessions.offsets[sess] + plen - 1])]

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        q = self._queries(sessions, sess, plen)
        return (q @ self.W.T if self.b is None else torch.addmm(self.b, q, self.W.T)).numpy()

    def iter_scores(self, sessions: Sessions, batch_size: int = 1024):
        self.calls["iter_scores"] += 1
        self.rows = batch_size
        yield from super().iter_scores(sessions, batch_size)

    def iter_queries(self, sessions: Sessions, batch_size: int = 1024):
        self.calls["iter_queries"] += 1
        sess, plen, targets = sessions.prefixes()
        for a in range(0, sess.size, batch_size):
            s = slice(a, a + batch_size)
            yield self._queries(sessions, sess[s], plen[s]), targets[s], sess[s], plen[s]


class DotLive(LiveSessions):
    model: DotModel

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.W, self.model.b


DotModel.Live = DotLive


def random_sessions(rng: np.random.Generator, n_items: int, n: int, max_len: int = 8) -> Sessions:
    return Sessions.from_lists([rng.integers(1, n_items + 1, size=rng.integers(1, max_len + 1)).tolist() for _ in range(n)],
                               n_items=n_items)


def without_time(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "eval_seconds"}


def tie_model(n_items: int, d: int, seed: int, bias: bool) -> tuple[DotModel, Sessions, Sessions]:
    """Weights in halves of small integers: every score is exact in float32, in any order of
    summation, and many scores tie (with the target, across the K-th place, inside the top K)."""
    rng = np.random.default_rng(seed)
    Q = rng.integers(-2, 3, size=(n_items + 1, d)) / 2
    W = rng.integers(-2, 3, size=(n_items + 1, d)) / 2
    b = rng.integers(-1, 2, size=n_items + 1) / 2 if bias else None
    train = random_sessions(rng, n_items, 80)
    return DotModel(Q, W, b).fit(train), train, random_sessions(rng, n_items, 60)


# ---------------------------------------------------------------------------- evaluate, chunked
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_items", [7, 13, 40])
def test_chunked_ranking_equals_whole_rows_with_ties(bias: bool, chunk_items: int) -> None:
    model, _, test = tie_model(60, 4, seed=chunk_items, bias=bias)
    kw = dict(cutoffs=(1, 5, 10, 20), batch_size=16, by_length=True, sampled_negatives=10, seed=3)
    whole = evaluate(model, test, chunk_items=None, **kw)
    assert model.calls == {"iter_scores": 1, "iter_queries": 0}
    chunked = evaluate(model, test, chunk_items=chunk_items, **kw)
    assert model.calls == {"iter_scores": 1, "iter_queries": 1}
    assert without_time(chunked.as_dict()) == without_time(whole.as_dict())
    assert 0 < whole.metrics["recall@20"] < 1 and whole.metrics["coverage@1"] < 1


def test_a_catalogue_that_fits_in_one_chunk_is_scored_in_whole_rows() -> None:
    model, _, test = tie_model(60, 4, seed=0, bias=True)
    evaluate(model, test, chunk_items=61)
    assert model.calls == {"iter_scores": 1, "iter_queries": 0}


def test_constant_dot_model_scores_zero_in_chunks() -> None:
    n = 50
    model = DotModel(np.ones((n + 1, 3)), np.zeros((n + 1, 3)), np.zeros(n + 1)).fit(Sessions.from_lists([list(range(1, n + 1))]))
    test = random_sessions(np.random.default_rng(0), n, 30)
    chunked = evaluate(model, test, chunk_items=9)
    assert chunked.metrics["recall@20"] == 0.0 and chunked.metrics["mrr@20"] == 0.0
    assert without_time(chunked.metrics) == without_time(evaluate(model, test, chunk_items=None).metrics)


def test_nan_scores_count_as_minus_infinity_in_chunks() -> None:
    model, _, test = tie_model(60, 4, seed=5, bias=True)
    model.W[[3, 17, 44]] = float("nan")  # those items score NaN for every session
    kw = dict(cutoffs=(1, 5, 20), batch_size=8)
    assert without_time(evaluate(model, test, chunk_items=11, **kw).metrics) == without_time(
        evaluate(model, test, chunk_items=None, **kw).metrics
    )


def test_other_models_score_fewer_rows_per_batch() -> None:
    """A model without an output layer is scored in whole rows, batch_size x chunk_items scores a
    batch at most: same ranks, same coverage."""
    n = 40
    rng = np.random.default_rng(1)
    table = rng.integers(0, 4, size=(n + 1, n + 1)).astype(np.float32)
    model = DotModel(np.eye(n + 1), table.T, None).fit(Sessions.from_lists([list(range(1, n + 1))]))
    model.Live = LiveSessions  # no output layer: whole rows only
    test = random_sessions(rng, n, 50)
    whole = evaluate(model, test, batch_size=64, chunk_items=None).metrics
    assert model.rows == 64
    small = evaluate(model, test, batch_size=64, chunk_items=10).metrics
    assert model.rows == 64 * 10 // (n + 1) and model.calls["iter_queries"] == 0
    for key, value in without_time(whole).items():
        assert small[key] == (pytest.approx(value, rel=1e-12) if key.startswith("popularity") else value), key


# ---------------------------------------------------------------------------- rank_in_chunks
def test_rank_in_chunks_equals_whole_rows_of_the_same_products() -> None:
    """Random float scores with exact ties (repeated item rows), +inf, -inf and NaN: the ranks, top-k
    lists, target scores and extra columns equal those of the whole rows assembled from the same
    chunk products."""
    rng = np.random.default_rng(0)
    V, d, B, k = 500, 16, 40, 20
    W = rng.normal(size=(V, d)).astype(np.float32)
    W[100:110] = W[5]  # ties with item 5
    b = rng.normal(size=V).astype(np.float32)
    b[7], b[9], W[11] = np.inf, -np.inf, np.nan
    q = torch.from_numpy(rng.normal(size=(B, d)).astype(np.float32))
    Wt, bt = torch.from_numpy(W), torch.from_numpy(b)
    targets = rng.integers(1, V, size=B)
    targets[:6] = [5, 7, 9, 11, 105, 499]
    extra = rng.integers(1, V, size=(B, 12))
    for chunk in (37, 128, 499):
        bounds = chunk_bounds(V, chunk)
        whole = np.concatenate([_chunk_scores(q, Wt, bt, a, e) for a, e in zip(bounds[:-1], bounds[1:])], axis=1)
        r = rank_in_chunks(q, Wt, bt, targets, k, bounds, extra)
        np.testing.assert_array_equal(r.rank, conservative_rank(whole, targets))
        np.testing.assert_array_equal(r.top, top_k_rows(whole, k)[0])
        np.testing.assert_array_equal(r.target, whole[np.arange(B), targets])
        np.testing.assert_array_equal(r.extra, np.take_along_axis(whole, extra, axis=1))
        assert r.rank[2] == r.rank[3] == V - 1  # -inf and NaN targets rank last


@pytest.mark.parametrize("differ", [False, True])
def test_rows_a_tie_decides_get_the_top_k_of_their_whole_rows(differ: bool) -> None:
    """Formed again from their own products, or from the batch's when those differ from the
    first pass's scores (here: first-pass scores made up)."""
    rng = np.random.default_rng(1)
    V, d, B, k = 300, 8, 24, 5
    W = torch.from_numpy((rng.integers(-2, 3, size=(V, d)) / 2).astype(np.float32))
    q = torch.from_numpy((rng.integers(-2, 3, size=(B, d)) / 2).astype(np.float32))
    bounds = chunk_bounds(V, 64)
    whole = np.concatenate([_chunk_scores(q, W, None, a, e) for a, e in zip(bounds[:-1], bounds[1:])], axis=1)
    top, vals = top_k_rows(whole, k)
    rows = np.array([2, 5, 6, 20])
    cols, vals = top[rows], vals[rows] + (1.0 if differ else 0.0)
    np.testing.assert_array_equal(_top_of_whole_rows(q, W, None, bounds, rows, k, cols, vals), top[rows])


def test_chunk_bounds_cover_the_catalogue_in_even_chunks() -> None:
    assert chunk_bounds(10, 4).tolist() == [0, 3, 6, 10]
    assert chunk_bounds(10, 10).tolist() == [0, 10]
    b = chunk_bounds(1_900_001, 32768)
    w = np.diff(b)
    assert b[0] == 0 and b[-1] == 1_900_001 and w.max() <= 32768 and w.max() - w.min() <= 1


# ---------------------------------------------------------------------------- real models
def gru4rec(n_items: int, seed: int) -> Recommender:
    from nextclick.models.gru4rec.model import GRU4Rec, GRU4RecConfig
    from nextclick.models.gru4rec.net import Net

    m = GRU4Rec(GRU4RecConfig(layers=(16,)))
    m.n_items_, m.vocab_ = n_items, ItemVocab(np.arange(1, n_items + 1))
    m.popularity_ = np.arange(n_items + 1, dtype=np.float32)
    m.net_ = Net.create(m.config, n_items, np.random.default_rng(seed))
    m.net_.out[:, 16] = torch.from_numpy(np.random.default_rng(seed + 1).normal(0, 0.1, n_items + 1).astype(np.float32))
    return m


def sasrec(n_items: int, seed: int) -> Recommender:
    from nextclick.models.sasrec.model import SASRec, SASRecConfig

    m = SASRec(SASRecConfig(hidden=16, n_blocks=1, max_len=6))
    m.n_items_, m.vocab_ = n_items, ItemVocab(np.arange(1, n_items + 1))
    m.popularity_ = np.arange(n_items + 1, dtype=np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m._build()
        m.net_.reset_parameters()
    m.net_.eval()
    return m


@pytest.mark.parametrize("build", [gru4rec, sasrec])
def test_real_models_queries_give_their_scores_in_the_same_batches(build) -> None:
    model = build(300, seed=0)
    test = random_sessions(np.random.default_rng(1), 300, 40, max_len=12)
    W, b = model.live().output_layer()
    pairs = list(zip(model.iter_scores(test, batch_size=32), model.iter_queries(test, batch_size=32)))
    assert len(pairs) > 3
    for (scores, t1, s1, p1), (q, t2, s2, p2) in pairs:
        assert t1.tolist() == t2.tolist() and s1.tolist() == s2.tolist() and p1.tolist() == p2.tolist()
        ref = (q @ W.T if b is None else torch.addmm(b, q, W.T)).numpy()
        np.testing.assert_allclose(scores[:, 1:], ref[:, 1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build", [gru4rec, sasrec])
def test_real_models_chunked_evaluation_equals_whole_rows(build) -> None:
    model = build(300, seed=2)
    test = random_sessions(np.random.default_rng(3), 300, 60, max_len=12)
    kw = dict(batch_size=64, by_length=True, sampled_negatives=20)
    whole = evaluate(model, test, chunk_items=None, **kw)
    for chunk in (64, 150):
        assert without_time(evaluate(model, test, chunk_items=chunk, **kw).as_dict()) == without_time(whole.as_dict())


# ---------------------------------------------------------------------------- subset of sessions
def test_max_sessions_evaluates_a_stated_random_subset_of_sessions() -> None:
    model, _, test = tie_model(60, 4, seed=1, bias=True)
    with_target = int(np.count_nonzero(test.lengths >= 2))
    res = evaluate(model, test, max_sessions=10, seed=4)
    assert res.metrics["n_sessions"] == 10
    assert res.subset == {"n_sessions": 10, "of_sessions": with_target, "seed": 4, "protocol": res.subset["protocol"]}
    assert "SESSIONS" in res.subset["protocol"] and "NOT sampled negatives" in res.subset["protocol"]
    assert res.sampled is None and "sampled" not in res.as_dict()
    assert res.as_dict()["session_subset"] == res.subset
    text = res.table()
    assert f"random SUBSET of the test sessions: 10 of {with_target:,} (seed 4)" in text
    assert "full catalogue (not sampled negatives)" in text
    # the same as evaluating the drawn sessions directly; another seed draws others
    sub, info = session_subset(test, 10, seed=4)
    assert info == res.subset and sub.n_sessions == 10 and (sub.lengths >= 2).all()
    assert without_time(evaluate(model, sub).metrics) == without_time(res.metrics)
    assert without_time(evaluate(model, test, max_sessions=10, seed=4).metrics) == without_time(res.metrics)
    other, _ = session_subset(test, 10, seed=5)
    assert other.items.tolist() != sub.items.tolist()


def test_max_sessions_at_least_all_sessions_is_no_subset() -> None:
    model, _, test = tie_model(60, 4, seed=1, bias=True)
    res = evaluate(model, test, max_sessions=test.n_sessions)
    assert res.subset is None and "SUBSET" not in res.table() and "session_subset" not in res.as_dict()
    assert without_time(res.metrics) == without_time(evaluate(model, test).metrics)
    with pytest.raises(NextclickError, match="max_sessions"):
        evaluate(model, test, max_sessions=0)
    with pytest.raises(NextclickError, match="chunk_items"):
        evaluate(model, test, chunk_items=0)


def test_cli_max_sessions_is_stated_in_the_table_and_the_json(tmp_path: Path) -> None:
    from nextclick.models import create_model

    rng = np.random.default_rng(0)
    rows = [(s, int(i), float(t)) for s in range(1, 41) for t, i in enumerate(rng.integers(100, 130, size=rng.integers(2, 6)))]
    clicks = tmp_path / "clicks.tsv"
    clicks.write_text("SessionId\tItemId\tTime\n" + "".join(f"{s}\t{i}\t{t}\n" for s, i, t in rows))
    from nextclick.data.dataset import load_sessions

    train, _ = load_sessions(clicks, "train")
    create_model("pop").fit(train).save(tmp_path / "pop")
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}

    def run(*args: str) -> str:
        cmd = [sys.executable, "-m", "nextclick", "evaluate", str(tmp_path / "pop"), "--test", str(clicks), *args]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
        assert p.returncode == 0, p.stderr
        return p.stdout

    out = json.loads(run("--max-sessions", "7", "--seed", "2", "--json"))
    assert out["n_sessions"] == 7
    assert out["session_subset"]["n_sessions"] == 7 and out["session_subset"]["of_sessions"] == 40
    assert "SUBSET of the test sessions: 7 of 40 (seed 2)" in run("--max-sessions", "7", "--seed", "2")
