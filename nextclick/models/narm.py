"""NARM: neural attentive session-based recommendation (Li, Ren, Chen, Ren, Lian and Ma, "Neural
Attentive Session-based Recommendation", CIKM 2017; the authors' code:
github.com/lijingsdu/sessionRec_NARM, not used here).

For the prefix of clicks 1..t of a session, a GRU over the item embeddings gives h_1 .. h_t:

* the global encoder's summary is the last state, ``c_g = h_t``;
* the local encoder attends over the states (the authors' code reads the same GRU for both):
  ``a_tj = v . sigmoid(A_1 h_t + A_2 h_j)``, not normalised, and ``c_l = sum_j a_tj h_j``;
* the bilinear decoder scores item i as ``e_i . (B [c_g; c_l])``: the query ``B [c_g; c_l]``
  against the item table, trained with softmax cross-entropy.

Training and serving are SASRec's (:mod:`nextclick.models.sasrec`, as for STAMP): every position
of a window of the last ``max_len`` clicks predicts its next click in one pass (the GRU and the
attention at position t read clicks 1..t only), with SASRec's losses, early stopping, hold-out
and torchrun data parallelism. The GRU runs over each row's real clicks only (packed), so left
padding changes nothing, and the attention on the (prefix, state) pairs only
(:mod:`nextclick.models.prefix_attention`).

Deviations from the paper (Sec. 4.3) and the authors' code:

============================  ===========================================  =====================
what                          paper / authors' code                        here
============================  ===========================================  =====================
clicks read                   the whole session                            the last ``max_len`` (20)
initialisation                (code) orthogonal GRU, N(0, 0.01)-like       PyTorch's GRU default,
                              uniform for the rest                         Xavier for the rest
optimiser                     Adam, lr 0.001, batch 512                    Adam (beta2 0.98), lr 0.005, batch 512
============================  ===========================================  =====================

The learning rate was chosen on rsc15-100k's train_tr -> train_valid split among 0.001, 0.003 and
0.005, with early stopping on validation Recall@20 (patience 3). At the paper's 0.001 the model sits
on a plateau at popularity level for its first epochs, long enough for early stopping to end the
fit there (best validation Recall@20 0.094); 0.003 and 0.005 climb from their third epoch on, and
0.005 scored best (Recall@20 0.645, MRR@20 0.345, against 0.641 and 0.334 at 0.003)
(``benchmarks/sasrec_amazon.py --dataset rsc15 --model narm --eval-every 1 --patience 3 --param lr=...``).

The dropouts are the authors' (0.25 on the embeddings, 0.5 on [c_g; c_l]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nextclick.errors import NextclickError
from nextclick.models.prefix_attention import PrefixPairs
from nextclick.models.sasrec.config import SequenceConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import NumpyDropout, embed_with


@dataclass
class NARMConfig(SequenceConfig):
    max_len: int = 20
    hidden: int = 50  # item embedding size
    gru_hidden: int = 100  # the GRU's state size
    dropout: float = 0.25  # on the item embeddings
    dropout_context: float = 0.5  # on [c_g; c_l]
    lr: float = 0.005
    batch_size: int = 512
    n_epochs: int = 30


def right_align(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A left-padded (B, t) batch with each row's real clicks moved to its start, and their counts."""
    real = x > 0
    n = real.sum(1)
    B, t = x.shape
    out = np.zeros_like(x)
    rows = np.repeat(np.arange(B), n)
    out[rows, np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)] = x[real]
    return out, n


class NARMNet(nn.Module):
    """NARM's network over left-padded batches, with :class:`SASRecNet`'s interface."""

    label = "narm"  # the model's name in the trainer's messages

    def __init__(self, n_items: int, cfg: NARMConfig) -> None:
        super().__init__()
        d, H = cfg.hidden, cfg.gru_hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.emb_drop = NumpyDropout(cfg.dropout)
        self.gru = nn.GRU(d, H, batch_first=True)
        self.a1 = nn.Linear(H, H, bias=False)
        self.a2 = nn.Linear(H, H, bias=False)
        self.v = nn.Linear(H, 1, bias=False)
        self.ct_drop = NumpyDropout(cfg.dropout_context)
        self.b = nn.Linear(2 * H, d, bias=False)

    def reset_parameters(self) -> None:
        self.gru.reset_parameters()
        for name, p in self.named_parameters():
            if not name.startswith("gru.") and p.dim() > 1:
                nn.init.xavier_uniform_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def states(self, x: np.ndarray, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray, Any]:
        """The GRU's states (B, t, H) over each row's real clicks, right-aligned (row b's first
        ``n[b]`` slots), the counts ``n`` (B,), and the embeddings of ``extra`` (or None)."""
        dev = self.item_emb.weight.device
        xr, n = right_align(x)
        e, ex = embed_with(self.item_emb, torch.from_numpy(xr.reshape(-1)).to(dev), extra)
        e = self.emb_drop(e.view(*x.shape, -1))
        packed = pack_padded_sequence(e, torch.from_numpy(np.maximum(n, 1)), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])
        return h, n, ex

    def _query(self, h: torch.Tensor, pairs: PrefixPairs, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries ``B [c_g; c_l]`` (Q, d) and the attention (P,) of ``pairs`` over the
        packed states ``h`` (N, H), where ``last`` (Q, H) is each query's state c_g = h_t."""
        a = pairs.weights(self.a2(h), self.a1(last), self.v)
        c_l = pairs.pool(a, h)
        return self.b(self.ct_drop(torch.cat([last, c_l], dim=-1))), a

    @staticmethod
    def _packed(h: torch.Tensor, n: np.ndarray) -> torch.Tensor:
        """The (N, H) states of the real clicks of right-aligned ``h`` (B, t, H), row by row."""
        keep = np.arange(h.shape[1])[None, :] < n[:, None]
        return h[torch.from_numpy(keep).to(h.device)]

    def attention(self, x: np.ndarray) -> torch.Tensor:
        """(B, t, t): the attention of each position of left-padded ``x`` (B, t) over the states
        of the clicks (0 on padding and on later clicks)."""
        h, n, _ = self.states(x)
        hp = self._packed(h, n)
        pairs = PrefixPairs.every_prefix(n, h.device)
        return pairs.dense(self._query(hp, pairs, hp)[1], n, x.shape[1])

    def forward(self, x: np.ndarray, weights: list | None = None, extra: torch.Tensor | None = None) -> Any:
        """(B, t) left-padded item indices -> (N, d) queries of the N real positions, row by row
        in position order (each from the clicks at or before it); with ``extra``, also the
        embeddings of those item indices (as :meth:`SASRecNet.forward`)."""
        h, n, ex = self.states(x, extra)
        hp = self._packed(h, n)
        out = self._query(hp, PrefixPairs.every_prefix(n, h.device), hp)[0]
        return out if extra is None else (out, ex)

    def forward_last(self, x: np.ndarray) -> torch.Tensor:
        """Inference: (B, d) queries after the last click of each left-padded row."""
        h, n, _ = self.states(x)
        last = h[torch.arange(len(n), device=h.device), torch.from_numpy(np.maximum(n - 1, 0)).to(h.device)]
        return self._query(self._packed(h, n), PrefixPairs.last(n, h.device), last)[0]


class NARM(SASRec):
    """NARM; see the module docstring."""

    name = "narm"
    Config = NARMConfig
    presets: dict[str, dict[str, Any]] = {}
    renamed_presets: dict[str, str] = {}
    recommended: dict[str, str] = {}

    def _make_net(self) -> nn.Module:
        c = self.config
        if c.gru_hidden < 1:
            raise NextclickError(f"narm: gru_hidden must be >= 1, got {c.gru_hidden}")
        if not 0.0 <= c.dropout_context < 1.0:
            raise NextclickError(f"narm: dropout_context must be in [0, 1), got {c.dropout_context}")
        return NARMNet(self.n_items_, c)
