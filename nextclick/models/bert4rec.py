"""BERT4Rec: sequential recommendation with a bidirectional Transformer trained on the Cloze task
(Sun, Liu, Wu, Pei, Lin, Ou and Jiang, "BERT4Rec: Sequential Recommendation with Bidirectional
Encoder Representations from Transformer", CIKM 2019; the authors' code: github.com/FeiSun/BERT4Rec,
not used here).

A window of the last T = ``max_len`` clicks v_1 .. v_t (t <= T) is embedded as
``h^0_i = Dropout(LN(E v_i + P_i))`` (item table E, learned positions P_i, 1 = the oldest kept
click). ``n_blocks`` Transformer layers follow, each (post-LN, as BERT)
``x = LN(x + Dropout(MH(x)))``, ``x = LN(x + Dropout(W_2 GELU(W_1 x + b_1) + b_2))`` with a 4d-wide
feed-forward layer; multi-head attention is BIDIRECTIONAL: every click reads every real click of
the window, before or after it, and never the padding. The output at position i is
``P(v) = softmax(LN(GELU(h^L_i W^P + b^P)) E^T + b^O)``: a projection, the item table (tied with
the input) and an output bias per item (Eq. 7; the layer norm is the authors' code's).

Training (the Cloze task, Sec. 3.6): in each training window, ``max(1, round(rho t))`` of its real
clicks (rho = ``mask_prob``), chosen uniformly, are replaced by a [mask] token (its own learned
embedding; the token id is ``n_items + 1``), and the loss is the softmax cross-entropy of the
original items at the masked positions only, over the whole catalogue. A share ``mask_last`` of
the windows masks only its last click instead (the authors add such samples, which match the
next-click task). Masks are drawn afresh every epoch.

Inference: a [mask] is appended after the session's clicks (the oldest dropped to keep T slots)
and its output is the prediction. Attention being bidirectional, the output at position i sees
later clicks, so evaluation scores each prefix of a session in its own forward pass (prefixes
batched), never one pass for all positions as SASRec does.

Training and serving are SASRec's (:mod:`nextclick.models.sasrec`): the same trainer (losses,
early stopping, hold-out), artifacts and live sessions. The trainer turns its next-click batch into
the Cloze batch through the network's ``loss_batch`` hook; the network's ``forward`` returns the
outputs at the [mask] slots, which is where the targets are. To keep SASRec's scoring against the
item table, each row of ``item_emb`` is ``[E_i, b^O_i]`` (d + 1 wide): the input reads E_i, the
output is the query ``[q, 1]``, so ``query . row_i = q . E_i + b^O_i``.

Deviations from the paper (its implementation details, Sec. 4) and the authors' code:

============================  ===========================================  =========================
what                          paper / authors' code                        here
============================  ===========================================  =========================
window                        N = 200 (ML), 50 (Beauty, Steam); (code)     T = ``max_len`` = 20 (the
                              long sequences cut by a sliding window       last 20 clicks of a session)
masked share rho              0.2 (ML), 0.6 (Beauty), 0.4 (Steam)          0.2 (``mask_prob``)
replacement of chosen items   [mask] (paper); (code) [mask] with its       always [mask]
                              ``mask_prob=1.0`` (BERT's 80/10/10 off; the
                              code's rho is ``masked_lm_prob``)
masks per sequence            (code) 10 fixed copies (``dupe_factor``)     a new mask every epoch
last-item-only samples        (code) one per sequence besides the 10       ``mask_last`` = 0.1 of the
                                                                           windows, in place of Cloze
optimiser                     Adam, lr 1e-4, beta2 0.999, L2 weight        Adam (beta2 0.98), lr 0.001,
                              decay 0.01, linear lr decay, gradient        no weight decay, lr decay,
                              clipping at 5; (code) 100 warm-up steps      warm-up or clipping
                                                                           (SASRec's trainer)
training length               (code) 400,000 steps of batch 256            early stopping on a hold-out
                                                                           (SASRec's), batch 256
layer norms                   Eq. 7 has none in the output layer; (code)   as the code
                              LN on the embeddings and after W^P's GELU
padding                       (code) right-padded windows                  left-padded (positions count
                                                                           from the oldest click: same)
============================  ===========================================  =========================

The network is the paper's: d = 64, 2 blocks, 2 heads, dropout 0.1, GELU, a 4d feed-forward
layer, truncated-normal initialisation (std 0.02, cut at 2 std, as the code; the paper says
"in the range [-0.02, 0.02]").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclick.data.batching import trim_padding
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.sasrec.config import SequenceConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import NumpyDropout, embed_with, eval_mode


@dataclass
class BERT4RecConfig(SequenceConfig):
    max_len: int = 20  # T: slots of a window, the [mask] slot included at inference
    hidden: int = 64  # d
    n_blocks: int = 2
    n_heads: int = 2
    dropout: float = 0.1  # embeddings, attention weights, sub-layer outputs
    mask_prob: float = 0.2  # rho: share of a training window's clicks replaced by [mask]
    mask_last: float = 0.1  # share of training windows that mask only their last click
    lr: float = 0.001
    batch_size: int = 256
    n_epochs: int = 100


def cloze_mask(seq: np.ndarray, rng: np.random.Generator, mask_prob: float, mask_last: float,
               mask_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The Cloze task of left-padded windows ``seq`` (B, t): ``(inputs, targets)``, both (B, t).

    Row b masks ``max(1, round(mask_prob * n_b))`` of its n_b real clicks, drawn uniformly without
    replacement, or (with probability ``mask_last``) its last click only. ``inputs`` is ``seq``
    with ``mask_id`` at the masked slots; ``targets`` holds the original item there and 0
    elsewhere. Draws, in this order: ``rng.random(B)`` (last-only rows), ``rng.random((B, t))``
    (the order in which a row's clicks are picked)."""
    B, t = seq.shape
    real = seq > 0
    n = real.sum(1)
    k = np.maximum(1, np.floor(n * mask_prob + 0.5)).astype(np.int64)  # (B,) halves round up (the authors' Python 2 round)
    last_only = rng.random(B) < mask_last
    keys = np.where(real, rng.random((B, t)), 2.0)  # padding sorts after every real slot
    rank = keys.argsort(1, kind="stable").argsort(1, kind="stable")  # (B, t) pick order of each slot
    masked = rank < k[:, None]
    masked[last_only] = np.arange(t) == t - 1  # left-padded: the last column is the last click
    masked &= real
    return np.where(masked, mask_id, seq), np.where(masked, seq, 0)


def length_groups(x: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The rows of a left-padded batch ``x`` (B, t) grouped by their number of real slots in
    power-of-two buckets (<= 4, 5-8, 9-16, ...): ``(rows, width)`` per group, so each group runs at
    its own width (padding never changes an output; sessions are mostly much shorter than T)."""
    kept = (x > 0).sum(1)
    width = np.minimum(np.maximum(4, 2 ** np.ceil(np.log2(np.maximum(kept, 1)))), x.shape[1]).astype(np.int64)
    return [(np.flatnonzero(width == w), int(w)) for w in np.unique(width)]


class Layer(nn.Module):
    """One Transformer layer (BERT's, post-LN) with bidirectional attention over a (B, t, d) batch."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.h = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ln_attn = nn.LayerNorm(d, eps=1e-12)
        self.ff1 = nn.Linear(d, 4 * d)
        self.ff2 = nn.Linear(4 * d, d)
        self.ln_ffn = nn.LayerNorm(d, eps=1e-12)
        self.drop = NumpyDropout(dropout)  # sub-layer outputs
        self.attn_drop = NumpyDropout(dropout)  # attention weights

    def forward(self, x: torch.Tensor, keys: torch.Tensor, weights: list | None = None) -> torch.Tensor:
        B, t, D = x.shape  # keys: (B, 1, 1, t) True at the real slots every query may read
        H = self.h
        q, k, v = self.qkv(x).view(B, t, 3, H, D // H).permute(2, 0, 3, 1, 4)  # (B, H, t, Dh) each
        s = (q @ k.transpose(-1, -2)) * (D // H) ** -0.5  # (B, H, t, t)
        p = torch.softmax(s.masked_fill(~keys, float("-inf")), dim=-1)
        if weights is not None:
            weights.append(p)
        a = (self.attn_drop(p) @ v).transpose(1, 2).reshape(B, t, D)
        x = self.ln_attn(x + self.drop(self.out(a)))
        return self.ln_ffn(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))


class BERT4RecNet(nn.Module):
    """BERT4Rec's network over left-padded windows, with :class:`SASRecNet`'s interface; ``forward``
    reads the outputs at the [mask] slots (id ``n_items + 1``). ``item_emb`` rows are ``[E_i, b_i]``."""

    label = "bert4rec"  # the model's name in the trainer's messages

    def __init__(self, n_items: int, cfg: BERT4RecConfig) -> None:
        super().__init__()
        d = self.d = cfg.hidden
        self.T, self.mask_id, self.cfg = cfg.max_len, n_items + 1, cfg
        self.item_emb = nn.Embedding(n_items + 1, d + 1, padding_idx=0)  # [E | b^O]; row 0 = padding
        self.mask_emb = nn.Parameter(torch.zeros(d))  # the [mask] token's embedding
        self.pos_emb = nn.Embedding(cfg.max_len + 1, d, padding_idx=0)  # 1..T from the oldest click
        self.ln_emb = nn.LayerNorm(d, eps=1e-12)
        self.emb_drop = NumpyDropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.proj = nn.Linear(d, d)  # W^P, b^P
        self.ln_out = nn.LayerNorm(d, eps=1e-12)

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.startswith("ln") or ".ln" in name:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
        with torch.no_grad():
            self.item_emb.weight[:, -1].zero_()  # the output bias b^O
            self.item_emb.weight[0].zero_()
            self.pos_emb.weight[0].zero_()

    def loss_batch(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The trainer's hook: its next-click batch (inputs ``x``, targets ``y``, (B, t) aligned)
        -> the Cloze batch of the same sequences' windows of their last T clicks (the last target
        appended to ``x``), see :func:`cloze_mask`."""
        seq = np.concatenate([x, y[:, -1:]], axis=1)  # (B, t + 1): each row's clicks, the last one included
        seq = trim_padding(seq, min(seq.shape[1], self.T))
        return cloze_mask(seq, rng, self.cfg.mask_prob, self.cfg.mask_last, self.mask_id)

    def embed(self, x: np.ndarray, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, t) left-padded clicks and [mask] tokens -> (B, t, d) item (or [mask]) plus position
        embeddings, and the item-table rows of ``extra`` (or None) from the same gather."""
        dev = self.item_emb.weight.device
        B, t = x.shape
        real, is_mask = x > 0, x == self.mask_id
        items = torch.from_numpy(np.where(is_mask, 0, x).reshape(-1)).to(dev)
        e, ex = embed_with(self.item_emb, items, extra)
        e = torch.where(torch.from_numpy(is_mask).to(dev)[..., None], self.mask_emb, e[:, : self.d].view(B, t, -1))
        pos = torch.from_numpy(np.cumsum(real, axis=1) * real).to(dev)  # (B, t): 1.. from the oldest slot, 0 = padding
        return e + self.pos_emb(pos), ex

    def encode(self, x: np.ndarray, weights: list | None = None, e: torch.Tensor | None = None) -> torch.Tensor:
        """(B, t) left-padded clicks and [mask] tokens -> (B, t, d) last-layer states (padding
        slots' states are never read); ``e``: their :meth:`embed` when already gathered."""
        h = self.embed(x)[0] if e is None else e
        h = self.emb_drop(self.ln_emb(h))
        keys = torch.from_numpy(x[:, None, None, :] > 0).to(h.device)  # (B, 1, 1, t)
        for layer in self.layers:
            h = layer(h, keys, weights)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) states -> (..., d + 1) queries ``[LN(GELU(h W^P + b^P)), 1]`` against ``item_emb``."""
        q = self.ln_out(F.gelu(self.proj(h)))
        return torch.cat([q, q.new_ones(*q.shape[:-1], 1)], dim=-1)

    def forward(self, x: np.ndarray, weights: list | None = None, extra: torch.Tensor | None = None) -> Any:
        """(B, t) left-padded clicks with [mask] tokens -> (M, d + 1) queries at the M [mask] slots,
        row by row in position order; with ``extra``, also the item-table rows of those indices
        (as :meth:`SASRecNet.forward`). Rows run in groups of similar length (:func:`length_groups`)."""
        e, ex = self.embed(x, extra)  # one gather of the item table for every group
        t, dev = x.shape[1], e.device
        outs, rows_of = [], []
        for rows, w in length_groups(x):
            xg = x[rows, t - w :]
            is_mask = xg == self.mask_id
            h = self.encode(xg, weights, e[torch.from_numpy(rows).to(dev), t - w :])  # (rows, w, d)
            outs.append(self.head(h[torch.from_numpy(is_mask).to(dev)]))  # (m_g, d + 1), row-major
            rows_of.append(np.repeat(rows, is_mask.sum(1)))
        order = np.argsort(np.concatenate(rows_of), kind="stable")  # back to row-major over the batch
        out = outs[0] if len(outs) == 1 else torch.cat(outs)[torch.from_numpy(order).to(dev)]
        return out if extra is None else (out, ex)

    def forward_last(self, x: np.ndarray) -> torch.Tensor:
        """Inference: (B, d + 1) queries at a [mask] appended after each left-padded row of ``x``
        (B, t), keeping its last T - 1 clicks; rows of similar length run together."""
        x = np.ascontiguousarray(x[:, max(0, x.shape[1] - (self.T - 1)) :])
        x = np.concatenate([x, np.full((x.shape[0], 1), self.mask_id, dtype=x.dtype)], axis=1)
        out = self.item_emb.weight.new_empty(x.shape[0], self.d + 1)
        for rows, w in length_groups(x):
            h = self.encode(x[rows, x.shape[1] - w :])
            out[torch.from_numpy(rows).to(out.device)] = self.head(h[:, -1])
        return out


class BERT4Rec(SASRec):
    """BERT4Rec; see the module docstring."""

    name = "bert4rec"
    Config = BERT4RecConfig
    presets: dict[str, dict[str, Any]] = {
        # the paper's ML-1m setting (Sec. 4.4): N = 200, rho = 0.2, lr 1e-4
        "paper": dict(max_len=200, lr=1e-4),
    }
    renamed_presets: dict[str, str] = {}
    recommended: dict[str, str] = {}
    data_parallel = False  # the trainer weighs ranks by next-click positions, not masked ones

    def _make_net(self) -> nn.Module:
        c = self.config
        if c.max_len < 2:
            raise NextclickError(f"bert4rec: max_len must be >= 2 (a click and the [mask] slot), got {c.max_len}")
        if c.hidden % c.n_heads:
            raise NextclickError(f"bert4rec: hidden={c.hidden} must be divisible by n_heads={c.n_heads}")
        if not 0.0 < c.mask_prob <= 1.0:
            raise NextclickError(f"bert4rec: mask_prob must be in (0, 1], got {c.mask_prob}")
        if not 0.0 <= c.mask_last <= 1.0:
            raise NextclickError(f"bert4rec: mask_last must be in [0, 1], got {c.mask_last}")
        return BERT4RecNet(self.n_items_, c)

    def _windows(self, sessions: Sessions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One forward pass per evaluation prefix (bidirectional attention: a pass over a longer
        prefix would let the earlier positions see later clicks)."""
        sess, plen, _ = sessions.prefixes()
        return sess, plen, np.ones_like(sess)

    @torch.no_grad()
    def _hidden(self, x: np.ndarray, last: np.ndarray) -> torch.Tensor:
        """The (B, d + 1) queries after each left-padded prefix of ``x`` (B, T); ``last`` is all
        ones (see :meth:`_windows`)."""
        with eval_mode(self.net_):
            return self.net_.forward_last(trim_padding(x))

    def attention(self, session_items_idx: Sequence[int] | np.ndarray, per_head: bool = False) -> list[np.ndarray]:
        self._check_fitted()
        raise NextclickError("bert4rec: no attention maps (only SASRec's causal maps are offered; BERT4Rec's are bidirectional)")
