"""SASRec: self-attentive sequential recommendation (Kang & McAuley, "Self-Attentive Sequential
Recommendation", ICDM 2018), with the losses of later work as named options.

Model (paper Sec. III). A sequence keeps its most recent ``max_len`` (T) clicks and is LEFT-padded
with item 0. Input = item embedding (x sqrt(d), as the reference code does) + learned position
embedding, then embedding dropout. ``n_blocks`` blocks of causal multi-head self-attention and a
point-wise two-layer ReLU feed-forward network follow, each sub-layer with dropout and a residual
connection; a final layer norm closes the stack. Position t attends to the real clicks 1..t only
(causal mask + padding mask). The output at every position is scored against the SHARED item
embedding matrix (dot product), so training is sequence-to-sequence: every position of every
sequence predicts its next click in one forward pass.

Layer-norm placement (``pre_ln``):

* ``pre_ln=False`` (default, the paper's placement as released with the paper): per block
  ``q = LN(x); x = q + Attn(Q=q, K=V=x); y = LN(x); x = y + Dropout(FFN(y))``, where attention
  drops its WEIGHTS (not its output, as in the reference code) and FFN drops its hidden layer;
* ``pre_ln=True``: the textbook pre-LN Transformer, which is the paper's Eq. (4) read literally:
  ``x = x + Dropout(g(LN(x)))`` for g = attention (Q = K = V = LN(x)) and g = FFN.

Losses (``loss``), all averaged over the real (non-padding) positions of a batch:

* ``"bce"`` -- the paper: binary cross-entropy of the target against ONE negative per position,
  drawn uniformly from the items not in that sequence (``bce_exclude_seen=False``: from all items;
  excluding them never penalises scoring the sequence's own items high, which full ranking and
  session data with repeats punish);
* ``"ce"`` -- full softmax cross-entropy over the whole catalogue (Klenitskiy & Vasilev,
  "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023);
* ``"sampled_ce"`` -- sampled softmax over the target and ``n_negatives`` items drawn from
  popularity**``sample_alpha``, every logit corrected by -log Q(item) (logQ correction, Yi et al.,
  RecSys 2019); a negative equal to the target is masked out;
* ``"gbce"`` -- gBCE of gSASRec (Petrov & Macdonald, RecSys 2023): ``n_negatives`` uniform negatives,
  positive term raised to beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = n_negatives / (n_items
  - 1), t = ``gbce_t``: loss = -beta log sigma(s+) - sum_j log(1 - sigma(s-_j)).

Deliberate deviations from the paper (measured with benchmarks/sasrec_amazon.py, or harmless):

1. ``positions="start"`` (default): the position index counts from the oldest KEPT click (1..t),
   not the padded slot (the paper: slot n is always the most recent click). With causal attention
   this makes the output at position t a function of clicks 1..t alone, identical in training (all
   positions of a sequence) and in inference (a prefix of t clicks), and lets evaluation score all
   positions of a session in one forward pass. ``positions="end"`` is the paper's slot indexing;
   evaluation then scores each prefix separately (slower, same results as serving).
2. Each epoch visits every training sequence once in a random order (the reference code samples
   users with replacement).
3. ``sampled_ce`` and ``gbce`` do not draw ``n_negatives`` for every position (gSASRec does): by
   default ``sampled_ce`` shares one draw across the mini-batch (one matrix product) and ``gbce``
   one draw per sequence (``neg_sharing``). Measured on amazon-games: batch-shared negatives make
   gBCE collapse (every logit pushed far below zero within ~5 epochs), per-sequence ones train as
   stably as per-position ones at a fraction of the cost; sampled softmax is fine batch-shared.
4. Attention has no output projection (as in the paper's formula and its code); Q/K/V have biases.
   K and V share one (2d x d) linear layer, each half with its own Xavier initialisation.
5. Adam uses beta2 = 0.98 and the embedding L2 (``l2``) is Adam's L2 penalty on the item
   embedding table, as in the reference code; dropout is applied to the attention weights, and
   (as in the reference code, unlike Eq. (4) read literally) not to the attention output.
   Until 2026-11-27 the attention output was dropped as well (dropout 0.5 twice on that path):
   the amazon-games figures before that date were measured with it.
6. Negatives for ``bce`` avoid the items of the sequence's kept window (T clicks + target), not of
   the whole user history.
7. Early stopping (``patience``, ``eval_every``) on a validation split restores the best weights;
   the paper trains a fixed number of epochs.
8. Dropout masks come from a seeded numpy generator (same maths as ``nn.Dropout``; torch's CPU
   Bernoulli sampler was the single largest cost of a training step), so a fit is reproducible
   without touching torch's global random state.

Speed (same results, less work): per-position layers run on the packed real clicks only and
attention on groups of rows of similar length, never on the padding of a T = 50 window (see
:class:`_Block`); the full softmax never materialises autograd's (N, n_items) temporaries (see
:func:`ce_loss`); evaluation runs each session once for all its positions.

Inference from a list of clicks keeps the last T. :meth:`SASRec.attention` returns the attention
matrices of every block so a caller can see which past clicks drove a recommendation.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batching import pad_prefixes
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender

log = logging.getLogger(__name__)

Loss = Literal["bce", "ce", "sampled_ce", "gbce"]


@dataclass
class SASRecConfig:
    max_len: int = 50  # T: most recent clicks kept per sequence
    hidden: int = 50  # d: embedding and hidden size
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.5  # the paper's value for the sparse Amazon data (0.2 for MovieLens)
    lr: float = 0.001
    batch_size: int = 128
    n_epochs: int = 200
    l2: float = 0.0  # L2 penalty on the item embeddings
    loss: Loss = "ce"
    bce_exclude_seen: bool = True  # bce: the negative is never an item of the sequence (the paper's sampler)
    n_negatives: int = 256  # sampled_ce / gbce
    gbce_t: float = 0.75  # gBCE calibration: 0 = plain BCE with n_negatives, 1 = fully calibrated
    sample_alpha: float = 1.0  # sampled_ce: negatives ~ popularity**alpha (0 = uniform)
    # who shares a draw of n_negatives: "batch" (all positions of a mini-batch), "sequence" (the
    # positions of one sequence); "auto" = batch for sampled_ce, sequence for gbce
    neg_sharing: Literal["auto", "batch", "sequence"] = "auto"
    pre_ln: bool = False  # see the module docstring
    positions: Literal["start", "end"] = "start"  # "end" = the paper's padded-slot positions
    scale_emb: bool = True  # multiply item embeddings by sqrt(d) at the input (reference code)
    patience: int = 3  # evaluations without improvement before stopping (0 = never stop early)
    eval_every: int = 1  # epochs between validation evaluations
    valid_metric: str = "ndcg@10"  # full-ranking metric; "sampled_ndcg@10" etc. use valid_negatives
    valid_negatives: int = 100  # negatives per target for the sampled validation metrics (0 = none)
    seed: int = 0
    device: str = "cpu"
    # torch CPU threads during fit (0 = torch's setting). The ops are small: one thread measured
    # fastest on the 2-core machine, and 4x faster than two when another job shares the CPU
    n_threads: int = 1
    progress: bool = True  # tqdm bar per epoch


# ---------------------------------------------------------------------------------------- network
@contextmanager
def _eval_mode(net: nn.Module) -> Iterator[None]:
    """Inference with ``net`` in eval mode, restoring training mode after. Toggling walks every
    module, so a network already in eval mode (fitted or loaded: serving) is left alone."""
    was = net.training
    if was:
        net.eval()
    try:
        yield
    finally:
        if was:
            net.train()


class _Dropout(nn.Module):
    """Inverted dropout whose masks come from a numpy generator (``rng``, set by ``fit``).

    Same maths as :class:`torch.nn.Dropout`; torch's CPU Bernoulli sampler is ~15x slower than
    numpy's PCG64 here and dominated the training step, and a seeded generator keeps fits
    reproducible without touching torch's global RNG."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.rng: np.random.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.rng is None:
            raise RuntimeError("dropout needs a generator in training mode (set by SASRec.fit)")
        keep = (self.rng.random(tuple(x.shape), dtype=np.float32) >= self.p) * np.float32(1.0 / (1.0 - self.p))
        return x * torch.from_numpy(keep).to(x.device)


class _Block(nn.Module):
    """Causal self-attention + point-wise feed-forward, residuals, dropout, layer norms.

    Per-position work (projections, FFN, layer norms, dropout) runs on the PACKED real positions
    (N, D) only; attention runs per group of rows of similar length, each group scattered into its
    own padded (rows, H, width, Dh) buffer (see :class:`_Layout`). With T = 50 and sequences of ~7
    clicks this skips ~85% of the per-position work and ~90% of the attention work on padding;
    padding never changes an output.
    """

    def __init__(self, d: int, n_heads: int, dropout: float, pre_ln: bool) -> None:
        super().__init__()
        if d % n_heads:
            raise NextclickError(f"sasrec: hidden={d} must be divisible by n_heads={n_heads}")
        self.h, self.pre_ln = n_heads, pre_ln
        self.ln_attn = nn.LayerNorm(d, eps=1e-8)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.ln_ffn = nn.LayerNorm(d, eps=1e-8)
        self.ff1 = nn.Linear(d, d)
        self.ff2 = nn.Linear(d, d)
        self.drop = _Dropout(dropout)  # FFN hidden layer and output (and, pre-LN, the attention output)
        self.attn_drop = _Dropout(dropout)  # attention weights (reference code)

    def forward(self, x: torch.Tensor, layout: _Layout, weights: list | None = None) -> torch.Tensor:
        N, D = x.shape  # x: (N, D) real positions of the length-sorted rows, row-major
        H = self.h
        n = self.ln_attn(x)
        kv_in, res = (n, x) if self.pre_ln else (x, n)
        qkv = torch.cat([self.q(n), self.kv(kv_in)], dim=1)  # (N, 3D)
        outs = []
        parts = qkv.split([g.stop - g.start for g in layout.groups]) if len(layout.groups) > 1 else [qkv]
        for g, part in zip(layout.groups, parts):
            R, w = g.rows, g.width
            pad = qkv.new_zeros(R * w, 3 * D).index_copy(0, g.idx, part)  # (R*w, 3D)
            q, k, v = pad.view(R, w, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (R, H, w, Dh) each
            s = (q @ k.transpose(-1, -2)) * (D // H) ** -0.5  # (R, H, w, w)
            p = torch.softmax(s.masked_fill(~g.mask, float("-inf")), dim=-1)
            if weights is not None:
                weights.append(p)
            a = self.attn_drop(p) @ v  # (R, H, w, Dh)
            outs.append(a.transpose(1, 2).reshape(R * w, D).index_select(0, g.idx))  # (n_g, D)
        a = outs[0] if len(outs) == 1 else torch.cat(outs)  # (N, D)
        x = res + (self.drop(a) if self.pre_ln else a)  # the reference drops attention WEIGHTS only
        n = self.ln_ffn(x)
        res = x if self.pre_ln else n
        return res + self.drop(self.ff2(self.drop(F.relu(self.ff1(n)))))


    def forward_dense(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on a (B, t, D) left-padded batch with a (B, 1, t, t) attention mask: the same
        maths as :meth:`forward` (whose packing pays off in training, not for a few live
        sessions); outputs at padding slots are meaningless and never read."""
        B, t, D = x.shape
        H = self.h
        n = self.ln_attn(x)
        kv_in, res = (n, x) if self.pre_ln else (x, n)
        q = self.q(n).view(B, t, H, D // H).transpose(1, 2)  # (B, H, t, Dh)
        k, v = self.kv(kv_in).view(B, t, 2, H, D // H).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) * (D // H) ** -0.5
        a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v  # (B, H, t, Dh)
        x = res + a.transpose(1, 2).reshape(B, t, D)
        n = self.ln_ffn(x)
        res = x if self.pre_ln else n
        return res + self.ff2(F.relu(self.ff1(n)))


@dataclass
class _Group:
    """Rows of similar length attended together in a (rows, width) left-padded buffer."""

    rows: int
    width: int
    start: int  # the group's real positions are packed positions start..stop-1
    stop: int
    idx: torch.Tensor  # (stop - start,) flat slots of those positions in the (rows * width) buffer
    mask: torch.Tensor  # (rows, 1, width, width) True = query may attend to key


@dataclass
class _Layout:
    """A batch sorted by length and cut into groups of rows whose lengths fall in the same
    power-of-two bucket (<= 4, 5-8, 9-16, ...), so attention is computed at each group's width."""

    groups: list[_Group]

    @classmethod
    def build(cls, kept: np.ndarray, t: int, device: torch.device) -> _Layout:
        """``kept``: (B,) real clicks per row, rows already sorted by ``kept`` ascending."""
        bucket = np.minimum(np.maximum(4, 2 ** np.ceil(np.log2(np.maximum(kept, 1)))), t).astype(np.int64)
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        groups, pos0 = [], np.concatenate([[0], np.cumsum(kept)])
        for r0, r1 in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [kept.size]])):
            k, w = kept[r0:r1], int(bucket[r0])
            real = np.arange(w)[None, :] >= (w - k)[:, None]  # (R, w)
            mask = np.tril(np.ones((w, w), dtype=bool)) & (real[:, None, :] | np.eye(w, dtype=bool))
            groups.append(_Group(
                rows=int(r1 - r0), width=w, start=int(pos0[r0]), stop=int(pos0[r1]),
                idx=torch.from_numpy(np.flatnonzero(real)).to(device),
                mask=torch.from_numpy(mask[:, None]).to(device),  # a padding query sees itself only
            ))
        return cls(groups)


class _SASRecNet(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        d, self.T = cfg.hidden, cfg.max_len
        self.scale = math.sqrt(d) if cfg.scale_emb else 1.0
        self.start_positions = cfg.positions == "start"
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # row 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len + 1, d, padding_idx=0)  # positions 1..T, 0 = padding
        self.emb_drop = _Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.n_heads, cfg.dropout, cfg.pre_ln) for _ in range(cfg.n_blocks))
        self.ln_out = nn.LayerNorm(d, eps=1e-8)

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("kv.weight"):  # K and V: each its own (d x d) Xavier, as the reference
                for half in p.chunk(2):
                    nn.init.xavier_uniform_(half)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.pos_emb.weight[0].zero_()

    def set_rng(self, rng: np.random.Generator | None) -> None:
        for m in self.modules():
            if isinstance(m, _Dropout):
                m.rng = rng

    def forward(self, x: np.ndarray, weights: list | None = None, extra: torch.Tensor | None = None) -> Any:
        """(B, t) left-padded item indices (numpy; t <= T, leading all-padding columns may be cut)
        -> (N, D) hidden states of the N real positions, row by row in position order. The state
        at a position depends only on the real clicks at or before it.

        With ``extra`` (M,) item indices, returns ``(hidden, embeddings of extra (M, D))`` from the
        same gather as the input (one dense gradient of the item table instead of two)."""
        dev = self.item_emb.weight.device
        B, t = x.shape
        kept = (x > 0).sum(1)
        order = np.argsort(kept, kind="stable")  # rows by length: attention groups are contiguous
        xs = x[order]
        real = xs > 0  # (B, t)
        if self.start_positions:
            pos = np.cumsum(real, axis=1)  # 1.. from the oldest kept click
        else:
            pos = np.broadcast_to(np.arange(self.T - t + 1, self.T + 1), (B, t))  # padded slot index
        layout = _Layout.build(kept[order], t, dev)
        items = torch.from_numpy(xs[real]).to(dev)
        if extra is not None:
            e, extra_e = self.item_emb(torch.cat([items, extra])).split([items.numel(), extra.numel()])
        else:
            e, extra_e = self.item_emb(items), None
        h = e * self.scale + self.pos_emb(torch.from_numpy(pos[real]).to(dev))  # (N, D)
        h = self.emb_drop(h)
        for blk in self.blocks:
            h = blk(h, layout, weights)
        h = self.ln_out(h)
        if not np.array_equal(order, np.arange(B)):
            h = self._unsort(h, order, kept)
        return h if extra is None else (h, extra_e)

    def forward_last(self, x: np.ndarray) -> torch.Tensor:
        """Inference: the (B, D) hidden state at the LAST slot of each left-padded row of ``x``
        (B, t), every row with at least one real click; equal to :meth:`forward` at that slot."""
        dev = self.item_emb.weight.device
        B, t = x.shape
        real = x > 0
        if self.start_positions:
            pos = np.cumsum(real, axis=1)
        else:
            pos = np.broadcast_to(np.arange(self.T - t + 1, self.T + 1), (B, t))
        h = self.item_emb(torch.from_numpy(x).to(dev)) * self.scale + self.pos_emb(torch.from_numpy(np.ascontiguousarray(pos)).to(dev))
        m = np.tril(np.ones((t, t), dtype=bool)) & (real[:, None, :] | np.eye(t, dtype=bool))
        mask = torch.from_numpy(m[:, None]).to(dev)  # (B, 1, t, t): causal, real keys (a padding query sees itself)
        for blk in self.blocks:
            h = blk.forward_dense(h, mask)
        return self.ln_out(h[:, -1])

    @staticmethod
    def _unsort(h: torch.Tensor, order: np.ndarray, kept: np.ndarray) -> torch.Tensor:
        B, dev = order.size, h.device
        # back to the caller's row order: packed position of (row, j) in the sorted layout
        start_sorted = np.concatenate([[0], np.cumsum(kept[order])])[:-1]
        first = np.empty(B, dtype=np.int64)
        first[order] = start_sorted
        back = np.repeat(first, kept) + np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
        return h.index_select(0, torch.from_numpy(back).to(dev))


# ---------------------------------------------------------------------------------------- losses
def bce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Paper loss. ``pos`` (N,) target logits, ``neg`` (N,) one negative logit per position."""
    return (F.softplus(-pos) + F.softplus(neg)).mean()


class SoftmaxWorkspace:
    """A reused buffer for the (N, n_items) softmax of :func:`ce_loss` during training: allocating
    ~100 MB afresh every batch costs more in page faults than the arithmetic. Buffers larger than
    ``max_bytes`` are not kept (the loss then recomputes the logits block by block instead)."""

    def __init__(self, max_bytes: int = 512 << 20) -> None:
        self.max_bytes = max_bytes
        self._buf: torch.Tensor | None = None

    def get(self, n: int, v: int, like: torch.Tensor) -> torch.Tensor | None:
        if n * v * like.element_size() > self.max_bytes:
            return None
        if self._buf is None or self._buf.numel() < n * v or self._buf.device != like.device:
            self._buf = like.new_empty(min(int(n * v * 1.25), self.max_bytes // like.element_size()))
        return self._buf[: n * v].view(n, v)


class _FullSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``h @ E[1:].T`` (the padding row 0 takes no part) without autograd's
    (N, n_items) temporaries. Logits are computed in blocks of rows (element-wise work stays in
    cache); with a workspace the softmax is kept in it and the backward pass is two large matrix
    products, otherwise each block is recomputed. Same value and gradients as ``F.cross_entropy``,
    ~2x faster on CPU for ~1,000 positions x 24k items. Not differentiable twice."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, E: torch.Tensor, target: torch.Tensor,
                workspace: SoftmaxWorkspace | None) -> torch.Tensor:
        N, items = h.shape[0], E[1:]  # h: (N, D); E: (V + 1, D); target: (N,) in 1..V
        V = items.shape[0]
        rows = max(8, min(256, 1_500_000 // max(V, 1)))  # ~6 MB blocks
        P = workspace.get(N, V, h) if workspace is not None else None  # (N, V) softmax, kept
        buf = h.new_empty(min(rows, N), V) if P is None else None
        lse = torch.empty(N, dtype=h.dtype, device=h.device)
        for a in range(0, N, rows):
            n = min(rows, N - a)
            b = P[a : a + n] if P is not None else buf[:n]
            torch.mm(h[a : a + n], items.T, out=b)  # logits
            m = b.amax(1, keepdim=True)
            s = b.sub_(m).exp_().sum(1, keepdim=True)
            if P is not None:
                b.div_(s)
            lse[a : a + n] = s[:, 0].log() + m[:, 0]
        ctx.save_for_backward(h, E, target, lse)
        ctx.P, ctx.rows = P, rows
        return (lse - (h * E[target]).sum(1)).mean()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        h, E, target, lse = ctx.saved_tensors
        P, rows, N, items = ctx.P, ctx.rows, h.shape[0], E[1:]
        gE = torch.zeros_like(E)
        scale = g / N
        if P is not None:  # d loss / d logits = (softmax - one-hot) / N
            P[torch.arange(N, device=h.device), target - 1] -= 1.0
            gh = (P @ items).mul_(scale)
            torch.mm(P.T, h, out=gE[1:])
            gE[1:].mul_(scale)
            ctx.P = None
            return gh, gE, None, None
        gh = torch.empty_like(h)
        buf = h.new_empty(min(rows, N), items.shape[0])
        for a in range(0, N, rows):
            n = min(rows, N - a)
            b, hb = buf[:n], h[a : a + n]
            torch.mm(hb, items.T, out=b)
            b.sub_(lse[a : a + n, None]).exp_()  # softmax
            b[torch.arange(n, device=h.device), target[a : a + n] - 1] -= 1.0
            b.mul_(scale)
            torch.mm(b, items, out=gh[a : a + n])
            gE[1:].addmm_(b.T, hb)
        return gh, gE, None, None


def ce_loss(h: torch.Tensor, E: torch.Tensor, target: torch.Tensor, workspace: SoftmaxWorkspace | None = None) -> torch.Tensor:
    """Full softmax cross-entropy of hidden states ``h`` (N, D) scored against every item of the
    embedding table ``E`` (n_items + 1, D; row 0 = padding, excluded); ``target`` (N,) in 1..n_items.
    Equals ``F.cross_entropy(h @ E[1:].T, target - 1)``."""
    return _FullSoftmaxCE.apply(h, E, target, workspace)


def sampled_ce_loss(pos: torch.Tensor, neg: torch.Tensor, log_q_pos: torch.Tensor, log_q_neg: torch.Tensor,
                    hit: torch.Tensor) -> torch.Tensor:
    """Sampled softmax with logQ correction. ``pos`` (N,), ``neg`` (N, K) logits; ``log_q_*`` the log
    sampling probabilities of the target (N,) and of the negatives ((K,) or (N, K)); ``hit`` (N, K)
    True where a negative is the target itself (masked out)."""
    logits = torch.cat([(pos - log_q_pos)[:, None], (neg - log_q_neg).masked_fill(hit, float("-inf"))], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = k / (|I| - 1)."""
    alpha = n_negatives / max(n_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(pos: torch.Tensor, neg: torch.Tensor, beta: float, hit: torch.Tensor | None = None) -> torch.Tensor:
    """gBCE: ``-beta log sigma(pos) - sum_j log(1 - sigma(neg_j))``, mean over positions; ``neg`` (N, K)."""
    neg_term = F.softplus(neg)
    if hit is not None:
        neg_term = neg_term.masked_fill(hit, 0.0)
    return (beta * F.softplus(-pos) + neg_term.sum(dim=1)).mean()


# ---------------------------------------------------------------------------------------- model
class SASRec(Recommender):
    """SASRec; see the module docstring."""

    name = "sasrec"
    Config = SASRecConfig
    needs_torch = True
    presets = {
        # Kang & McAuley 2018, Sec. IV-C, amazon-games: 2 blocks, 1 head, d = 50, T = 50, dropout 0.5,
        # lr 0.001, batch 128, BCE with one negative, 200 epochs, padded-slot positions
        "paper": dict(loss="bce", max_len=50, hidden=50, n_blocks=2, n_heads=1, dropout=0.5, lr=0.001,
                      batch_size=128, n_epochs=200, positions="end"),
        # the same network trained with full softmax cross-entropy
        "paper_ce": dict(loss="ce", max_len=50, hidden=50, n_blocks=2, n_heads=1, dropout=0.5, lr=0.001,
                         batch_size=128, n_epochs=200, positions="end"),
        # rsc15 sessions: chosen on rsc15-100k train_tr -> train_valid only (grid over dropout, hidden,
        # lr, max_len with CE; best validation Recall@20 at epoch 16), never on test
        "rsc15": dict(loss="ce", hidden=100, dropout=0.3, n_epochs=16),
    }

    # ------------------------------------------------------------------ fitting
    def _device(self, fit: bool) -> torch.device:
        """``config.device``; training on an unavailable device is an error, while an artifact
        trained on a GPU loads on the CPU when this machine has none (a service, say)."""
        c = self.config
        try:
            dev = torch.device(c.device)
        except RuntimeError as e:
            raise NextclickError(f"sasrec: device must be a torch device such as 'cpu' or 'cuda', got {c.device!r}") from e
        if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
            if fit:
                raise NextclickError(f"sasrec: device {c.device!r}, but torch sees no such CUDA device here "
                                     f"(torch.cuda.is_available() is {torch.cuda.is_available()}); use device=cpu")
            log.info("sasrec: the artifact names device %r, which this machine lacks: loading on the CPU", c.device)
            return torch.device("cpu")
        return dev

    def _build(self, fit: bool = False) -> None:
        c = self.config
        for key in ("max_len", "hidden", "n_blocks", "n_heads", "batch_size"):
            if getattr(c, key) < 1:
                raise NextclickError(f"sasrec: {key} must be >= 1, got {getattr(c, key)}")
        if not 0.0 <= c.dropout < 1.0:
            raise NextclickError(f"sasrec: dropout must be in [0, 1), got {c.dropout}")
        if c.loss not in ("bce", "ce", "sampled_ce", "gbce"):
            raise NextclickError(f"sasrec: loss must be bce, ce, sampled_ce or gbce, got {c.loss!r}")
        if c.positions not in ("start", "end"):
            raise NextclickError(f"sasrec: positions must be 'start' or 'end', got {c.positions!r}")
        if c.eval_every < 1:
            raise NextclickError(f"sasrec: eval_every must be >= 1, got {c.eval_every}")
        if c.neg_sharing not in ("auto", "batch", "sequence"):
            raise NextclickError(f"sasrec: neg_sharing must be auto, batch or sequence, got {c.neg_sharing!r}")
        if c.loss in ("sampled_ce", "gbce") and c.n_negatives < 1:
            raise NextclickError(f"sasrec: loss {c.loss} needs n_negatives >= 1, got {c.n_negatives}")
        self.device_ = self._device(fit)
        self.net_ = _SASRecNet(self.n_items_, c).to(self.device_)

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        c = self.config
        threads = torch.get_num_threads()
        if c.n_threads > 0:
            torch.set_num_threads(c.n_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                self._build(fit=True)
                self.net_.reset_parameters()
                self._train(train, valid)
        finally:
            torch.set_num_threads(threads)

    def _train(self, train: Sessions, valid: Sessions | None) -> None:
        c, net = self.config, self.net_
        rng = np.random.default_rng(c.seed)  # batches and negatives
        net.set_rng(np.random.default_rng([c.seed, 1]))  # dropout masks
        usable = np.flatnonzero(train.lengths >= 2)
        if usable.size == 0:
            raise NextclickError("sasrec: no training sequence has 2 or more clicks (nothing to predict)")
        emb = net.item_emb.weight
        other = [p for n, p in net.named_parameters() if n != "item_emb.weight"]
        opt = torch.optim.Adam(
            [{"params": [emb], "weight_decay": c.l2}, {"params": other, "weight_decay": 0.0}],
            lr=c.lr, betas=(0.9, 0.98), fused=self.device_.type in ("cpu", "cuda"),
        )
        if valid is not None:
            self._valid_cutoffs()  # a bad metric name fails now, not after the first epochs
        loss_fn = self._loss_fn(train, rng)
        n_batches = math.ceil(usable.size / c.batch_size)
        self.history_: list[dict[str, Any]] = []
        best, best_state, since_best = -math.inf, None, 0
        t_start, eval_time = time.perf_counter(), 0.0
        for epoch in range(1, c.n_epochs + 1):
            net.train()
            t0 = time.perf_counter()
            perm = rng.permutation(usable)
            total, count = 0.0, 0
            bar: Any = range(n_batches)
            if c.progress:
                from tqdm.auto import tqdm

                bar = tqdm(bar, desc=f"sasrec epoch {epoch}", leave=False, unit="batch")
            for b in bar:
                x, y = self._batch(train, perm[b * c.batch_size : (b + 1) * c.batch_size])
                loss, n = loss_fn(x, y)
                if not torch.isfinite(loss):
                    raise NextclickError(
                        f"sasrec: {c.loss} loss is {loss.item()} at epoch {epoch}, batch {b + 1}; lower lr "
                        f"(now {c.lr}) or check the data"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * n
                count += n
                if c.progress and b % 20 == 0:
                    bar.set_postfix(loss=f"{total / count:.4f}")
            if c.progress:
                bar.close()
            rec: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1), "epoch_seconds": time.perf_counter() - t0}
            log.info("sasrec epoch %d: %s loss %.4f (%.1f s)", epoch, c.loss, rec["loss"], rec["epoch_seconds"])
            stop = False
            if valid is not None and (epoch % c.eval_every == 0 or epoch == c.n_epochs):
                te = time.perf_counter()
                rec["valid"] = metrics = self._validate(valid)
                eval_time += time.perf_counter() - te
                score = metrics[c.valid_metric]
                log.info("sasrec epoch %d: valid %s = %.4f", epoch, c.valid_metric, score)
                if score > best:
                    best, since_best, self.best_epoch_ = score, 0, epoch
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    since_best += 1
                    stop = c.patience > 0 and since_best >= c.patience
            rec["train_seconds"] = time.perf_counter() - t_start - eval_time  # cumulative, evaluation excluded
            self.history_.append(rec)
            if stop:
                log.info("sasrec: early stop at epoch %d; best %s = %.4f at epoch %d", epoch, c.valid_metric, best,
                         self.best_epoch_)
                break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.set_rng(None)
        net.eval()

    def _batch(self, train: Sessions, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and next-click targets of sequences ``idx``: (B, t) each, left-padded and aligned,
        t = the longest kept input in the batch (<= T)."""
        T = self.config.max_len
        starts, n_in = train.offsets[idx], train.lengths[idx] - 1
        x, kept = pad_prefixes(train.items, starts, n_in, T)  # (B, T) clicks 1..L-1 (last T)
        y, _ = pad_prefixes(train.items, starts + 1, n_in, T)  # (B, T) clicks 2..L
        t = int(kept.max())
        return x[:, T - t :], y[:, T - t :]

    def _loss_fn(self, train: Sessions, rng: np.random.Generator) -> Any:
        """``loss_fn(x, y) -> (loss, n_positions)`` for the configured loss."""
        c, net, dev, V = self.config, self.net_, self.device_, self.n_items_
        emb = net.item_emb.weight
        if c.loss == "sampled_ce":
            q = np.maximum(np.bincount(train.items, minlength=V + 1)[1:].astype(np.float64), 1.0) ** c.sample_alpha
            q /= q.sum()
            cdf = np.cumsum(q)
            log_q = torch.tensor(np.concatenate([[0.0], np.log(q)]), dtype=torch.float32, device=dev)
        beta = gbce_beta(c.n_negatives, V, c.gbce_t) if c.loss == "gbce" else 1.0
        share = c.neg_sharing if c.neg_sharing != "auto" else ("sequence" if c.loss == "gbce" else "batch")
        workspace = SoftmaxWorkspace() if c.loss == "ce" else None

        def sample(shape: tuple[int, ...]) -> np.ndarray:
            if c.loss == "sampled_ce":
                return np.minimum(np.searchsorted(cdf, rng.random(shape), side="right"), V - 1) + 1
            return rng.integers(1, V + 1, size=shape)

        def loss_fn(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, int]:
            real = y > 0
            tgt_np = y[real]
            tgt = torch.from_numpy(tgt_np).to(dev)  # (N,) targets of the real positions
            n = tgt.numel()
            if c.loss == "ce":
                h = net(x)  # (N, D)
                return ce_loss(h, emb, tgt, workspace), n
            if c.loss == "bce":
                neg_np = self._bce_negatives(rng, x, y) if c.bce_exclude_seen else rng.integers(1, V + 1, size=x.shape)
                neg = torch.from_numpy(neg_np[real]).to(dev)  # (N,)
                h, pn = net(x, extra=torch.cat([tgt, neg]))  # (N, D), (2N, D)
                pos_l, neg_l = (h[None] * pn.view(2, n, -1)).sum(-1)
                return bce_loss(pos_l, neg_l), n
            K = c.n_negatives
            if share == "batch":
                negs = sample((K,))  # (K,) for every position
                h, pn = net(x, extra=torch.cat([tgt, torch.from_numpy(negs).to(dev)]))
                neg_l = h @ pn[n:].T  # (N, K)
                neg_of = negs[None, :]
            else:
                B, t = x.shape
                negs = sample((B, K))  # (B, K): one draw per sequence
                h, pn = net(x, extra=torch.cat([tgt, torch.from_numpy(negs.ravel()).to(dev)]))
                flat = torch.from_numpy(np.flatnonzero(real)).to(dev)
                hp = h.new_zeros(B * t, h.shape[1]).index_copy(0, flat, h).view(B, t, -1)  # (B, t, D)
                neg_l = torch.bmm(hp, pn[n:].view(B, K, -1).transpose(1, 2)).view(B * t, K)[flat]  # (N, K)
                neg_of = negs[np.repeat(np.arange(B), real.sum(1))]  # (N, K) negatives of each position
            pos_l = (h * pn[:n]).sum(-1)  # (N,)
            hit = torch.from_numpy(neg_of == tgt_np[:, None]).to(dev)  # a "negative" that is the target
            if c.loss == "sampled_ce":
                return sampled_ce_loss(pos_l, neg_l, log_q[tgt], log_q[torch.from_numpy(neg_of).to(dev)], hit), n
            return gbce_loss(pos_l, neg_l, beta, hit), n

        return loss_fn

    def _bce_negatives(self, rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, t) uniform negatives that avoid the row's window (inputs and targets)."""
        seen = np.concatenate([x, y[:, -1:]], axis=1)  # (B, t + 1)
        neg = rng.integers(1, self.n_items_ + 1, size=x.shape)
        for _ in range(20):
            bad = (neg[:, :, None] == seen[:, None, :]).any(-1)
            if not bad.any():
                break
            neg[bad] = rng.integers(1, self.n_items_ + 1, size=int(bad.sum()))
        return neg

    def _valid_cutoffs(self) -> tuple[int, ...]:
        metric = self.config.valid_metric
        name, _, k = metric.removeprefix("sampled_").partition("@")
        known = ("recall", "mrr", "ndcg", "hr") if metric.startswith("sampled_") else ("recall", "mrr", "ndcg")
        if name not in known or not k.isdigit() or int(k) < 1:
            raise NextclickError(
                f"sasrec: valid_metric {metric!r} not understood; expected recall@K, mrr@K or ndcg@K (full ranking) "
                "or sampled_hr@K, sampled_ndcg@K, sampled_mrr@K (with valid_negatives > 0)"
            )
        if metric.startswith("sampled_") and self.config.valid_negatives < 1:
            raise NextclickError(f"sasrec: valid_metric {metric!r} needs valid_negatives >= 1")
        return tuple(sorted({10, 20, int(k)}))

    def _validate(self, valid: Sessions) -> dict[str, float]:
        """Validation metrics with the core evaluator (full ranking; sampled ones too when
        ``valid_negatives`` > 0), keys like ``ndcg@10`` and ``sampled_hr@10``."""
        from nextclick.evaluate import evaluate  # lazy: evaluation sits above the models

        c = self.config
        neg = c.valid_negatives if c.valid_negatives > 0 else None
        res = evaluate(self, valid, cutoffs=self._valid_cutoffs(), sampled_negatives=neg, seed=c.seed)
        out = {k: float(v) for k, v in res.metrics.items() if "@" in k}
        if res.sampled is not None:
            out.update({f"sampled_{k}": float(v) for k, v in res.sampled.items() if "@" in k})
        return out

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _hidden(self, x: np.ndarray, last: np.ndarray) -> torch.Tensor:
        """Hidden states of the last ``last[b]`` positions of each left-padded row of ``x`` (B, T),
        concatenated row by row in position order: (sum(last), D)."""
        with _eval_mode(self.net_):
            t = max(int((x > 0).sum(1).max()), 1)
            x = x[:, x.shape[1] - t :]
            h = self.net_(x)  # (N, D)
            sel = np.arange(t)[None, :] >= (t - last)[:, None]  # (B, t)
            return h[torch.from_numpy(sel[x > 0]).to(self.device_)]

    @torch.no_grad()
    def _scores_from_hidden(self, h: torch.Tensor) -> np.ndarray:
        out = (h @ self.net_.item_emb.weight.T).float().cpu().numpy()  # (N, V + 1)
        out[:, 0] = -np.inf
        return out

    # ------------------------------------------------------------------ live sessions (serving)
    def output_layer(self) -> tuple[torch.Tensor, None]:
        return self.net_.item_emb.weight.detach(), None

    def live_query(self, states, clicks, new_items):  # type: ignore[override]
        """Hidden state at the last position of each session's last T known clicks (no state of
        its own: the store keeps the clicks)."""
        self._check_fitted()
        T = self.config.max_len
        seqs = [np.asarray(c, dtype=np.int64) for c in clicks]
        seqs = [s[(s > 0) & (s <= self.n_items_)][-T:] for s in seqs]
        t = max(max((s.size for s in seqs), default=1), 1)
        x = np.zeros((len(seqs), t), dtype=np.int64)
        for r, s in enumerate(seqs):
            if s.size:
                x[r, t - s.size :] = s
        empty = (x > 0).sum(1) == 0
        if empty.any():  # not expected from the service (it answers those with popularity)
            raise NextclickError("sasrec.live_query: a session has no known click")
        with _eval_mode(self.net_), torch.no_grad():
            h = self.net_.forward_last(x)
        return states, h.float().cpu().contiguous()

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        T = self.config.max_len
        out = np.empty((len(sess), self.n_items_ + 1), dtype=np.float32)
        for a in range(0, len(sess), 1024):
            s = slice(a, a + 1024)
            x, kept = pad_prefixes(sessions.items, sessions.offsets[sess[s]], plen[s], T)
            out[s] = self._scores_from_hidden(self._hidden(x, np.ones(len(x), dtype=np.int64)))
        return out

    def _windows(self, sessions: Sessions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward passes needed to score every evaluation prefix: (session, end, n_out). A window
        reads clicks ``[max(0, end - T), end)`` and yields the prefixes ``end - n_out + 1 .. end``."""
        T, L = self.config.max_len, sessions.lengths
        s = np.flatnonzero(L >= 2)
        n_pred = L[s] - 1
        if sessions.last_only:
            return s, n_pred, np.ones_like(s)
        if self.config.positions == "end":  # positions depend on the prefix end: one pass per prefix
            sess, plen, _ = sessions.prefixes()
            return sess, plen, np.ones_like(sess)
        first = np.minimum(n_pred, T)  # one pass covers the first min(L - 1, T) prefixes ...
        extra = n_pred - first  # ... longer prefixes keep only their last T clicks: one pass each
        es = np.repeat(s, extra)
        ee = np.arange(int(extra.sum()), dtype=np.int64) - np.repeat(np.cumsum(extra) - extra, extra) + T + 1
        return (np.concatenate([s, es]), np.concatenate([first, ee]),
                np.concatenate([first, np.ones_like(es)]))

    def iter_scores(self, sessions: Sessions, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """All positions of a session come from one forward pass (causal attention: the output at
        position t sees clicks 1..t only); ``last_only`` data scores just the last position."""
        self._check_fitted()
        ws, we, wm = self._windows(sessions)
        T = self.config.max_len
        # score blocks of <= 16 MB: larger ones are mmapped and page-faulted afresh on every batch
        batch_size = max(1, min(batch_size, 4_000_000 // (self.n_items_ + 1)))
        cum = np.cumsum(wm)
        a = 0
        while a < ws.size:
            b = int(np.searchsorted(cum, (cum[a - 1] if a else 0) + batch_size, side="right"))
            b = max(b, a + 1)
            s, e, m = ws[a:b], we[a:b], wm[a:b]
            x, _ = pad_prefixes(sessions.items, sessions.offsets[s], e, T)
            scores = self._scores_from_hidden(self._hidden(x, m))
            sess = np.repeat(s, m)
            plen = np.repeat(e - m, m) + np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m) + 1
            yield scores, sessions.items[sessions.offsets[sess] + plen], sess, plen
            a = b

    # ------------------------------------------------------------------ attention
    @torch.no_grad()
    def attention(self, session_items_idx: Sequence[int] | np.ndarray, per_head: bool = False) -> list[np.ndarray]:
        """Attention matrices of a session of INTERNAL indices, one per block.

        The session keeps its last T known clicks (t of them). Each matrix is (t, t) averaged over
        heads (``per_head=True``: (n_heads, t, t)); row i holds the weights with which position i
        (the prediction after click i) reads clicks 1..i of the kept window -- the last row explains
        the recommendation for the whole session. Rows sum to 1 over the visible clicks; entries
        right of the diagonal are 0.
        """
        self._check_fitted()
        s = np.asarray(session_items_idx, dtype=np.int64)
        s = s[(s > 0) & (s <= self.n_items_)][-self.config.max_len :]
        if s.size == 0:
            return []
        weights: list[torch.Tensor] = []
        with _eval_mode(self.net_):
            self.net_(s[None, :], weights)
        out = [w[0].cpu().numpy() for w in weights]  # (H, t, t) each
        return out if per_head else [w.mean(0) for w in out]

    def click_weights(self, session_items: Sequence[Any], block: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """For a live session of SHOP item ids: ``(item_ids, weights)`` -- the kept known clicks
        (oldest first) and the attention the next-click prediction pays to each in ``block``
        (default the last), averaged over heads. Weights sum to 1."""
        idx, _ = self.encode_session(session_items)
        idx = idx[-self.config.max_len :]
        mats = self.attention(idx)
        if not mats:
            return self.vocab_.decode(idx), np.zeros(0, dtype=np.float32)
        return self.vocab_.decode(idx), mats[block][-1].astype(np.float32)

    # ------------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation leaves torch's RNG alone
            self._build()
        self.net_.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        self.net_.eval()
