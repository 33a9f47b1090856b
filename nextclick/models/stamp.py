"""STAMP: short-term attention/memory priority (Liu, Zeng, Mokhosi and Zhang, "STAMP: Short-Term
Attention/Memory Priority Model for Session-based Recommendation", KDD 2018; the authors' code:
github.com/uestcnlp/STAMP, not used here).

For the prefix x_1 .. x_t of a session (item embeddings, d = ``hidden``):

* the session's general interest m_s = mean(x_1 .. x_t) and its last click m_t = x_t;
* attention over the clicks: ``a_i = w_0 . sigmoid(W_1 x_i + W_2 x_t + W_3 m_s + b_a)``, not
  normalised, and the attended memory ``m_a = sum_i a_i x_i`` (Eq. 7-8);
* two one-layer MLPs: ``h_s = tanh(W_s m_a + b_s)``, ``h_t = tanh(W_t m_t + b_t)``;
* the score of item j: the trilinear product ``<h_s, h_t, x_j> = (h_s * h_t) . x_j``, the
  query ``h_s * h_t`` against the item table, trained with softmax cross-entropy.

Training and serving are SASRec's (:mod:`nextclick.models.sasrec`): left-padded windows of the
last ``max_len`` clicks, a prediction at every position of a window in one pass (the attention
at position t reads clicks 1..t only, so every prefix of a session is one training example, as
the paper's augmentation makes it), the same losses, early stopping, hold-out and torchrun
data parallelism. The class differs from SASRec only in the network. The attention is computed on
the (prefix, click) pairs only (:mod:`nextclick.models.prefix_attention`), not on a padded
(batch x window x window) grid.

Deviations from the paper (Sec. 4) and the authors' code:

============================  ===========================================  =====================
what                          paper / authors' code                        here
============================  ===========================================  =====================
score                         sigmoid of the trilinear product, then       the trilinear product
                              softmax (paper Eq. 9-10)                     as the softmax logit
clicks attended               the whole session                            the last ``max_len`` (20)
initialisation                N(0, 0.002) weights, N(0, 0.05) embeddings   N(0, 0.05) for both
embedding dropout             none                                         ``dropout`` (0: none)
optimiser                     Adam, lr 0.005, batch 512                    Adam (beta2 0.98), lr 0.005, batch 512
============================  ===========================================  =====================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nextclick.models.prefix_attention import PrefixPairs
from nextclick.models.sasrec.config import SequenceConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import NumpyDropout, embed_with


@dataclass
class STAMPConfig(SequenceConfig):
    max_len: int = 20
    hidden: int = 100
    dropout: float = 0.0
    lr: float = 0.005
    batch_size: int = 512
    n_epochs: int = 30


class STAMPNet(nn.Module):
    """STAMP's network over left-padded batches, with :class:`SASRecNet`'s interface."""

    label = "stamp"  # the model's name in the trainer's messages

    def __init__(self, n_items: int, cfg: STAMPConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.drop = NumpyDropout(cfg.dropout)
        self.w1 = nn.Linear(d, d, bias=False)
        self.w2 = nn.Linear(d, d, bias=False)
        self.w3 = nn.Linear(d, d)  # its bias is b_a
        self.w0 = nn.Linear(d, 1, bias=False)
        self.mlp_s = nn.Linear(d, d)
        self.mlp_t = nn.Linear(d, d)

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, 0.0, 0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def _packed(self, x: np.ndarray, extra: torch.Tensor | None) -> tuple[torch.Tensor, np.ndarray, torch.Tensor | None]:
        """The embeddings (N, d) of the real clicks of left-padded ``x`` (B, t), row by row in
        position order, each row's click count (B,), and the embeddings of ``extra`` (or None)."""
        dev = self.item_emb.weight.device
        real = x > 0
        e, ex = embed_with(self.item_emb, torch.from_numpy(np.ascontiguousarray(x[real])).to(dev), extra)
        return e, real.sum(1), ex

    def _query(self, e: torch.Tensor, pairs: PrefixPairs, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries ``h_s * h_t`` (Q, d) and the attention (P,) of ``pairs`` over the packed
        clicks ``e`` (N, d), where ``last`` (Q, d) is each query's last click x_t."""
        count = torch.bincount(pairs.query, minlength=pairs.n_queries).clamp(min=1).to(e.dtype)
        mean = pairs.pool(torch.ones_like(pairs.query, dtype=e.dtype), e) / count[:, None]  # m_s
        a = pairs.weights(self.w1(e), self.w2(last) + self.w3(mean), self.w0)
        m_a = pairs.pool(a, e)
        return torch.tanh(self.mlp_s(m_a)) * torch.tanh(self.mlp_t(last)), a

    def attention(self, x: np.ndarray) -> torch.Tensor:
        """(B, t, t): the attention of each position of left-padded ``x`` (B, t) over the clicks
        (0 on padding and on later clicks)."""
        e, n, _ = self._packed(x, None)
        pairs = PrefixPairs.every_prefix(n, e.device)
        return pairs.dense(self._query(e, pairs, e)[1], n, x.shape[1])

    def forward(self, x: np.ndarray, weights: list | None = None, extra: torch.Tensor | None = None) -> Any:
        """(B, t) left-padded item indices -> (N, d) queries of the N real positions, row by row
        in position order (each from the clicks at or before it); with ``extra``, also the
        embeddings of those item indices (as :meth:`SASRecNet.forward`)."""
        e, n, ex = self._packed(x, extra)
        e = self.drop(e)
        h = self._query(e, PrefixPairs.every_prefix(n, e.device), e)[0]
        return h if extra is None else (h, ex)

    def forward_last(self, x: np.ndarray) -> torch.Tensor:
        """Inference: (B, d) queries at the last slot of each left-padded row."""
        e, n, _ = self._packed(x, None)
        last = e.new_zeros(len(n), e.shape[-1])  # x_t; 0 for a row with no click
        has = n > 0
        last[torch.from_numpy(has).to(e.device)] = e[torch.from_numpy(np.cumsum(n)[has] - 1).to(e.device)]
        return self._query(e, PrefixPairs.last(n, e.device), last)[0]


class STAMP(SASRec):
    """STAMP; see the module docstring."""

    name = "stamp"
    Config = STAMPConfig
    presets: dict[str, dict[str, Any]] = {
        # the best of 12 TPE trials on rsc15-100k train_tr -> train_valid (MRR@20; the search of
        # benchmarks/tune_rsc15.sh, early stopping with patience 3 on the 10% hold-out), never on test
        "tuned_rsc15": dict(dropout=0.5, lr=0.008803650445861911, l2=1e-6, batch_size=128, patience=3),
    }
    renamed_presets: dict[str, str] = {}
    recommended: dict[str, str] = {"sessions like rsc15": "tuned_rsc15"}

    def _make_net(self) -> nn.Module:
        return STAMPNet(self.n_items_, self.config)
