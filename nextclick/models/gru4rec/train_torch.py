"""GRU4Rec's training step as tensor operations with autograd (``engine="torch"``): the maths of
the compiled step (:mod:`.train`) on any torch device, and across the ranks of a ``torchrun``
launch (:mod:`nextclick.models.distributed`).

The same as the compiled step: the output columns (the targets, then each distinct negative from
the sample store once, its draw count folded into the loss: :func:`.train.distinct_columns`),
the logQ offsets (:func:`.train.logq_tables`), both losses (cross-entropy over ``softmax(R -
lq)``, BPR-max with score regularisation over the negatives' weighted softmax), the embedding
modes, the GRU step (:func:`.net.gru_cell`), dropout on the input rows and on every layer's
output (which is also the new hidden state), the loss scale ``1 / batch_size``, and Adagrad with
momentum that updates the flat GRU vector and only the touched rows of the item matrices, the
gradients of a repeated row summed first. Only the step's output columns are scored: no (batch x
catalogue) matrix.

Differences: the gradients come from autograd (float32, another summation order: equal up to
rounding); dropout masks are drawn by a torch generator on the device, so the same seed drops
other units than the compiled step's counter-based bits (same distribution).

Data-parallel (``world`` > 1): every rank runs ``batch_size`` slots of its own shard of the
sessions with negatives from its own sample store. The step's in-batch columns are the targets
of every rank (gathered), so a row sees the same columns as in one process with all the slots;
the dense gradient is averaged over the ranks and the touched item rows' gradients are gathered
(``all_gather_rows``) and averaged, so every rank applies the same update: with the same
negatives on every rank, one step of ``world`` ranks of ``B`` slots equals one step of one
process with ``world * B`` slots and ``batch_size = world * B`` (up to rounding).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from nextclick.models import distributed
from nextclick.models.gru4rec.config import GRU4RecConfig
from nextclick.models.gru4rec.losses import EPS_LOG
from nextclick.models.gru4rec.net import Net, gru_cell
from nextclick.models.gru4rec.train import distinct_columns, logq_tables


class AdagradHP(NamedTuple):
    lr: float
    momentum: float
    nesterov: bool


def adagrad_(p: torch.Tensor, acc: torch.Tensor, mom: torch.Tensor | None, g: torch.Tensor, hp: AdagradHP) -> None:
    """The official update in place: ``acc += g^2; v = m v - lr g / sqrt(acc); p += v`` (``p += m
    v - lr g / sqrt(acc)`` with ``nesterov``; ``mom`` None: ``p -= lr g / sqrt(acc)``)."""
    acc.addcmul_(g, g)
    step = g / acc.sqrt()
    if mom is None:
        p.sub_(step, alpha=hp.lr)
        return
    mom.mul_(hp.momentum).sub_(step, alpha=hp.lr)
    if hp.nesterov:
        p.add_(mom, alpha=hp.momentum).sub_(step, alpha=hp.lr)
    else:
        p.add_(mom)


class TorchAdagradM:
    """Adagrad with momentum on device tensors (``acc`` starts at ``eps``, as the compiled
    :class:`.train.AdagradM`): :meth:`dense` on a whole tensor, :meth:`rows` on the touched rows
    of an item matrix only."""

    def __init__(self, params: list[torch.Tensor], hp: AdagradHP, eps: float) -> None:
        self.hp = hp
        self.acc = {id(p): torch.full_like(p, eps) for p in params}
        self.mom = {id(p): torch.zeros_like(p) for p in params} if hp.momentum > 0 else {}

    def dense(self, p: torch.Tensor, g: torch.Tensor) -> None:
        adagrad_(p, self.acc[id(p)], self.mom.get(id(p)), g, self.hp)

    def rows(self, p: torch.Tensor, idx: torch.Tensor, g: torch.Tensor) -> None:
        """Update the rows ``idx`` (k,) of ``p`` with gradient rows ``g`` (k, width); repeated
        indices have their gradients summed first (the update is non-linear)."""
        u, inv = torch.unique(idx, return_inverse=True)
        G = torch.zeros(u.numel(), p.shape[1], dtype=p.dtype, device=p.device).index_add_(0, inv, g)
        acc, mom = self.acc[id(p)], self.mom.get(id(p))
        pr, ar = p.index_select(0, u), acc.index_select(0, u)
        mr = None if mom is None else mom.index_select(0, u)
        adagrad_(pr, ar, mr, G, self.hp)
        p.index_copy_(0, u, pr)
        acc.index_copy_(0, u, ar)
        if mom is not None:
            mom.index_copy_(0, u, mr)  # type: ignore[arg-type]


def xe_loss(R: torch.Tensor, lq: torch.Tensor | None, tgt: torch.Tensor, scale: float) -> torch.Tensor:
    """Cross-entropy over ``softmax(R - lq)`` (R (b, M)), row ``i``'s target column ``tgt[i]``:
    ``-scale * sum_i log(p_i,tgt_i + 1e-24)``."""
    z = R if lq is None else R - lq
    p = torch.softmax(z, dim=1).gather(1, tgt[:, None])
    return -scale * torch.log(p + EPS_LOG).sum()


def bpr_max_loss(
    R: torch.Tensor, w: torch.Tensor | None, tgt: torch.Tensor, cfg: GRU4RecConfig, scale: float
) -> torch.Tensor:
    """BPR-max with score regularisation: with ``o = elu(R)`` and ``s`` row ``i``'s softmax over
    every column but its target (column ``j`` weighted by ``w[j]``, the draws it stands for),
    ``scale * sum_i [-log(sum_j s_j sigmoid(t_i - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2]``."""
    o = torch.nn.functional.elu(R, cfg.elu_param) if cfg.elu_param > 0 else R
    logit = o if w is None else o + w.log()
    s = torch.softmax(logit.scatter(1, tgt[:, None], float("-inf")), dim=1)  # (b, M), 0 on the target
    t = o.gather(1, tgt[:, None])
    per_row = -torch.log((s * torch.sigmoid(t - o)).sum(1) + EPS_LOG) + cfg.bpreg * (s * o * o).sum(1)
    return scale * per_row.sum()


class TorchTrainer:
    """One training step (forward, autograd backward, update) on ``device``; the same interface
    as :class:`.train.Trainer` (``step(x, y, neg, H) -> loss``, ``H`` replaced in place).

    The weights live on the device (the net's own tensors on the CPU, copies elsewhere: :meth:`sync`
    writes them back to the net). ``world`` > 1: one rank of a data-parallel fit (module docstring).
    """

    def __init__(self, net: Net, cfg: GRU4RecConfig, popularity: np.ndarray, device: str = "cpu") -> None:
        self.net, self.cfg = net, cfg
        self.device = torch.device(device)
        self.rank, self.world = distributed.rank_world()
        dev = self.device
        self.out = net.out.to(dev)
        self.emb = None if net.emb is None else net.emb.to(dev)
        self.wx = None if net.wx is None else net.wx.to(dev)
        self.dense = net.dense.to(dev)
        base = net.dense.storage_offset()
        self._layout = {  # name -> per layer (offset into the flat vector, shape), None where absent
            k: [None if v is None else (v.storage_offset() - base, tuple(v.shape)) for v in vs] for k, vs in net.views.items()
        }
        self.xe = cfg.loss == "cross-entropy"
        self.scale = 1.0 / cfg.batch_size
        lt, ls = logq_tables(cfg, popularity)
        self.logq_t = None if lt is None else lt.to(dev)
        self.logq_s = None if ls is None else ls.to(dev)
        hp = AdagradHP(float(cfg.learning_rate), float(cfg.momentum), bool(cfg.nesterov))
        mats = [p for p in (self.dense, self.out, self.emb, self.wx) if p is not None]
        self.opt = TorchAdagradM(mats, hp, cfg.adagrad_eps)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(int(np.random.default_rng([int(cfg.seed), 1, self.rank]).integers(2**62)))

    # ------------------------------------------------------------------ pieces
    def _views(self, d: torch.Tensor) -> dict[str, list[torch.Tensor | None]]:
        return {
            k: [None if s is None else d[s[0] : s[0] + int(np.prod(s[1]))].view(s[1]) for s in v]
            for k, v in self._layout.items()
        }

    def _dropout(self, h: torch.Tensor, p: float) -> torch.Tensor:
        if p <= 0 or h.numel() == 0:
            return h
        keep = torch.rand(h.shape, generator=self.gen, device=h.device) >= p
        return h * keep.to(h.dtype).mul_(1.0 / (1.0 - p))

    def _columns(self, y: torch.Tensor, neg: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """``(y_all, lq, w, tgt)``: the step's output columns (every rank's targets, then this
        rank's distinct negatives), their offsets or weights, and the target column of each local
        row."""
        b = y.numel()
        tgt = torch.arange(b, device=y.device)
        if self.world > 1:
            counts = torch.zeros(self.world, dtype=torch.int64, device=y.device)
            counts[self.rank] = b
            distributed.all_reduce_sum(counts)
            tgt += int(counts[: self.rank].sum())
            y, _ = distributed.all_gather_rows(y, y[:, None])
        if neg is None:
            lq = self.logq_t.index_select(0, y) if self.logq_t is not None else None
            return y, lq, None, tgt
        return (*distinct_columns(y, neg, self.xe, self.logq_t, self.logq_s), tgt)

    # ------------------------------------------------------------------ one step
    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Forward and backward of one step on this rank: ``(loss, dense gradient, row
        gradients)``, the latter as ``(matrix, row indices, gradient rows)`` (indices may repeat).
        Replaces ``H`` in place (the new states, on the device)."""
        cfg, net, dev = self.cfg, self.net, self.device
        x, y = x.to(dev), y.to(dev)
        y_all, lq, w, tgt = self._columns(y, None if neg is None else neg.to(dev))
        D, onehot = net.sizes[-1], net.mode == "onehot"
        with torch.enable_grad():
            d = self.dense.detach().requires_grad_()
            V = self._views(d)
            out_rows = self.out.index_select(0, y_all).requires_grad_()  # (M, D + 1)
            src = {"constrained": self.out, "embedding": self.emb, "onehot": self.wx}[net.mode]
            src = src[:, :D] if net.mode == "constrained" else src  # type: ignore[index]
            in_rows = src.index_select(0, x).requires_grad_()  # (b, D_in)
            inp = None if onehot else self._dropout(in_rows, cfg.dropout_p_embed)
            for l in range(len(net.sizes)):
                if inp is None:  # one-hot layer: the input pre-activations are rows of wx
                    gx = in_rows + V["b_ih"][0]
                else:
                    gx = torch.addmm(V["b_ih"][l], inp, V["w_ih"][l].t())  # type: ignore[arg-type,union-attr]
                Hp = H[l].to(dev)
                gh = torch.addmm(V["b_hh"][l], Hp, V["w_hh"][l].t())  # type: ignore[arg-type,union-attr]
                p = cfg.dropout_p_embed if (l == 0 and onehot) else cfg.dropout_p_hidden
                inp = self._dropout(gru_cell(gx, gh, Hp), p)  # (b, D_l) output = new hidden state
                H[l] = inp.detach()
            R = torch.addmm(out_rows[:, D], inp, out_rows[:, :D].t())  # type: ignore[arg-type]  # (b, M)
            if self.xe:
                loss = xe_loss(R, lq, tgt, self.scale)
            elif y_all.numel() < 2:  # no negative at all (a lone slot without samples): nothing to learn
                loss = R.sum() * 0.0
            else:
                loss = bpr_max_loss(R, w, tgt, cfg, self.scale)
            loss.backward()
        g_out, g_in = out_rows.grad, in_rows.grad
        rows = [(self.out, y_all, g_out)]
        if net.mode == "constrained":  # the input rows' gradient, no bias column
            rows.append((self.out, x, torch.nn.functional.pad(g_in, (0, 1))))
        else:
            rows.append((self.emb if net.mode == "embedding" else self.wx, x, g_in))
        return loss.detach(), d.grad, rows  # type: ignore[return-value]

    def step(self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]) -> float:
        """Train on one session-parallel step; replaces ``H`` in place. Returns the loss (with
        several ranks: the mean of the ranks' losses, the same on every rank)."""
        loss, g_dense, rows = self.gradients(x, y, neg, H)
        if self.world > 1:
            g_dense = distributed.all_reduce_sum(g_dense).div_(self.world)
            loss = distributed.all_reduce_sum(loss.reshape(1)).div_(self.world)[0]
        self.opt.dense(self.dense, g_dense)
        by_matrix: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        for p, idx, g in rows:
            by_matrix.setdefault(id(p), []).append((p, idx, g))
        for parts in by_matrix.values():
            idx, g = torch.cat([i for _, i, _ in parts]), torch.cat([r for _, _, r in parts])
            if self.world > 1:
                idx, g = distributed.all_gather_rows(idx, g)
                g = g.div_(self.world)
            self.opt.rows(parts[0][0], idx, g)
        return float(loss)

    def sync(self) -> None:
        """Copy the device's weights into the net (nothing to do on the CPU: they are the net's)."""
        for src, dst in ((self.out, self.net.out), (self.emb, self.net.emb), (self.wx, self.net.wx), (self.dense, self.net.dense)):
            if src is not None and dst is not None and src is not dst:
                dst.copy_(src)
