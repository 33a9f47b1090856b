"""GRU4Rec's compiled loops against their plain definitions: the GRU layer against
:func:`~nextclick.models.gru4rec.net.gru_cell` (with and without dropout, in one block or
several), counter-based dropout, BLAS on strided blocks and the optimiser phase."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.models.gru4rec.kernels import adagrad, blas, gru, phases  # noqa: E402
from nextclick.models.gru4rec.net import gru_cell  # noqa: E402

_NONE = np.zeros((0, 0), np.float32)


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("onehot", [False, True])
def test_compiled_layer_equals_the_gru_cell(parts: int, p: float, onehot: bool) -> None:
    # the training layer (products, biases, gates, dropout) against the one definition of the step
    rng = np.random.default_rng(0)
    b, d_in, D = 7, 5, 6
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    w = phases.GRUWeights(_NONE if onehot else f32(3 * D, d_in), f32(3 * D), f32(3 * D, D), f32(3 * D))
    inp, H = f32(b, d_in), f32(b, D)
    gx_given = f32(b, 3 * D)  # one-hot: the input pre-activations looked up in advance
    if p > 0:
        thr = np.uint32(round(p * 2.0**32))
        drop = phases.Dropout(np.uint64(99), thr, 1.0 / (1.0 - p), np.empty((b, D), np.float32))
    else:
        drop = phases.Dropout(np.uint64(0), np.uint32(0), 1.0, _NONE)
    a = phases.LayerArrays(
        _NONE if onehot else inp, H, gx_given.copy() if onehot else np.empty((b, 3 * D), np.float32),
        np.empty((b, 3 * D), np.float32), np.empty((b, 2 * D), np.float32),
        *(np.empty((b, D), np.float32) for _ in range(3)), *drop,
    )
    hx = np.empty((b, D + 1), np.float32)
    phases.layer_forward(parts, w, a, hx)

    t = torch.from_numpy
    gx = t(gx_given) if onehot else torch.addmm(t(w.b_ih), t(inp), t(w.w_ih).t())
    gh = torch.addmm(t(w.b_hh), t(H), t(w.w_hh).t())
    want = gru_cell(gx, gh, t(H)).numpy()
    if p > 0:
        mask = np.empty((b, D), np.float32)
        gru.dropout_mask(drop.key, 0, drop.thr, drop.keep, mask.ravel())  # the layer's mask, drawn whole
        np.testing.assert_array_equal(a.mask, mask)
        assert (mask == 0).any()
        want = want * mask
    np.testing.assert_allclose(a.h, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(hx[:, :D], a.h)
    assert (hx[:, D] == 1).all()


def test_dropout_masks_drop_p_and_do_not_depend_on_the_row_split() -> None:
    p, b, d = 0.3, 400, 250
    thr, keep = np.uint32(round(p * 2.0**32)), 1.0 / (1.0 - p)
    whole = np.empty(b * d, np.float32)
    gru.dropout_mask(np.uint64(12345), 0, thr, keep, whole)
    rows = np.empty((b, d), np.float32)
    for i in range(b):  # row by row, as the row blocks of the layer phase draw them
        gru.dropout_mask(np.uint64(12345), i * d, thr, keep, rows[i])
    np.testing.assert_array_equal(rows.ravel(), whole)
    assert set(np.unique(whole)) == {0.0, np.float32(keep)}
    # 100,000 draws: the dropped share's standard error is 1.4e-3
    assert abs((whole == 0).mean() - p) < 6e-3
    other = np.empty_like(whole)
    gru.dropout_mask(np.uint64(12346), 0, thr, keep, other)
    both = ((whole == 0) & (other == 0)).mean()  # another stream: independent of the first
    assert abs(both - p * p) < 6e-3
    neighbours = ((whole[1:] == 0) & (whole[:-1] == 0)).mean()  # neighbouring counters too
    assert abs(neighbours - p * p) < 6e-3


@pytest.mark.parametrize("ta,tb", [("N", "N"), ("N", "T"), ("T", "N"), ("T", "T")])
def test_blas_on_strided_blocks_equals_numpy(ta: str, tb: str) -> None:
    rng = np.random.default_rng(0)
    m, n, k = 7, 5, 6
    # row-major blocks inside larger arrays: (rows, cols) at (r0, c0) of an array with row stride L
    A = rng.standard_normal((20, 17)).astype(np.float32)
    B = rng.standard_normal((19, 23)).astype(np.float32)
    C = np.full((15, 21), 7.0, np.float32)
    a_rows, a_cols = (m, k) if ta == "T" else (k, m)  # column-major op(A) (m, k) is row-major (k, m) for "N"
    b_rows, b_cols = (k, n) if tb == "T" else (n, k)
    a_blk, b_blk = A[2 : 2 + a_rows, 3 : 3 + a_cols], B[4 : 4 + b_rows, 1 : 1 + b_cols]
    opA = a_blk if ta == "T" else a_blk.T  # column-major view of a row-major block is its transpose
    opB = b_blk if tb == "T" else b_blk.T
    want = C.copy()  # nothing outside the block may change
    want[5 : 5 + n, 6 : 6 + m] = (opA @ opB).T
    blas.gemm(ord(ta), ord(tb), m, n, k, A, 2 * 17 + 3, 17, B, 4 * 23 + 1, 23, C, 5 * 21 + 6, 21)
    np.testing.assert_allclose(C, want, rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match="C-contiguous float32"):  # a block reaching past its array
        blas.gemm(ord(ta), ord(tb), m, n, k, A, 19 * 17, 17, B, 0, 23, C, 0, 21)
    with pytest.raises(ValueError, match="C-contiguous float32"):  # a strided view
        blas.gemm(ord(ta), ord(tb), m, n, k, A[:, ::2], 0, 9, B, 0, 23, C, 0, 21)


@pytest.mark.parametrize("momentum", [0.0, 0.4])
def test_update_phase_gives_the_same_weights_in_any_number_of_blocks(momentum: float) -> None:
    rng = np.random.default_rng(3)
    V, W, M, nd = 40, 9, 25, 1001
    idx0 = np.concatenate([rng.permutation(V)[:20], [3, 3, 7, 11, 3]]).astype(np.int64)  # repeats
    idx1 = rng.integers(0, V, 12).astype(np.int64)
    g0, g1 = rng.standard_normal((M, W)).astype(np.float32), rng.standard_normal((12, W - 1)).astype(np.float32)
    gd = rng.standard_normal(nd).astype(np.float32)
    results = []
    for parts in (1, 2, 3):
        p, acc = np.ones((V, W), np.float32), np.full((V, W), 0.5, np.float32)
        mom = np.full((V, W) if momentum else (V, 0), 0.1, np.float32)
        pd, accd = np.ones(nd, np.float32), np.full(nd, 0.5, np.float32)
        momd = np.full(nd if momentum else 0, 0.1, np.float32)
        upd = adagrad.RowUpdater(p, acc, mom)
        r = upd.parts(idx0, g0.copy(), idx1, g1)
        nf, nx = adagrad.coalesce_in_place(r)
        dense = phases.DenseParams(pd, accd, momd, gd)
        phases.update_phase(parts, r, nf, nx, dense, adagrad.AdagradStep(0.05, momentum, False))
        assert (upd.pos == -1).all()
        results.append((p, acc, mom, pd, accd, momd))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    # and the rows against the one-part row update of the same gradients
    p, acc = np.ones((V, W), np.float32), np.full((V, W), 0.5, np.float32)
    mom = np.full((V, W) if momentum else (V, 0), 0.1, np.float32)
    adagrad.RowUpdater(p, acc, mom).update([(idx0, g0.copy()), (idx1, g1)], adagrad.AdagradStep(0.05, momentum, False))
    np.testing.assert_allclose(results[0][0], p, rtol=1e-6)


