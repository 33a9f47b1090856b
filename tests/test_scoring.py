"""TopK: the fp16-candidate path returns exactly what float32 scoring returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.scoring import TopK, fp16_available

pytestmark = pytest.mark.skipif(not fp16_available(), reason="no fbgemm fp16 GEMM in this torch build")


def exact_topk(W: torch.Tensor, b: torch.Tensor | None, q: torch.Tensor, k: int, drop: list[int]) -> tuple[np.ndarray, np.ndarray]:
    s = (q @ W.T + (b if b is not None else 0)).numpy().astype(np.float64)
    s[0] = -np.inf
    s[drop] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]
    return order, s[order]


@pytest.mark.parametrize("bias", [True, False])
def test_fp16_candidates_give_the_exact_top_k(bias: bool) -> None:
    g = torch.Generator().manual_seed(0)
    V, d, k = 5000, 32, 20
    W = torch.randn(V, d, generator=g) * 0.5
    b = torch.randn(V, generator=g) * 0.1 if bias else None
    Q = torch.randn(40, d, generator=g)
    fast, ref = TopK(W, b, mode="fp16", margin=8), TopK(W, b, mode="exact")
    assert fast.mode == "fp16" and ref.mode == "exact"
    rng = np.random.default_rng(0)
    excl = [rng.integers(1, V, size=5) for _ in range(40)]
    deny = [rng.integers(1, V, size=3) if r % 2 else None for r in range(40)]
    ids, sc = fast.topk(Q, k, excl, deny=deny)
    ids2, sc2 = ref.topk(Q, k, excl, deny=deny)
    for r in range(40):
        drop = [*excl[r].tolist(), *([] if deny[r] is None else deny[r].tolist())]
        want_ids, want_sc = exact_topk(W, b, Q[r], k, drop)
        np.testing.assert_allclose(sc[r], want_sc, rtol=1e-5, atol=1e-5)  # the exact float32 scores
        np.testing.assert_allclose(sc2[r], want_sc, rtol=1e-5, atol=1e-5)
        assert set(ids[r].tolist()) == set(want_ids.tolist())
        assert not set(ids[r].tolist()) & set(drop) and 0 not in ids[r]
        one_ids, one_sc = fast.topk(Q[r : r + 1], k, [excl[r]], deny=[deny[r]])  # alone, the same
        np.testing.assert_allclose(one_sc[0], want_sc, rtol=1e-5, atol=1e-5)
        assert set(one_ids[0].tolist()) == set(want_ids.tolist())


def test_near_ties_fall_back_to_exact_scoring() -> None:
    # items 1..60 score within fp16 rounding of each other: the candidate set cannot be proven
    # complete, so the row is re-scored over the whole catalogue (and counted)
    V, d = 3000, 16
    g = torch.Generator().manual_seed(1)
    W = torch.randn(V, d, generator=g) * 0.01
    base = torch.randn(d, generator=g)
    W[1:61] = base + torch.randn(60, d, generator=g) * 1e-4
    q = base[None] * 3
    fast = TopK(W, None, mode="fp16", margin=4)
    ids, sc = fast.topk(q, 10)
    want_ids, want_sc = exact_topk(W, None, q[0], 10, [])
    assert fast.fallbacks == 1
    np.testing.assert_allclose(sc[0], want_sc, rtol=1e-6)
    # near-ties may order differently in float32 and float64: each returned item's own exact score
    # equals the reference score at its rank
    s = (q[0].double() @ W.double().T).numpy()
    np.testing.assert_allclose(s[ids[0]], want_sc, rtol=1e-6)


def test_allow_lists_and_short_rows() -> None:
    g = torch.Generator().manual_seed(2)
    W = torch.randn(200, 8, generator=g)
    q = torch.randn(2, 8, generator=g)
    tk = TopK(W, None, mode="fp16")
    allow = [np.array([5, 7, 9, 0, 500]), None]
    ids, sc = tk.topk(q, 5, exclude=[np.array([7]), None], allow=allow)
    assert set(ids[0][np.isfinite(sc[0])].tolist()) == {5, 9}  # 0 and out-of-range ids ignored, 7 excluded
    assert np.isinf(sc[0][2:]).all() and (ids[0][2:] == 0).all()
    assert np.isfinite(sc[1]).all()
    s = (W @ q[1]).numpy()
    s[0] = -np.inf
    np.testing.assert_allclose(sc[1], np.sort(s)[::-1][:5], rtol=1e-6)


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="scoring mode"):
        TopK(torch.zeros(3, 2), None, mode="int4")  # type: ignore[arg-type]


def test_norm_pruning_skips_rows_that_cannot_reach_the_top_and_stays_exact() -> None:
    # a catalogue where most items kept tiny embeddings (never trained): their scores are bounded
    # by ||q|| ||W_i|| + b_i, far below the top-k, so their chunks are never scored
    g = torch.Generator().manual_seed(4)
    V, d, k = 40_000, 24, 20
    W = torch.randn(V, d, generator=g) * 0.02
    hot = torch.randperm(V, generator=g)[:6000]
    W[hot] = torch.randn(6000, d, generator=g)
    b = torch.zeros(V)
    b[hot] = torch.randn(6000, generator=g) * 0.1
    Q = torch.randn(16, d, generator=g)
    tk = TopK(W, b, mode="fp16", chunk_rows=4096)
    assert len(tk._packs) == 8
    excl = [hot[r : r + 3].numpy() for r in range(16)]  # drop some of the best-scoring items
    ids, sc = tk.topk(Q, k, excl)
    assert tk.scored < 16 * V // 2  # most of the catalogue was never scored
    for r in range(16):
        want_ids, want_sc = exact_topk(W, b, Q[r], k, excl[r].tolist())
        np.testing.assert_allclose(sc[r], want_sc, rtol=1e-5, atol=1e-5)
        assert set(ids[r].tolist()) == set(want_ids.tolist())
        before = tk.scored
        one_ids, one_sc = tk.topk(Q[r : r + 1], k, [excl[r]])  # one query prunes too
        assert tk.scored - before < V // 2
        np.testing.assert_allclose(one_sc[0], want_sc, rtol=1e-5, atol=1e-5)
        assert set(one_ids[0].tolist()) == set(want_ids.tolist())
    # a query that every row could answer (all norms alike): everything is scored, still exact
    flat = TopK(torch.randn(V, d, generator=g), None, mode="fp16", chunk_rows=4096)
    q = torch.randn(1, d, generator=g)
    ids, sc = flat.topk(q, k)
    assert flat.scored == V
    want_ids, want_sc = exact_topk(flat.W, None, q[0], k, [])
    np.testing.assert_allclose(sc[0], want_sc, rtol=1e-5, atol=1e-5)


def test_kth_largest_matches_a_sort() -> None:
    from nextclick import kernels

    rng = np.random.default_rng(5)
    for n, m in [(1, 1), (10, 10), (1000, 1), (1000, 37), (5000, 512)]:
        a = rng.standard_normal(n).astype(np.float32)
        a[rng.integers(0, n, n // 4)] = 0.5  # ties
        h = np.empty(m, np.float32)
        assert kernels._kth_largest(a, m, h) == np.sort(a)[::-1][m - 1]


def test_repeated_and_unsorted_exclusions_and_short_catalogues() -> None:
    # exclusions may repeat and come unsorted; a row with fewer than k items left ends in -inf
    g = torch.Generator().manual_seed(6)
    W = torch.randn(3000, 16, generator=g)
    q = torch.randn(1, 16, generator=g)
    tk = TopK(W, None, mode="fp16", margin=2)
    s = (W @ q[0]).numpy().astype(np.float64)
    s[0] = -np.inf
    best = np.argsort(-s)[:10]
    excl = np.concatenate([best[::-1], best[:3]])  # the 10 best, reversed, three of them twice
    ids, sc = tk.topk(q, 5, [excl])
    want = np.argsort(-s)[10:15]
    assert ids[0].tolist() == want.tolist()
    np.testing.assert_allclose(sc[0], s[want], rtol=1e-5)
    everything = np.arange(1, 2998)  # only items 2998 and 2999 left
    ids, sc = tk.topk(q, 5, [everything])
    assert sorted(ids[0][:2].tolist()) == [2998, 2999] and np.isinf(sc[0][2:]).all() and (ids[0][2:] == 0).all()


def test_kernels_compile_without_a_disk_cache_where_numba_has_no_writable_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # a read-only install without a writable home: numba refuses cache=True; the loops must still load
    import numba

    from nextclick import kernels

    real = numba.njit

    def refusing(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function '_probe': no locator available for file 'kernels.py'")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", refusing)
    assert kernels._can_cache() is False
    monkeypatch.setattr(numba, "njit", real)
    assert kernels._can_cache() is True  # this checkout is writable
