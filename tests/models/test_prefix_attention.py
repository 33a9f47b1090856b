"""The (query, click) pairs of prefix attention against a brute-force loop over the prefixes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.models.prefix_attention import PrefixPairs  # noqa: E402


def pairs_list(p: PrefixPairs) -> list[tuple[int, int]]:
    return list(zip(p.query.tolist(), p.click.tolist()))


def test_every_prefix_reads_its_row_up_to_itself() -> None:
    p = PrefixPairs.every_prefix(np.array([2, 0, 3]), torch.device("cpu"))
    assert p.n_queries == 5
    assert pairs_list(p) == [(0, 0), (1, 0), (1, 1), (2, 2), (3, 2), (3, 3), (4, 2), (4, 3), (4, 4)]


def test_last_reads_the_whole_row_and_nothing_for_an_empty_row() -> None:
    p = PrefixPairs.last(np.array([2, 0, 3]), torch.device("cpu"))
    assert p.n_queries == 3
    assert pairs_list(p) == [(0, 0), (0, 1), (2, 2), (2, 3), (2, 4)]


def test_weights_and_pool_equal_a_loop_over_the_prefixes() -> None:
    rng = np.random.default_rng(0)
    n = np.array([3, 1, 0, 4])
    N, h, d = int(n.sum()), 5, 3
    keys, values = torch.randn(N, h, dtype=torch.float64), torch.randn(N, d, dtype=torch.float64)
    queries = torch.from_numpy(rng.normal(size=(N, h)))
    v = torch.nn.Linear(h, 1, bias=False).double().requires_grad_(False)
    p = PrefixPairs.every_prefix(n, torch.device("cpu"))
    w = p.weights(keys, queries, v)
    pooled = p.pool(w, values)
    off = np.cumsum(n) - n
    for b in range(n.size):
        for j in range(off[b], off[b] + n[b]):
            cl = range(off[b], j + 1)
            a = [float(v(torch.sigmoid(keys[i] + queries[j]))) for i in cl]
            want = sum(ai * values[i] for ai, i in zip(a, cl))
            torch.testing.assert_close(pooled[j], want)
    assert p.pool(w, values).shape == (N, d)
    empty = PrefixPairs.last(n, torch.device("cpu"))
    assert torch.all(empty.pool(empty.weights(keys, queries[:4], v), values)[2] == 0)


def test_dense_places_the_weights_in_the_left_padded_layout() -> None:
    n = np.array([2, 3])
    p = PrefixPairs.every_prefix(n, torch.device("cpu"))
    w = torch.arange(1.0, 1.0 + p.query.numel())
    a = p.dense(w, n, 4)
    assert a.shape == (2, 4, 4)
    assert a[0, 2, 2] == 1 and a[0, 3, 2] == 2 and a[0, 3, 3] == 3
    assert a[1, 1, 1] == 4 and a[1, 3, 1] == 7 and a[1, 3, 3] == 9
    assert int((a != 0).sum()) == p.query.numel()
