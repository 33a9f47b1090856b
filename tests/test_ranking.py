"""TopK: the bounded paths (int8 scan, fp16 product) return exactly what float32 scoring returns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.ranking import bounded as scoring
from nextclick.ranking.bounded import TopK, fp16_available

needs_fp16 = pytest.mark.skipif(not fp16_available(), reason="no fbgemm fp16 GEMM in this torch build")
PATHS = {"scan": {"scan_max": 1 << 30}, "product": {"scan_max": 0}}


def exact_topk(W: torch.Tensor, b: torch.Tensor | None, q: torch.Tensor, k: int, drop: list[int]) -> tuple[np.ndarray, np.ndarray]:
    s = (q @ W.T + (b if b is not None else 0)).numpy().astype(np.float64)
    s[0] = -np.inf
    s[drop] = -np.inf
    order = np.argsort(-s, kind="stable")[:k]
    return order, s[order]


def trained_like(V: int, d: int, seed: int, bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows that concentrate on a few directions, as trained item vectors do, with norms spread."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(V, d, generator=g) * torch.linspace(1.5, 0.05, d) * torch.rand(V, 1, generator=g)
    b = torch.randn(V, generator=g) * 0.1 if bias else None
    return W, b


def check(tk: TopK, W: torch.Tensor, b: torch.Tensor | None, Q: torch.Tensor, k: int, drops: list[list[int]], ids: np.ndarray,
          sc: np.ndarray) -> None:
    for r in range(Q.shape[0]):
        want_ids, want_sc = exact_topk(W, b, Q[r], k, drops[r])
        np.testing.assert_allclose(sc[r], want_sc, rtol=1e-5, atol=1e-5)  # the exact float32 scores
        assert set(ids[r].tolist()) == set(want_ids.tolist())
        assert not set(ids[r].tolist()) & set(drops[r]) and 0 not in ids[r]


@pytest.mark.parametrize("path", ["scan", pytest.param("product", marks=needs_fp16)])
@pytest.mark.parametrize("rank", [None, 6, 48])
@pytest.mark.parametrize("bias", [True, False])
def test_bounded_paths_give_the_exact_top_k(path: str, rank: int | None, bias: bool) -> None:
    V, d, k, n = 6000, 48, 20, 24
    W, b = trained_like(V, d, seed=0, bias=bias)
    g = torch.Generator().manual_seed(1)
    Q = torch.randn(n, d, generator=g) * torch.linspace(1.5, 0.05, d)
    fast = TopK(W, b, mode="fp16", rank=rank, **PATHS[path])
    assert fast.mode == "fp16" and fast.rank == (d if rank is None else rank)
    rng = np.random.default_rng(0)
    excl = [rng.integers(1, V, size=5) for _ in range(n)]
    deny = [rng.integers(1, V, size=3) if r % 2 else None for r in range(n)]
    drops = [[*excl[r].tolist(), *([] if deny[r] is None else deny[r].tolist())] for r in range(n)]
    ids, sc = fast.topk(Q, k, excl, deny=deny)
    check(fast, W, b, Q, k, drops, ids, sc)
    for r in range(0, n, 5):  # alone, the same
        one_ids, one_sc = fast.topk(Q[r : r + 1], k, [excl[r]], deny=[deny[r]])
        check(fast, W, b, Q[r : r + 1], k, [drops[r]], one_ids, one_sc)
    if rank != 6:  # (6 directions of 48 bound loosely: correct, not fast)
        assert fast.exact < fast.rows * V / 4  # the bound spared most rows their exact score
    assert fast.fallbacks == 0


@needs_fp16
def test_the_proxy_check_picks_the_projection_only_where_it_bounds_well() -> None:
    # d = 96: 64 principal directions bound trained-like rows tightly, but not rows of equal spread
    W, b = trained_like(8000, 96, seed=2)
    assert TopK(W, b, mode="fp16").rank == 64
    flat = TopK(torch.randn(8000, 96, generator=torch.Generator().manual_seed(3)), None, mode="fp16")
    assert flat.rank == 96


@pytest.mark.parametrize("path", ["scan", pytest.param("product", marks=needs_fp16)])
def test_near_ties_are_resolved_by_exact_scores(path: str) -> None:
    # items 1..60 score within rounding of each other: every one is scored exactly, the result is exact
    V, d = 3000, 16
    g = torch.Generator().manual_seed(1)
    W = torch.randn(V, d, generator=g) * 0.01
    base = torch.randn(d, generator=g)
    W[1:61] = base + torch.randn(60, d, generator=g) * 1e-4
    q = base[None] * 3
    fast = TopK(W, None, mode="fp16", **PATHS[path])
    ids, sc = fast.topk(q, 10)
    want_ids, want_sc = exact_topk(W, None, q[0], 10, [])
    np.testing.assert_allclose(sc[0], want_sc, rtol=1e-6)
    assert fast.exact >= 60
    # near-ties may order differently in float32 and float64: each returned item's own exact score
    # equals the reference score at its rank
    s = (q[0].double() @ W.double().T).numpy()
    np.testing.assert_allclose(s[ids[0]], want_sc, rtol=1e-6)


def test_equal_scores_come_in_item_order() -> None:
    W = torch.zeros(5000, 8)
    W[1:] = torch.randn(8, generator=torch.Generator().manual_seed(7))  # every item scores the same
    tk = TopK(W, None, mode="fp16")
    ids, _ = tk.topk(torch.ones(1, 8), 5)
    assert ids[0].tolist() == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("product", [pytest.param(True, marks=needs_fp16), False])
def test_a_scan_that_cannot_bound_gives_the_row_up_and_stays_exact(product: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # two directions of 32 equal ones bound nothing: the scan gives up after max(4096, V // 16)
    # rows and the row goes to the product path (or, without fbgemm, to exact scoring)
    if not product:
        monkeypatch.setattr(scoring, "fp16_available", lambda: False)
    g = torch.Generator().manual_seed(8)
    W = torch.randn(20_000, 32, generator=g)
    q = torch.randn(2, 32, generator=g)
    tk = TopK(W, None, mode="fp16", rank=2)
    assert tk.product is product and tk.scan == (not product)  # the proxy check turns such a scan off
    tk.scan = True
    ids, sc = tk.topk(q, 10)
    assert tk.fallbacks == 2
    check(tk, W, None, q, 10, [[], []], ids, sc)


def test_without_fbgemm_the_scan_serves_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "fp16_available", lambda: False)
    W, b = trained_like(5000, 32, seed=9)
    tk = TopK(W, b, mode="fp16")
    assert not tk.product and tk.scan and not hasattr(tk, "_packs")
    Q = torch.randn(16, 32, generator=torch.Generator().manual_seed(10))
    ids, sc = tk.topk(Q, 20)
    check(tk, W, b, Q, 20, [[]] * 16, ids, sc)


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


def untrained_tail(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A catalogue where most items kept tiny embeddings (never trained)."""
    g = torch.Generator().manual_seed(seed)
    V, d = 40_000, 24
    W = torch.randn(V, d, generator=g) * 0.02
    hot = torch.randperm(V, generator=g)[:6000]
    W[hot] = torch.randn(6000, d, generator=g)
    b = torch.zeros(V)
    b[hot] = torch.randn(6000, generator=g) * 0.1
    return W, b, hot


@needs_fp16
def test_norm_order_skips_chunks_that_cannot_reach_the_top_and_stays_exact() -> None:
    # the untrained items score at most ||q|| ||W_i|| + b_i, far below the top k: their chunks are
    # never computed by the product
    W, b, hot = untrained_tail(4)
    V, d, k = W.shape[0], W.shape[1], 20
    Q = torch.randn(16, d, generator=torch.Generator().manual_seed(5))
    tk = TopK(W, b, mode="fp16", chunk_rows=4096, scan_max=0)
    assert len(tk._packs) == 8
    excl = [hot[r : r + 3].numpy() for r in range(16)]  # drop some of the best-scoring items
    ids, sc = tk.topk(Q, k, excl)
    assert tk.scored < 16 * V // 2  # most of the catalogue was never scored
    check(tk, W, b, Q, k, [e.tolist() for e in excl], ids, sc)
    for r in range(16):
        before = tk.scored
        one_ids, one_sc = tk.topk(Q[r : r + 1], k, [excl[r]])  # one query prunes too
        assert tk.scored - before < V // 2
        check(tk, W, b, Q[r : r + 1], k, [excl[r].tolist()], one_ids, one_sc)
    # a query that every row could answer (all norms alike): every chunk is computed, still exact
    flat = TopK(torch.randn(V, d, generator=torch.Generator().manual_seed(6)), None, mode="fp16", chunk_rows=4096,
                scan_max=0)
    q = torch.randn(1, d, generator=torch.Generator().manual_seed(7))
    ids, sc = flat.topk(q, k)
    assert flat.scored == V
    check(flat, flat.W, None, q, k, [[]], ids, sc)


def test_the_scan_stops_at_the_norm_bound() -> None:
    W, b, hot = untrained_tail(4)
    Q = torch.randn(16, W.shape[1], generator=torch.Generator().manual_seed(5))
    tk = TopK(W, b, mode="fp16", scan_max=1 << 30)
    ids, sc = tk.topk(Q, 20)
    check(tk, W, b, Q, 20, [[]] * 16, ids, sc)
    assert tk.exact < 16 * 6000 // 4


def test_the_heap_keeps_the_k_best_and_returns_them_best_first_ties_by_item() -> None:
    from nextclick.ranking import kernels

    rng = np.random.default_rng(5)
    for n, k in [(1, 1), (10, 10), (1000, 1), (1000, 37), (5000, 100)]:
        v = rng.standard_normal(n).round(1)  # many ties
        items = rng.permutation(n) + 1
        hv, hi, nh = np.empty(k), np.empty(k, np.int64), 0
        for x, it in zip(v, items):
            nh = kernels._push(hv, hi, nh, k, x, it)
        ids, vals = np.zeros(k, np.int64), np.full(k, -np.inf, np.float32)
        kernels._finish(hv, hi, nh, ids, vals)
        want = np.lexsort((items, -v))[: min(k, n)]  # best first, ties by item
        np.testing.assert_array_equal(vals[: len(want)], v[want].astype(np.float32))
        kept = set(ids.tolist())  # at the cut, any of the tied items may have been kept
        assert kept <= set(items[v >= v[want[-1]]].tolist()) and len(kept) == len(want)
        for a, c in zip(range(len(want) - 1), range(1, len(want))):
            assert vals[a] > vals[c] or (vals[a] == vals[c] and ids[a] < ids[c])


@pytest.mark.parametrize("path", ["scan", pytest.param("product", marks=needs_fp16)])
def test_repeated_and_unsorted_exclusions_and_short_catalogues(path: str) -> None:
    # exclusions may repeat and come unsorted; a row with fewer than k items left ends in -inf
    g = torch.Generator().manual_seed(6)
    W = torch.randn(3000, 16, generator=g)
    q = torch.randn(1, 16, generator=g)
    tk = TopK(W, None, mode="fp16", margin=2, **PATHS[path])
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

    from nextclick import compiled as kernels

    real = numba.njit

    def refusing(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function '_probe': no locator available for file 'kernels.py'")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", refusing)
    assert kernels._can_cache() is False
    monkeypatch.setattr(numba, "njit", real)
    assert kernels._can_cache() is True  # this checkout is writable


@pytest.mark.parametrize("path", ["scan", pytest.param("product", marks=needs_fp16)])
def test_infinite_and_huge_biases(path: str) -> None:
    # an item with bias -inf never scores; a bias beyond half precision's range (65504) must not
    # loosen the bound: the bias is added in float32 on both paths
    g = torch.Generator().manual_seed(5)
    V, d = 20000, 16
    W = torch.randn(V, d, generator=g)
    b = torch.randn(V, generator=g) * 0.1
    small = W.norm(dim=1).argsort()[:20]
    b[small] += 20.0  # popular items with small vectors, far down the norm order
    b[1] = -torch.inf
    Q = torch.randn(8, d, generator=g)
    for bias in (b, b + 70_000.0):
        tk = TopK(W, bias, mode="fp16", **PATHS[path])
        ids, sc = tk.topk(Q, 10)
        check(tk, W, bias, Q, 10, [[]] * 8, ids, sc)
        for r in range(0, 8, 3):
            one_ids, one_sc = tk.topk(Q[r : r + 1], 10)
            check(tk, W, bias, Q[r : r + 1], 10, [[]], one_ids, one_sc)
        assert tk.exact < tk.rows * V / 20


@pytest.mark.parametrize("path", ["scan", pytest.param("product", marks=needs_fp16)])
def test_long_and_repeated_exclusion_lists_cost_nothing_extra(path: str) -> None:
    W, b = trained_like(20000, 32, seed=11)
    q = torch.randn(1, 32, generator=torch.Generator().manual_seed(12)) * torch.linspace(1.5, 0.05, 32)
    tk = TopK(W, b, mode="fp16", **PATHS[path])
    rng = np.random.default_rng(0)
    for drop in (rng.choice(np.arange(1, 20000), 5000, replace=False), np.repeat(np.arange(1, 11), 500)):
        before = tk.exact
        ids, sc = tk.topk(q, 20, [drop])
        check(tk, W, b, q, 20, [drop.tolist()], ids, sc)
        assert tk.exact - before < 1000 and tk.fallbacks == 0


def test_empty_batches() -> None:
    W, b = trained_like(5000, 16, seed=13)
    for mode in ("fp16", "exact"):
        ids, sc = TopK(W, b, mode=mode).topk(torch.zeros(0, 16), 5)
        assert ids.shape == sc.shape == (0, 5)


def test_a_row_given_up_without_fbgemm_returns_padding_for_missing_items(monkeypatch: pytest.MonkeyPatch) -> None:
    # the scan skips excluded items before counting, so a row with fewer than k items left never
    # gives up; the give-up path itself (exact scoring here) must still pad such a row
    monkeypatch.setattr(scoring, "fp16_available", lambda: False)
    g = torch.Generator().manual_seed(6)
    W = torch.randn(20000, 16, generator=g)
    q = torch.randn(1, 16, generator=g)
    tk = TopK(W, None, mode="fp16", rank=2)
    tk.scan = True
    drop = np.arange(5, 20000)  # items 1-4 left
    ids, sc = tk.topk(q, 10, exclude=[drop])
    assert tk.fallbacks == 0 and tk.exact <= 4
    assert sorted(ids[0][:4].tolist()) == [1, 2, 3, 4] and (ids[0][4:] == 0).all() and np.isinf(sc[0][4:]).all()
    ids, sc = tk._gave_up(q, 10, np.concatenate([[0], drop]))
    assert tk.fallbacks == 1
    assert sorted(ids[:4].tolist()) == [1, 2, 3, 4] and (ids[4:] == 0).all() and np.isinf(sc[4:]).all()


def test_exclusions_outside_the_catalogue_drop_nothing_in_either_mode() -> None:
    W, b = trained_like(5000, 16, seed=14)
    q = torch.randn(1, 16, generator=torch.Generator().manual_seed(15))
    want = TopK(W, b, mode="exact").topk(q, 10)
    for mode in ("exact", "fp16"):
        ids, sc = TopK(W, b, mode=mode).topk(q, 10, [np.array([-1, 5000, 10**9])])
        assert ids[0].tolist() == want[0][0].tolist()
        np.testing.assert_allclose(sc, want[1], rtol=1e-5)
