"""The phases of a training step, compiled: each split over numba's threads.

A phase is one or more block functions (``_*_block(t, parts, ...)``: block or task ``t`` of
``parts``) and two drivers with the same arguments: ``*_par`` shares the blocks out to numba's
threads (``parallel=True``), ``*_one`` runs them in turn on the calling thread and never starts
numba's thread pool, so a one-thread fit stays safe to fork after and to run from several Python
threads at once (numba's OpenMP pool and its ``workqueue`` fallback are not). The public function
of each phase (:func:`gather_rows`, :func:`layer_forward`, :func:`loss_phase`,
:func:`backward_products`, :func:`update_phase`) picks the driver from ``parts``.

Splits: row blocks of the batch, column blocks of the output rows and of the gates (so that no
two threads pack the same large operand), or whole products as separate tasks; the products
inside call BLAS single-threaded on blocks of the arrays (:func:`~.blas.gemm`), so one thread
pool serves the whole step (BLAS's own threads would spin on the same cores).

The phases take their arrays in small named tuples (:class:`Dropout`, :class:`Gather`,
:class:`GRUWeights`, :class:`LayerArrays`, :class:`LossArgs`, :class:`ScoreArrays`,
:class:`GateGrads`, :class:`~.adagrad.RowParts`, :class:`DenseParams`); an empty array stands
for "none" where a field is optional.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from nextclick.compiled import JIT as _JIT
from nextclick.models.gru4rec.kernels.adagrad import AdagradStep, RowParts, adagrad_dense, apply_rows
from nextclick.models.gru4rec.kernels.blas import N, T, gemm, span
from nextclick.models.gru4rec.kernels.gru import drop_row, gru_backward, gru_forward
from nextclick.models.gru4rec.kernels.losses import bpr_max_rows, xe_rows

_PAR = dict(_JIT, parallel=True)


# ---------------------------------------------------------------------------------- arguments
class Dropout(NamedTuple):
    """Inverted dropout drawn inside a phase (:func:`~.gru.dropout_mask`): stream ``key``,
    threshold ``thr = p * 2^32``, the kept values' scale ``keep = 1 / (1 - p)`` and the mask
    (rows, width) the phase writes (empty: no dropout). :class:`Gather` and :class:`LayerArrays`
    end with these four fields (flat: numba's parallel loops take tuples of arrays, not tuples
    of tuples)."""

    key: np.uint64
    thr: np.uint32
    keep: float
    mask: np.ndarray


class Gather(NamedTuple):
    """A step's item rows: ``G[k] = out[y_all[k]]`` (the output rows with their biases) and the
    first layer's input rows ``inp[k] = src_in[x[k], :width of inp]`` (``x`` empty: none) with
    the embedding dropout on them (the fields of :class:`Dropout`)."""

    out: np.ndarray
    y_all: np.ndarray
    G: np.ndarray
    src_in: np.ndarray
    x: np.ndarray
    inp: np.ndarray
    key: np.uint64
    thr: np.uint32
    keep: float
    mask: np.ndarray


class GRUWeights(NamedTuple):
    """A GRU layer's weights (or their gradients): ``w_ih`` (3D, D_in; empty for the one-hot
    layer), ``b_ih``, ``b_hh`` (3D,), ``w_hh`` (3D, D); gate blocks (reset, update, candidate)."""

    w_ih: np.ndarray
    b_ih: np.ndarray
    w_hh: np.ndarray
    b_hh: np.ndarray


class LayerArrays(NamedTuple):
    """A GRU layer's forward pass over a batch of ``b`` rows, kept for its backward pass.

    ``inp`` (b, D_in) its input (empty for the one-hot layer, whose ``gx`` is filled in advance),
    ``H`` (b, D) the previous state; written by :func:`layer_forward`: ``gx`` (b, 3D) input
    pre-activations, ``gh`` (b, 3D) recurrent ones with ``b_hh``, ``rz`` (b, 2D) the reset and
    update gates, ``n`` (b, D) the candidate, ``dn = n - H``, ``h`` the output (the new state),
    with the dropout of the last four fields (those of :class:`Dropout`) on it."""

    inp: np.ndarray
    H: np.ndarray
    gx: np.ndarray
    gh: np.ndarray
    rz: np.ndarray
    n: np.ndarray
    dn: np.ndarray
    h: np.ndarray
    key: np.uint64
    thr: np.uint32
    keep: float
    mask: np.ndarray


class LossArgs(NamedTuple):
    """The loss: cross-entropy (``xe``) with score offsets ``lq`` (empty: none), else BPR-max
    with the negatives' weights ``w`` (empty: all 1) and :func:`~.losses.constants` ``k``; the
    loss is scaled by ``scale``; ``eps`` inside its logarithm."""

    xe: bool
    lq: np.ndarray
    w: np.ndarray
    k: np.ndarray
    scale: float
    eps: float


class ScoreArrays(NamedTuple):
    """What :func:`loss_phase` writes: scores ``R`` (b, M), their gradient ``dR``, the gradient
    of the top layer's output ``dh`` (b, D + 1; the last column is the bias's and unused) summed
    from the column blocks' shares ``dhs`` (parts, b, D + 1), the output rows' gradient ``g_out``
    (M, D + 1)."""

    R: np.ndarray
    dR: np.ndarray
    dhs: np.ndarray
    dh: np.ndarray
    g_out: np.ndarray


class GateGrads(NamedTuple):
    """A layer's gate gradients: of the input pre-activations ``dg`` (b, 3D) and of the recurrent
    ones ``dgh``; the bias gradients ``db_ih``, ``db_hh`` (3D,) (through the scratch ``db``
    (parts, 2, 3D) in :func:`loss_phase`)."""

    dg: np.ndarray
    dgh: np.ndarray
    db: np.ndarray
    db_ih: np.ndarray
    db_hh: np.ndarray


class DenseParams(NamedTuple):
    """A flat parameter vector ``p`` with its Adagrad accumulator ``acc``, momentum ``mom``
    (empty: none) and gradient ``g``."""

    p: np.ndarray
    acc: np.ndarray
    mom: np.ndarray
    g: np.ndarray


# ---------------------------------------------------------------------------------- gather
@numba.njit(**_JIT)
def _gather_block(t: int, parts: int, a: Gather) -> None:
    n = a.y_all.shape[0]
    lo, hi = span(t, parts, n)
    for k in range(lo, hi):
        a.G[k] = a.out[a.y_all[k]]
    inp = a.inp
    w, nx = inp.shape[1], a.x.shape[0]
    lo, hi = span(t, parts, nx)
    for k in range(lo, hi):
        inp[k] = a.src_in[a.x[k], :w]
        if a.mask.shape[0] > 0:
            drop_row(a.key, k * w, a.thr, a.keep, a.mask[k], inp[k])


@numba.njit(**_PAR)
def _gather_par(parts: int, a: Gather) -> None:
    for t in numba.prange(parts):
        _gather_block(t, parts, a)


@numba.njit(**_JIT)
def _gather_one(parts: int, a: Gather) -> None:
    _gather_block(0, 1, a)


def gather_rows(parts: int, a: Gather) -> None:
    """The step's output rows and input rows (:class:`Gather`) in ``parts`` blocks."""
    (_gather_par if parts > 1 else _gather_one)(parts, a)


# ---------------------------------------------------------------------------------- a GRU layer
@numba.njit(**_JIT)
def _layer_products_block(t: int, parts: int, w: GRUWeights, a: LayerArrays) -> None:
    """Column block ``t`` of ``parts`` of a layer's products ``gx = inp w_ih^T`` (none where ``inp``
    is empty) and ``gh = H w_hh^T``: each thread packs only its own rows of the weights."""
    b, G3 = a.gh.shape
    lo, hi = span(t, parts, G3)
    if a.inp.shape[0] > 0:
        d_in = a.inp.shape[1]
        gemm(T, N, hi - lo, b, d_in, w.w_ih, lo * d_in, d_in, a.inp, 0, d_in, a.gx, lo, G3)
    D = a.H.shape[1]
    gemm(T, N, hi - lo, b, D, w.w_hh, lo * D, D, a.H, 0, D, a.gh, lo, G3)


@numba.njit(**_JIT)
def _gates_block(t: int, parts: int, w: GRUWeights, a: LayerArrays, hx: np.ndarray) -> None:
    """Row block ``t`` of ``parts`` of a layer's gates (:func:`~.gru.gru_forward`, after adding
    ``b_ih`` to ``gx`` where the layer has input rows), and the top layer's ``hx``."""
    H, gx, mask = a.H, a.gx, a.mask
    b, D = H.shape
    lo, hi = span(t, parts, b)
    if lo >= hi:
        return
    if a.inp.shape[0] > 0:
        b_ih = w.b_ih
        for i in range(lo, hi):
            g = gx[i]
            for j in range(g.shape[0]):
                g[j] += b_ih[j]
    drop = mask.shape[0] > 0
    gru_forward(
        gx[lo:hi], a.gh[lo:hi], w.b_hh, H[lo:hi], a.key, lo, a.thr, a.keep,
        a.rz[lo:hi], a.n[lo:hi], a.dn[lo:hi], mask[lo:hi] if drop else mask, a.h[lo:hi],
    )
    if hx.shape[0] > 0:
        h = a.h
        for i in range(lo, hi):
            hx[i, :D] = h[i]
            hx[i, D] = 1.0


@numba.njit(**_PAR)
def _layer_forward_par(parts: int, w: GRUWeights, a: LayerArrays, hx: np.ndarray) -> None:
    for t in numba.prange(parts):
        _layer_products_block(t, parts, w, a)
    for t in numba.prange(parts):
        _gates_block(t, parts, w, a, hx)


@numba.njit(**_JIT)
def _layer_forward_one(parts: int, w: GRUWeights, a: LayerArrays, hx: np.ndarray) -> None:
    _layer_products_block(0, 1, w, a)
    _gates_block(0, 1, w, a, hx)


def layer_forward(parts: int, w: GRUWeights, a: LayerArrays, hx: np.ndarray) -> None:
    """A GRU layer over the batch (:class:`LayerArrays`): ``gx = inp w_ih^T + b_ih`` (``inp``
    empty: ``gx`` already holds the input pre-activations) and ``gh = H w_hh^T`` in column
    blocks, then :func:`~.gru.gru_forward` in row blocks; the top layer also writes its output
    to ``hx`` (b, D + 1) with a last column of ones (empty: not the top layer)."""
    (_layer_forward_par if parts > 1 else _layer_forward_one)(parts, w, a, hx)


# ---------------------------------------------------------------------------------- scores and loss
@numba.njit(**_JIT)
def _scores_block(t: int, parts: int, hx: np.ndarray, G: np.ndarray, R: np.ndarray) -> None:
    """Column block ``t`` of ``parts`` of the scores ``R = hx G^T``: each thread reads (and BLAS
    packs) only its own rows of ``G``."""
    M, K1 = G.shape
    lo, hi = span(t, parts, M)
    gemm(T, N, hi - lo, hx.shape[0], K1, G, lo * K1, K1, hx, 0, K1, R, lo, M)


@numba.njit(**_JIT)
def _loss_rows_block(t: int, parts: int, loss: LossArgs, R: np.ndarray, dR: np.ndarray) -> float:
    """Row block ``t`` of ``parts`` of the loss (:func:`~.losses.xe_rows` or
    :func:`~.losses.bpr_max_rows`) from the scores ``R``; writes ``dR``, returns the block's loss."""
    b = R.shape[0]
    lo, hi = span(t, parts, b)
    if lo >= hi:
        return 0.0
    if loss.xe:
        return xe_rows(R[lo:hi], loss.lq, loss.scale, loss.eps, True, dR[lo:hi], lo)
    return bpr_max_rows(R[lo:hi], loss.w, loss.k, loss.eps, True, dR[lo:hi], lo)


@numba.njit(**_JIT)
def _out_grads_block(t: int, parts: int, G: np.ndarray, hx: np.ndarray, s: ScoreArrays) -> None:
    """Column block ``t`` of ``parts`` of ``dR``: its share of ``dh = dR G`` (a sum over the
    columns) to ``dhs[t]``, and its rows of the output rows' gradient ``g_out = dR^T hx``."""
    dR, dhs = s.dR, s.dhs
    b, M = dR.shape
    K1 = G.shape[1]
    lo, hi = span(t, parts, M)
    if lo >= hi:
        dhs[t] = 0.0
        return
    gemm(N, N, K1, b, hi - lo, G, lo * K1, K1, dR, lo, M, dhs[t], 0, K1)
    gemm(N, T, K1, hi - lo, b, hx, 0, K1, dR, lo, M, s.g_out, lo * K1, K1)


@numba.njit(**_JIT)
def _top_backward_block(t: int, parts: int, s: ScoreArrays, top: LayerArrays, gg: GateGrads) -> None:
    """Row block ``t`` of ``parts``: ``dh`` as the sum of the column blocks' shares ``dhs``, then
    :func:`~.gru.gru_backward` of the top layer, its bias gradients' partial sums to ``db[t]``."""
    dh, dhs, db = s.dh, s.dhs, gg.db
    b = dh.shape[0]
    lo, hi = span(t, parts, b)
    if lo >= hi:
        db[t] = 0.0
        return
    for i in range(lo, hi):
        d = dh[i]
        d[:] = dhs[0, i]
        for u in range(1, dhs.shape[0]):
            e = dhs[u, i]
            for j in range(d.shape[0]):
                d[j] += e[j]
    D = top.dn.shape[1]
    mask = top.mask
    gru_backward(
        dh[lo:hi, :D], mask[lo:hi] if mask.shape[0] > 0 else mask, top.rz[lo:hi], top.n[lo:hi], top.gh[lo:hi],
        top.dn[lo:hi], gg.dg[lo:hi], gg.dgh[lo:hi], db[t, 0], db[t, 1],
    )


@numba.njit(**_JIT)
def _sum_blocks(gg: GateGrads) -> None:
    db, db_ih, db_hh = gg.db, gg.db_ih, gg.db_hh
    db_ih[:] = db[0, 0]
    db_hh[:] = db[0, 1]
    for t in range(1, db.shape[0]):
        db_ih += db[t, 0]
        db_hh += db[t, 1]


@numba.njit(**_PAR)
def _loss_phase_par(
    parts: int, hx: np.ndarray, G: np.ndarray, loss: LossArgs, s: ScoreArrays, top: LayerArrays, gg: GateGrads
) -> float:
    for t in numba.prange(parts):
        _scores_block(t, parts, hx, G, s.R)
    losses = np.zeros(parts)
    for t in numba.prange(parts):
        losses[t] = _loss_rows_block(t, parts, loss, s.R, s.dR)
    for t in numba.prange(parts):
        _out_grads_block(t, parts, G, hx, s)
    for t in numba.prange(parts):
        _top_backward_block(t, parts, s, top, gg)
    _sum_blocks(gg)
    return losses.sum()


@numba.njit(**_JIT)
def _loss_phase_one(
    parts: int, hx: np.ndarray, G: np.ndarray, loss: LossArgs, s: ScoreArrays, top: LayerArrays, gg: GateGrads
) -> float:
    _scores_block(0, 1, hx, G, s.R)
    value = _loss_rows_block(0, 1, loss, s.R, s.dR)
    _out_grads_block(0, 1, G, hx, s)
    _top_backward_block(0, 1, s, top, gg)
    _sum_blocks(gg)
    return value


def loss_phase(
    parts: int, hx: np.ndarray, G: np.ndarray, loss: LossArgs, s: ScoreArrays, top: LayerArrays, gg: GateGrads
) -> float:
    """Scores, loss, the output rows' gradient and the backward through the top GRU layer's gates,
    each product split so that no two threads pack the same large operand:

    1. ``R = hx G^T`` (``hx`` (b, D + 1) with a last column of ones, ``G`` (M, D + 1) the output
       rows and biases) in column blocks;
    2. the loss rows (:class:`LossArgs`) writing ``dR`` (b, M), in row blocks;
    3. per column block, its share of ``dh = dR G`` and its rows of ``g_out = dR^T hx``;
    4. in row blocks, ``dh`` and :func:`~.gru.gru_backward` of the top layer ``top`` (writes
       ``gg``: the gate and bias gradients).

    Returns the loss."""
    return (_loss_phase_par if parts > 1 else _loss_phase_one)(parts, hx, G, loss, s, top, gg)


# ---------------------------------------------------------------------------------- weight gradients
@numba.njit(**_JIT)
def _products_block(
    t: int, a: LayerArrays, w: GRUWeights, gg: GateGrads, gw: GRUWeights, d_in: np.ndarray, m_in: np.ndarray
) -> None:
    """Task ``t`` (0 or 1) of :func:`backward_products`."""
    dgh, H, inp, dg = gg.dgh, a.H, a.inp, gg.dg
    b, G3 = dgh.shape
    D = H.shape[1]
    work_hh = G3 * D
    work_in = G3 * inp.shape[1] * ((inp.shape[0] > 0) + (d_in.shape[0] > 0))
    split = min(G3, max(0, (work_hh + work_in) // 2 * G3 // max(work_hh, 1)))  # rows of gw_hh for the first task
    lo, hi = (0, split) if t == 0 else (split, G3)
    gemm(N, T, D, hi - lo, b, H, 0, D, dgh, lo, G3, gw.w_hh, lo * D, D)  # gw_hh[lo:hi] = dgh[:, lo:hi]^T H
    if t == 1:
        if inp.shape[0] > 0:
            np.dot(dg.T, inp, gw.w_ih)
        if d_in.shape[0] > 0:
            np.dot(dg, w.w_ih, d_in)
            if m_in.shape[0] > 0:
                for i in range(d_in.shape[0]):
                    d, m = d_in[i], m_in[i]
                    for j in range(d.shape[0]):
                        d[j] *= m[j]


@numba.njit(**_PAR)
def _backward_products_par(
    a: LayerArrays, w: GRUWeights, gg: GateGrads, gw: GRUWeights, d_in: np.ndarray, m_in: np.ndarray
) -> None:
    for t in numba.prange(2):
        _products_block(t, a, w, gg, gw, d_in, m_in)


@numba.njit(**_JIT)
def _backward_products_one(
    a: LayerArrays, w: GRUWeights, gg: GateGrads, gw: GRUWeights, d_in: np.ndarray, m_in: np.ndarray
) -> None:
    _products_block(0, a, w, gg, gw, d_in, m_in)
    _products_block(1, a, w, gg, gw, d_in, m_in)


def backward_products(
    parts: int, a: LayerArrays, w: GRUWeights, gg: GateGrads, gw: GRUWeights, d_in: np.ndarray, m_in: np.ndarray
) -> None:
    """A layer's weight-gradient products as two tasks of about equal work (on two threads where
    ``parts`` > 1): ``gw.w_hh = dgh^T H``, ``gw.w_ih = dg^T inp`` and ``d_in = dg w_ih`` (the
    gradient of the layer's input, times the input's dropout mask ``m_in`` where that is not
    empty; each skipped where its input array is empty). The first task takes the first rows of
    ``gw.w_hh``, the second the rest."""
    (_backward_products_par if parts > 1 else _backward_products_one)(a, w, gg, gw, d_in, m_in)


# ---------------------------------------------------------------------------------- optimiser
@numba.njit(**_JIT)
def _update_block(t: int, parts: int, r: RowParts, nf: int, nx: int, d: DenseParams, hp: AdagradStep) -> None:
    """Share ``t`` of ``parts`` of :func:`update_phase`: its coalesced rows and its slice of the
    flat vector."""
    apply_rows(t, parts, r, nf, nx, hp)
    n = d.p.shape[0]
    lo, hi = span(t, parts, n)
    momd = d.mom
    adagrad_dense(
        d.p[lo:hi], d.acc[lo:hi], momd[lo:hi] if momd.shape[0] > 0 else momd, d.g[lo:hi], hp.lr, hp.momentum,
        hp.nesterov,
    )


@numba.njit(**_PAR)
def _update_par(parts: int, r: RowParts, nf: int, nx: int, d: DenseParams, hp: AdagradStep) -> None:
    for t in numba.prange(parts):
        _update_block(t, parts, r, nf, nx, d, hp)


@numba.njit(**_JIT)
def _update_one(parts: int, r: RowParts, nf: int, nx: int, d: DenseParams, hp: AdagradStep) -> None:
    _update_block(0, 1, r, nf, nx, d, hp)


def update_phase(parts: int, r: RowParts, nf: int, nx: int, d: DenseParams, hp: AdagradStep) -> None:
    """The optimiser's update after :func:`~.adagrad.coalesce_in_place` (which returned ``nf``,
    ``nx``): the item matrix's coalesced rows and the flat vector ``d``
    (:func:`~.adagrad.adagrad_dense`), each thread a share of both."""
    (_update_par if parts > 1 else _update_one)(parts, r, nf, nx, d, hp)
