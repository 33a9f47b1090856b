"""The negative samplers: their distributions, their exclusions, and the exact random calls that
make seeded fits and evaluations reproducible."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nextclick.data.sampling import PopularitySampler, alias_draw, alias_table, uniform, uniform_not_in


def test_sampling_imports_no_torch() -> None:
    code = "import sys, nextclick.data.sampling; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_uniform_is_one_integers_call_over_the_items() -> None:
    a = uniform(np.random.default_rng(3), 7, (50, 4))
    assert a.shape == (50, 4) and a.min() >= 1 and a.max() <= 7
    assert np.array_equal(a, np.random.default_rng(3).integers(1, 8, size=(50, 4)))


def test_popularity_probabilities_and_log_q() -> None:
    counts = np.array([4, 0, 1, 9])  # item 2 was never clicked: counts as one click
    s = PopularitySampler(counts, alpha=0.5)
    want = np.array([2.0, 1.0, 1.0, 3.0]) / 7.0
    np.testing.assert_allclose(s.q, want)
    assert s.log_q[0] == 0.0  # padding
    np.testing.assert_allclose(s.log_q[1:], np.log(want))
    np.testing.assert_allclose(PopularitySampler(counts, alpha=0.0).q, np.full(4, 0.25))


def test_popularity_from_clicks_ignores_padding() -> None:
    s = PopularitySampler.from_clicks(np.array([0, 1, 1, 3, 0]), n_items=3, alpha=1.0)
    np.testing.assert_allclose(s.q, np.array([2.0, 1.0, 1.0]) / 4.0)


def test_popularity_draws_follow_q_and_use_one_random_call() -> None:
    s = PopularitySampler(np.array([1, 2, 3, 4]), alpha=1.0)
    d = s.draw(np.random.default_rng(0), (200_000,))
    assert d.min() >= 1 and d.max() <= 4
    np.testing.assert_allclose(np.bincount(d, minlength=5)[1:] / d.size, s.q, atol=0.005)
    # the inverse CDF of one rng.random call, so a seeded caller's stream is fixed
    u = np.random.default_rng(1).random((3, 5))
    want = np.minimum(np.searchsorted(np.cumsum(s.q), u, side="right"), 3) + 1
    assert np.array_equal(s.draw(np.random.default_rng(1), (3, 5)), want)


def test_uniform_not_in_avoids_each_rows_own_items() -> None:
    n = 20
    rows = np.repeat(np.arange(3), [19, 5, 0])
    items = np.concatenate([np.delete(np.arange(1, n + 1), 6), [1, 2, 3, 4, 0]])  # row 0 may only draw 7
    neg = uniform_not_in(np.random.default_rng(0), n, (3, 200), rows, items, max_rounds=1000)
    assert (neg[0] == 7).all()
    assert not np.isin(neg[1], [1, 2, 3, 4]).any() and neg[1].min() >= 1
    assert neg[2].min() >= 1 and neg[2].max() <= n and np.isin(np.arange(1, 5), neg[2]).all()  # row 2: no exclusions


def test_uniform_not_in_without_rounds_is_the_plain_draw() -> None:
    neg = uniform_not_in(np.random.default_rng(2), 5, (4, 6), np.zeros(3, np.int64), np.array([1, 2, 3]), max_rounds=0)
    assert np.array_equal(neg, uniform(np.random.default_rng(2), 5, (4, 6)))
    neg = uniform_not_in(np.random.default_rng(2), 5, (2, 3), np.zeros(0, np.int64), np.zeros(0, np.int64), max_rounds=5)
    assert np.array_equal(neg, uniform(np.random.default_rng(2), 5, (2, 3)))  # nothing to avoid


def _redraw_reference(rng: np.random.Generator, n: int, shape: tuple[int, int], seen: list[set[int]], rounds: int) -> np.ndarray:
    """The rejection loop written plainly: the stream the samplers of SASRec and evaluation use."""
    neg = rng.integers(1, n + 1, size=shape)
    for _ in range(rounds):
        bad = np.array([[v in seen[r] for v in row] for r, row in enumerate(neg)])
        if not bad.any():
            break
        neg[bad] = rng.integers(1, n + 1, size=int(bad.sum()))
    return neg


@pytest.mark.parametrize("rounds", [1, 2, 20, 100])
def test_uniform_not_in_makes_the_reference_random_calls(rounds: int) -> None:
    gen = np.random.default_rng(11)
    n, B, K = 12, 6, 9
    seen = [set(gen.choice(np.arange(0, n + 1), size=int(gen.integers(0, n)), replace=False).tolist()) for _ in range(B)]
    rows = np.concatenate([np.full(len(s), r) for r, s in enumerate(seen)]).astype(np.int64)
    items = np.concatenate([sorted(s) for s in seen]).astype(np.int64)
    got = uniform_not_in(np.random.default_rng(4), n, (B, K), rows, items, max_rounds=rounds)
    assert np.array_equal(got, _redraw_reference(np.random.default_rng(4), n, (B, K), seen, rounds))


def test_alias_table_draws_follow_the_weights() -> None:
    w = np.array([0.0, 1.0, 2.0, 5.0, 0.5])
    prob, alias = alias_table(w)
    d = alias_draw(np.random.default_rng(0), prob.astype(np.float32), alias.astype(np.int32), np.empty(400_000, np.int32),
                   chunk=1 << 16)
    assert not (d == 0).any()  # a zero weight is never drawn
    np.testing.assert_allclose(np.bincount(d, minlength=5) / d.size, w / w.sum(), atol=0.005)


def test_alias_draw_random_calls_per_chunk() -> None:
    prob, alias = alias_table(np.array([1.0, 3.0, 2.0]))
    p32, a32 = prob.astype(np.float32), alias.astype(np.int32)
    got = alias_draw(np.random.default_rng(7), p32, a32, np.empty(10, np.int32), chunk=4)
    rng, want = np.random.default_rng(7), []
    for m in (4, 4, 2):
        i = rng.integers(0, 3, m, dtype=np.int32)
        u = rng.random(m, dtype=np.float32)
        want.append(np.where(u < p32[i], i, a32[i]))
    assert np.array_equal(got, np.concatenate(want))


@pytest.mark.parametrize("w", [np.zeros(3), np.array([1.0, -1.0]), np.zeros(0)])
def test_alias_table_rejects_bad_weights(w: np.ndarray) -> None:
    with pytest.raises(ValueError, match="non-negative weights"):
        alias_table(w)
