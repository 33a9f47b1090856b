"""GRU4Rec's training step: forward, closed-form backward and the optimiser update.

A step is a fixed, short list of compiled phases (:mod:`nextclick.models.gru4rec.kernels.phases`)
with no autograd graph: the gather of the step's item rows (with the embedding dropout), each GRU
layer, the scores with the loss and the backward through the top layer's gates, the other
weight-gradient products, the optimiser. Each runs in ``parts`` blocks: numba's threads for
``parts`` > 1, the calling thread otherwise. The backward pass is checked against autograd in the
tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nextclick.models.gru4rec.config import GRU4RecConfig
from nextclick.models.gru4rec.kernels import phases as ph
from nextclick.models.gru4rec.kernels.adagrad import AdagradStep, RowUpdater, coalesce_in_place
from nextclick.models.gru4rec.kernels.gru import gru_backward
from nextclick.models.gru4rec.kernels.losses import constants, step_columns
from nextclick.models.gru4rec.losses import EPS_LOG
from nextclick.models.gru4rec.net import Net

_NONE = np.zeros((0, 0), np.float32)  # an optional 2-D array left out
_EMPTY = np.zeros(0, np.float32)  # an optional 1-D array left out
_NO_ROWS = np.zeros(0, np.int64)
_NO_DROPOUT = ph.Dropout(np.uint64(0), np.uint32(0), 1.0, _NONE)
_NO_BLOCKS = np.zeros((1, 0, 0), np.float32)  # GateGrads.db of a layer below the top (no block sums)


def logq_tables(cfg: GRU4RecConfig, popularity: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Cross-entropy's logQ offsets per item: ``logq * log(count)`` for the in-batch targets and
    ``logq * sample_alpha * log(count)`` for the shared samples (their sampling distribution);
    ``(None, None)`` for BPR-max or ``logq`` 0. Items never seen get 0."""
    if cfg.loss != "cross-entropy" or cfg.logq <= 0:
        return None, None
    with np.errstate(divide="ignore"):
        lp = np.log(popularity.astype(np.float64))
    lp[~np.isfinite(lp)] = 0.0  # never sampled nor a target
    return (
        torch.from_numpy((cfg.logq * lp).astype(np.float32)),
        torch.from_numpy((cfg.logq * cfg.sample_alpha * lp).astype(np.float32)),
    )


def distinct_columns(
    y: torch.Tensor, neg: torch.Tensor, xe: bool, logq_t: torch.Tensor | None, logq_s: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """A step's output items as tensor operations (on ``y``'s device): the targets ``y`` (b,),
    then each distinct item of ``neg`` once, in item order, with cross-entropy's offsets (logQ,
    and ``-log(count)`` for a negative drawn ``count`` times) or BPR-max's column weights (the
    counts): ``(y_all, lq, w)``, None where not used."""
    b, dev = y.numel(), y.device
    u, c = torch.unique(neg, return_counts=True)
    u = u.long()
    y_all = torch.cat((y, u))
    if not xe:
        return y_all, None, torch.cat((torch.ones(b, device=dev), c.float()))
    lq = logq_t.index_select(0, y_all) if logq_t is not None else torch.zeros(y_all.numel(), device=dev)
    lq_s = logq_s.index_select(0, u) if logq_s is not None else torch.zeros(u.numel(), device=dev)
    lq[b:] = lq_s.sub_(c.float().log())
    return y_all, lq, None


class AdagradM:
    """Adagrad with momentum over the flat dense vector and over touched rows of item matrices.

    ``acc`` starts at ``eps``, so ``acc`` is the official ``sum(g^2) + eps`` without a separate
    addition. The updates are compiled loops (:mod:`nextclick.models.gru4rec.kernels.adagrad`) on
    zero-copy numpy views of the tensors: a row-sparse update sums the gradients of repeated rows
    first (the update is non-linear), then reads and writes only the touched rows, in one pass.
    """

    def __init__(self, net: Net, lr: float, momentum: float, nesterov: bool, eps: float) -> None:
        self.hp = AdagradStep(float(lr), float(momentum), bool(nesterov))
        self.acc: dict[int, np.ndarray] = {}
        self.mom: dict[int, np.ndarray] = {}  # without momentum: empty (a flat vector) or of width 0
        self._rows: dict[int, RowUpdater] = {}
        for p in (net.dense, net.out, net.emb, net.wx):
            if p is None:
                continue
            self.acc[id(p)] = np.full(tuple(p.shape), eps, np.float32)
            no_mom = (0,) if p.dim() == 1 else (p.shape[0], 0)
            self.mom[id(p)] = np.zeros(tuple(p.shape) if momentum > 0 else no_mom, np.float32)
            if p.dim() == 2:
                self._rows[id(p)] = RowUpdater(p.numpy(), self.acc[id(p)], self.mom[id(p)])
        d = id(net.dense)  # the GRU weights as one flat vector, with its gradient
        self.dense = ph.DenseParams(net.dense.numpy(), self.acc[d], self.mom[d], net.dense_grad.numpy())

    def rows_and_dense(
        self, parts: int, p: torch.Tensor, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray | None
    ) -> None:
        """:meth:`rows` of ``p`` with scratch parts ``(idx0, g0)`` (full width) and ``(idx1, g1)``
        (none where ``g1`` is None) and the network's flat vector with its gradient, in one phase
        of ``parts`` blocks: the rows are coalesced on the calling thread, then every block
        updates a share of the rows and a slice of the vector."""
        i1, h1 = (_NO_ROWS, _NONE) if g1 is None else (idx1, g1)
        r = self._rows[id(p)].parts(idx0, g0, i1, h1)
        nf, nx = coalesce_in_place(r)
        ph.update_phase(parts, r, nf, nx, self.dense, self.hp)

    def rows(self, p: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], scratch: bool = False) -> None:
        """Update the rows of item matrix ``p`` named in ``parts``: (row indices (k,), gradient rows
        (k, <= width)) pairs; indices may repeat (their gradients are summed first). ``scratch``:
        at most two parts, the first of full width, whose gradient may be overwritten."""
        arrays = [(i.numpy(), g.numpy()) for i, g in parts]
        if scratch and len(arrays) <= 2 and arrays[0][1].shape[1] == p.shape[1]:
            i1, g1 = arrays[1] if len(arrays) == 2 else (_NO_ROWS, _NONE)
            self._rows[id(p)].update_scratch(*arrays[0], i1, g1, self.hp)
        else:
            self._rows[id(p)].update(arrays, self.hp)


@dataclass
class Fwd:
    """What one step's forward pass hands to its backward pass."""

    b: int
    x: torch.Tensor  # (b,) input items
    y_all: torch.Tensor  # (M,) output items: targets, then shared negatives
    Gout: np.ndarray  # (M, D + 1) their output vectors and biases
    hx: np.ndarray  # (b, D + 1) top-layer output, ones in the last column
    m_e: np.ndarray | None  # embedding dropout mask
    cache: list[ph.LayerArrays]  # per layer, its forward arrays
    lq: torch.Tensor | None  # (M,) logQ correction of the scores, or None
    w: torch.Tensor | None  # (M,) BPR-max: how many sampled negatives each column stands for
    top: ph.GateGrads | None = None  # the top layer's gate gradients, from the loss phase
    g_out: np.ndarray | None = None  # (M, D + 1) the output rows' gradient, from the loss phase


class Trainer:
    """One training step = forward, closed-form backward and the optimiser update, each phase in
    ``parts`` blocks (1: on the calling thread; more: numba's threads, whose pool must allow as
    many)."""

    def __init__(self, net: Net, cfg: GRU4RecConfig, popularity: np.ndarray, parts: int = 1) -> None:
        self.net, self.cfg, self.parts = net, cfg, int(parts)
        self.opt = AdagradM(net, cfg.learning_rate, cfg.momentum, cfg.nesterov, cfg.adagrad_eps)
        self.rng = np.random.default_rng([int(cfg.seed), 1])  # dropout: a stream apart from the initialisation's
        self._counts: np.ndarray | None = None  # per-item draw counters of _columns (kept zero between steps)
        self.scale = 1.0 / cfg.batch_size
        self._k = constants(np.float32, cfg.elu_param, cfg.bpreg, self.scale)  # BPR-max's scalars
        self.xe = cfg.loss == "cross-entropy"
        self.logq_t, self.logq_s = logq_tables(cfg, popularity)
        self._w = [self._weights(l) for l in range(len(net.sizes))]  # views: fixed for the net's life
        self._gw = [self._weights(l, grads=True) for l in range(len(net.sizes))]

    def _dropout(self, b: int, d: int, p: float) -> ph.Dropout:
        """A (b, d) dropout for the compiled loops (:func:`kernels.gru.dropout_mask`): a stream key
        from the trainer's generator (the loops draw the bits themselves, counter-based, in
        whatever row blocks the threads take), the threshold ``p * 2^32``, the kept values' scale
        ``1 / (1 - p)`` and the mask's array; no dropout when ``p`` is 0 (an empty mask)."""
        if p <= 0:
            return _NO_DROPOUT
        key = np.uint64(self.rng.bit_generator.random_raw())
        thr = np.uint32(min(round(p * 2.0**32), 2**32 - 1))
        return ph.Dropout(key, thr, 1.0 / (1.0 - p), np.empty((b, d), np.float32))

    def _weights(self, l: int, grads: bool = False) -> ph.GRUWeights:
        """Layer ``l``'s weights (or their gradients) as numpy views."""
        V = self.net.grads if grads else self.net.views
        w_ih = V["w_ih"][l]
        return ph.GRUWeights(
            _NONE if w_ih is None else w_ih.numpy(), V["b_ih"][l].numpy(), V["w_hh"][l].numpy(), V["b_hh"][l].numpy()
        )

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]) -> Fwd:
        """Gather the step's item rows and run the GRU; replaces ``H`` (per-layer states, contiguous)
        in place."""
        net, cfg = self.net, self.cfg
        sizes, mode, b = net.sizes, net.mode, x.numel()
        D, L = sizes[-1], len(sizes)
        y_all, lq, w = self._columns(y, neg)  # (M,) M = b + distinct negatives
        Gout = np.empty((y_all.numel(), D + 1), np.float32)  # the output rows and biases
        inp: np.ndarray | None = None  # the first layer's input rows (b, D_in), embedding dropout applied
        src_in = {"constrained": net.out, "embedding": net.emb}.get(mode)
        if src_in is None:  # one-hot input: no input rows
            drop_e = _NO_DROPOUT
            ph.gather_rows(self.parts, ph.Gather(net.out.numpy(), y_all.numpy(), Gout, net.out.numpy(), _NO_ROWS, _NONE, *drop_e))
        else:  # one gather: the output rows and the input rows
            inp = np.empty((b, D if mode == "constrained" else src_in.shape[1]), np.float32)
            drop_e = self._dropout(b, inp.shape[1], cfg.dropout_p_embed)
            ph.gather_rows(self.parts, ph.Gather(net.out.numpy(), y_all.numpy(), Gout, src_in.numpy(), x.numpy(), inp, *drop_e))
        hx = np.empty((b, D + 1), np.float32)  # the top layer's output and a column of ones (the output bias)
        cache = []
        for l, Dl in enumerate(sizes):
            if inp is None:  # one-hot layer: the input pre-activations are a row lookup
                gx = net.input_gates(l, x, None).numpy()
            else:
                gx = np.empty((b, 3 * Dl), np.float32)
            p = cfg.dropout_p_embed if (l == 0 and mode == "onehot") else cfg.dropout_p_hidden
            a = ph.LayerArrays(
                _NONE if inp is None else inp, H[l].numpy(), gx,
                np.empty((b, 3 * Dl), np.float32), np.empty((b, 2 * Dl), np.float32),  # U H + b_hh, [reset update]
                *(np.empty((b, Dl), np.float32) for _ in range(3)),  # candidate, candidate - H, output
                *self._dropout(b, Dl, p),
            )
            ph.layer_forward(self.parts, self._w[l], a, hx if l == L - 1 else _NONE)  # h = ((1 - z) H + z n) * mask
            cache.append(a)
            H[l] = torch.from_numpy(a.h)  # the (dropped-out) output is the new hidden state, as in the official code
            inp = a.h
        return Fwd(b, x, y_all, Gout, hx, None if drop_e.mask.size == 0 else drop_e.mask, cache, lq, w)

    def _columns(
        self, y: torch.Tensor, neg: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The step's output items: the targets, then each distinct sampled negative once (in item
        order), with the cross-entropy's offsets ``lq`` (logQ, and ``-log(count)`` for a negative
        drawn ``count`` times: it enters the softmax that many times) or BPR-max's column weights
        ``w`` (the counts); None where there is nothing to correct. Scoring and updating each
        distinct item once gives the same loss and gradients as the repeated columns (a repeated
        column's softmax terms are identical) at a fraction of the cost when the catalogue is
        small."""
        b = y.numel()
        if neg is None:
            lq = self.logq_t.index_select(0, y) if self.xe and self.logq_t is not None else None
            return y, lq, None
        n_items = self.net.out.shape[0]
        if n_items <= 16 * neg.numel():  # a pass over every item's counter beats sorting the draws
            if self._counts is None:
                self._counts = np.zeros(n_items, np.int32)
            k = b + neg.numel()
            y_all, lq, w = np.empty(k, np.int64), np.empty(k, np.float32), np.empty(k, np.float32)
            M = step_columns(
                y.numpy(), neg.numpy(), self._counts, self.xe,
                _EMPTY if self.logq_t is None else self.logq_t.numpy(), _EMPTY if self.logq_s is None else self.logq_s.numpy(),
                y_all, lq, w,
            )
            t = torch.from_numpy
            return t(y_all[:M]), (t(lq[:M]) if self.xe else None), (None if self.xe else t(w[:M]))
        return distinct_columns(y, neg, self.xe, self.logq_t, self.logq_s)

    def loss(self, f: Fwd, dR: np.ndarray, dh: np.ndarray) -> float:
        """Scores and loss; fills ``dR`` (b, M) with dL/dscores and ``dh`` (b, D + 1) with
        dL/d(top-layer output) in its first D columns, and goes on to the output rows' gradient
        ``f.g_out`` (M, D + 1) and back through the top layer's gates: ``f.top`` (its gate
        gradients) and its bias gradients."""
        l = len(self.net.sizes) - 1
        top = f.cache[l]
        b, M = dR.shape
        parts = self.parts
        gw = self._gw[l]
        f.top = ph.GateGrads(
            np.empty_like(top.gh), np.empty_like(top.gh), np.empty((parts, 2, top.gh.shape[1]), np.float32), gw.b_ih, gw.b_hh
        )
        f.g_out = np.empty((M, dh.shape[1]), np.float32)
        loss = ph.LossArgs(
            self.xe, _EMPTY if f.lq is None else f.lq.numpy(), _EMPTY if f.w is None else f.w.numpy(), self._k,
            self.scale, EPS_LOG,
        )
        s = ph.ScoreArrays(np.empty((b, M), np.float32), dR, np.empty((parts, b, dh.shape[1]), np.float32), dh, f.g_out)
        return ph.loss_phase(parts, f.hx, f.Gout, loss, s, top, f.top)

    # ------------------------------------------------------------------ backward
    def backward(
        self, f: Fwd
    ) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor, np.ndarray]], np.ndarray | None]:
        """Backward from where :meth:`loss` stopped (the output rows' gradient and the top layer's
        gate gradients in ``f``): dense gradients into ``net.dense_grad``; returns the output rows'
        gradient (M, D + 1), the row-sparse gradients of the separate input matrices and, in
        constrained mode, dL/d(input rows)."""
        if f.g_out is None or f.top is None:
            raise RuntimeError("gru4rec: backward() needs loss() on the same forward pass first")
        net = self.net
        sizes, b, x = net.sizes, f.b, f.x
        d = None
        rows: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []
        for l in range(len(sizes) - 1, -1, -1):
            a = f.cache[l]
            gw = self._gw[l]
            if l == len(sizes) - 1:  # the loss phase went back through the top layer's gates
                gg = f.top
            else:
                gg = ph.GateGrads(np.empty_like(a.gh), np.empty_like(a.gh), _NO_BLOCKS, gw.b_ih, gw.b_hh)
                gru_backward(d, a.mask, a.rz, a.n, a.gh, a.dn, gg.dg, gg.dgh, gg.db_ih, gg.db_hh)
            has_in = a.inp.shape[0] > 0
            d_in = np.empty((b, a.inp.shape[1]), np.float32) if has_in else _NONE  # grad of the layer input
            m_in = f.m_e if (l == 0 and f.m_e is not None) else _NONE  # the embedding dropout's mask on it
            ph.backward_products(self.parts, a, self._w[l], gg, gw, d_in, m_in)
            if not has_in:  # one-hot layer: row-sparse input weights
                rows.append((net.wx, x, gg.dg))  # type: ignore[arg-type]
                return f.g_out, rows, None
            d = d_in
        if net.mode == "embedding":
            rows.append((net.emb, x, d))  # type: ignore[arg-type]
            return f.g_out, rows, None
        return f.g_out, rows, d

    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Forward and backward pass of one step, without updating (used by the tests).

        Returns the loss and the row-sparse gradients as ``(matrix, row indices, rows)`` (indices
        may repeat); the dense gradients are left in ``net.dense_grad``. Replaces ``H`` in place.
        """
        f = self.forward(x, y, neg, H)
        dR, dh = np.empty((f.b, f.y_all.numel()), np.float32), np.empty((f.b, self.net.sizes[-1] + 1), np.float32)
        loss = self.loss(f, dR, dh)
        g_out, rows, d_in = self.backward(f)
        out = [(p, i, torch.from_numpy(g)) for p, i, g in rows] + [(self.net.out, f.y_all, torch.from_numpy(g_out))]
        if d_in is not None:
            out.append((self.net.out, f.x, torch.cat((torch.from_numpy(d_in), torch.zeros(f.b, 1)), dim=1)))
        return torch.tensor(loss), out

    # ------------------------------------------------------------------ one training step
    def step(self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]) -> float:
        """Train on one session-parallel step; replaces ``H`` in place. Returns the loss."""
        net, opt = self.net, self.opt
        f = self.forward(x, y, neg, H)
        dR, dh = np.empty((f.b, f.y_all.numel()), np.float32), np.empty((f.b, net.sizes[-1] + 1), np.float32)
        loss = self.loss(f, dR, dh)
        g_out, rows, d_in = self.backward(f)
        # the output matrix (its output rows and, in constrained mode, its input rows) and the GRU
        # weights at once
        opt.rows_and_dense(self.parts, net.out, f.y_all.numpy(), g_out, f.x.numpy(), d_in)
        for p, idx, g in rows:
            opt.rows(p, [(idx, torch.from_numpy(g))], scratch=True)
        return loss
