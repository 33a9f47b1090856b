"""SASRec's network: item and position embeddings, causal self-attention blocks, a final layer
norm. See :mod:`nextclick.models.sasrec.model` for the paper and the deviations from it.

Shapes: B rows (sequences), t <= T columns of a LEFT-padded batch, N real (non-padding) positions
packed row by row, D = hidden, H heads of Dh = D / H.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.errors import NextclickError
from nextclick.models.sasrec.config import SASRecConfig


@contextmanager
def eval_mode(net: nn.Module) -> Iterator[None]:
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


def embed_with(emb: nn.Embedding, items: torch.Tensor, extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The embeddings of ``items`` and of ``extra`` (None: none) from one gather, so that the
    item table gets one dense gradient instead of two."""
    if extra is None:
        return emb(items), None
    e, ex = emb(torch.cat([items, extra])).split([items.numel(), extra.numel()])
    return e, ex


class NumpyDropout(nn.Module):
    """Inverted dropout whose masks come from a numpy generator (``rng``, set by ``fit``).

    Same maths as :class:`torch.nn.Dropout`, cheaper than torch's CPU Bernoulli sampler, and a
    seeded generator keeps fits reproducible without touching torch's global RNG."""

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


def set_dropout_rng(net: nn.Module, rng: np.random.Generator | None) -> None:
    """Draw the masks of every :class:`NumpyDropout` in ``net`` from ``rng`` (None: no generator;
    dropout in training mode then refuses to run)."""
    for m in net.modules():
        if isinstance(m, NumpyDropout):
            m.rng = rng


class Block(nn.Module):
    """Causal self-attention + point-wise feed-forward, residuals, dropout, layer norms.

    Per-position work (projections, FFN, layer norms, dropout) runs on the PACKED real positions
    (N, D) only; attention runs per group of rows of similar length, each group scattered into its
    own padded (rows, H, width, Dh) buffer (see :class:`Layout`). With T = 50 and sequences of ~7
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
        self.drop = NumpyDropout(dropout)  # FFN hidden layer and output (and, pre-LN, the attention output)
        self.attn_drop = NumpyDropout(dropout)  # attention weights (reference code)

    def forward(self, x: torch.Tensor, layout: Layout, weights: list | None = None) -> torch.Tensor:
        N, D = x.shape  # x: (N, D) real positions of the length-sorted rows, row-major
        H = self.h
        n, kv_in, res = self._attention_inputs(x)
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
        return self._residual_and_ffn(res, a)

    def _attention_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(normed, kv_input, residual)`` of ``x`` (..., D): queries always read LN(x); keys and
        values read LN(x) pre-LN and x in the paper's placement, whose residual is LN(x)."""
        n = self.ln_attn(x)
        kv_in, res = (n, x) if self.pre_ln else (x, n)
        return n, kv_in, res

    def _residual_and_ffn(self, res: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The attention output ``a`` (..., D) added to its residual, then the feed-forward
        sub-layer with its own residual."""
        x = res + (self.drop(a) if self.pre_ln else a)  # the reference drops attention WEIGHTS only
        n = self.ln_ffn(x)
        res = x if self.pre_ln else n
        return res + self.drop(self.ff2(self.drop(F.relu(self.ff1(n)))))

    def forward_dense(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Inference on a (B, t, D) left-padded batch with a (B, 1, t, t) attention mask: the same
        maths as :meth:`forward` (whose packing pays off in training, not for a few live
        sessions); outputs at padding slots are meaningless and never read. Eval mode only (no
        attention-weight dropout)."""
        B, t, D = x.shape
        H = self.h
        n, kv_in, res = self._attention_inputs(x)
        q = self.q(n).view(B, t, H, D // H).transpose(1, 2)  # (B, H, t, Dh)
        k, v = self.kv(kv_in).view(B, t, 2, H, D // H).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) * (D // H) ** -0.5
        a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1) @ v  # (B, H, t, Dh)
        return self._residual_and_ffn(res, a.transpose(1, 2).reshape(B, t, D))


def causal_mask(real: np.ndarray) -> np.ndarray:
    """(R, w, w) attention mask of left-padded rows whose real clicks are ``real`` (R, w): query i
    may read key j <= i when j is a real click; a padding query reads itself only (so its softmax
    is defined; its output is never used)."""
    w = real.shape[1]
    return np.tril(np.ones((w, w), dtype=bool)) & (real[:, None, :] | np.eye(w, dtype=bool))


@dataclass
class Group:
    """Rows of similar length attended together in a (rows, width) left-padded buffer."""

    rows: int
    width: int
    start: int  # the group's real positions are packed positions start..stop-1
    stop: int
    idx: torch.Tensor  # (stop - start,) flat slots of those positions in the (rows * width) buffer
    mask: torch.Tensor  # (rows, 1, width, width) True = query may attend to key


@dataclass
class Layout:
    """A batch sorted by length and cut into groups of rows whose lengths fall in the same
    power-of-two bucket (<= 4, 5-8, 9-16, ...), so attention is computed at each group's width."""

    groups: list[Group]

    @classmethod
    def build(cls, kept: np.ndarray, t: int, device: torch.device) -> Layout:
        """``kept``: (B,) real clicks per row, rows already sorted by ``kept`` ascending."""
        bucket = np.minimum(np.maximum(4, 2 ** np.ceil(np.log2(np.maximum(kept, 1)))), t).astype(np.int64)
        cuts = np.flatnonzero(np.diff(bucket)) + 1
        groups, pos0 = [], np.concatenate([[0], np.cumsum(kept)])
        for r0, r1 in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [kept.size]])):
            k, w = kept[r0:r1], int(bucket[r0])
            real = np.arange(w)[None, :] >= (w - k)[:, None]  # (R, w)
            mask = causal_mask(real)  # (R, w, w)
            groups.append(Group(
                rows=int(r1 - r0), width=w, start=int(pos0[r0]), stop=int(pos0[r1]),
                idx=torch.from_numpy(np.flatnonzero(real)).to(device),
                mask=torch.from_numpy(mask[:, None]).to(device),  # a padding query sees itself only
            ))
        return cls(groups)


class SASRecNet(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        d, self.T = cfg.hidden, cfg.max_len
        self.scale = math.sqrt(d) if cfg.scale_emb else 1.0
        self.start_positions = cfg.positions == "start"
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)  # row 0 = padding
        self.pos_emb = nn.Embedding(cfg.max_len + 1, d, padding_idx=0)  # positions 1..T, 0 = padding
        self.emb_drop = NumpyDropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout, cfg.pre_ln) for _ in range(cfg.n_blocks))
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
        pos = self._positions(real)  # (B, t)
        layout = Layout.build(kept[order], t, dev)
        items = torch.from_numpy(xs[real]).to(dev)
        e, extra_e = embed_with(self.item_emb, items, extra)
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
        real = x > 0  # (B, t)
        pos = torch.from_numpy(np.array(self._positions(real), dtype=np.int64)).to(dev)  # a writable copy of a broadcast view
        h = self.item_emb(torch.from_numpy(x).to(dev)) * self.scale + self.pos_emb(pos)  # (B, t, D)
        mask = torch.from_numpy(causal_mask(real)[:, None]).to(dev)  # (B, 1, t, t)
        for blk in self.blocks:
            h = blk.forward_dense(h, mask)
        return self.ln_out(h[:, -1])

    def _positions(self, real: np.ndarray) -> np.ndarray:
        """(B, t) position indices of a left-padded batch whose real clicks are ``real`` (B, t):
        1.. from the oldest kept click (``positions="start"``), or the padded slot index of a
        T-wide window (``"end"``, the paper's). Padding slots' indices are never read."""
        B, t = real.shape
        if self.start_positions:
            return np.cumsum(real, axis=1)
        return np.broadcast_to(np.arange(self.T - t + 1, self.T + 1), (B, t))

    @staticmethod
    def _unsort(h: torch.Tensor, order: np.ndarray, kept: np.ndarray) -> torch.Tensor:
        B, dev = order.size, h.device
        # back to the caller's row order: packed position of (row, j) in the sorted layout
        start_sorted = np.concatenate([[0], np.cumsum(kept[order])])[:-1]
        first = np.empty(B, dtype=np.int64)
        first[order] = start_sorted
        back = np.repeat(first, kept) + np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
        return h.index_select(0, torch.from_numpy(back).to(dev))
