"""SR-GNN: session-based recommendation with graph neural networks (Wu, Tang, Zhu, Wang, Xie and
Tan, "Session-based Recommendation with Graph Neural Networks", AAAI 2019; the authors' code:
github.com/CRIPAC-DIG/SR-GNN, not used here).

For the prefix s = [v_s,1 .. v_s,t] of a session (clicks in time order), in the paper's notation:

* the session graph G_s has one node per DISTINCT item of s and one directed edge per pair of
  consecutive clicks (v_s,i-1 -> v_s,i; a repeated pair adds to its edge's weight, a click
  repeated in a row makes a self-loop). ``A_out[i, j]`` = occurrences of the edge i -> j / the
  out-degree of i, ``A_in[i, j]`` = occurrences of j -> i / the in-degree of i (Sec. 3.2; a
  node without out- or in-edges has a zero row);
* ``steps`` gated GNN steps over the node vectors V (n x d, the item embeddings at step 0), Eq. 1-5:
  ``a = [A_out V H_out ; A_in V H_in] + b``, ``z = sigmoid(W_z a + U_z v)``,
  ``r = sigmoid(W_r a + U_r v)``, ``v~ = tanh(W_o a + U_o (r * v))``, ``v' = (1 - z) * v + z * v~``;
* the readout (Eq. 6-7), with v_i the node vector of click i and v_n that of the last click:
  ``alpha_i = q . sigmoid(W_1 v_n + W_2 v_i + c)`` (not normalised), the global embedding
  ``s_g = sum_i alpha_i v_i`` over the clicks (a repeated item counts once per click), the
  local one ``s_l = v_n``, and ``s_h = W_3 [s_l; s_g]``;
* the score of item j is ``s_h . v_j`` against the item table (the input embeddings), trained with
  softmax cross-entropy (Eq. 8-9).

Training and serving are SASRec's (:mod:`nextclick.models.sasrec`, as for NARM and STAMP):
left-padded windows of the last ``max_len`` clicks, every position of a window predicting its next
click in one pass, SASRec's losses, early stopping, hold-out and torchrun data parallelism. As the
graph depends on the prefix, the network builds one graph PER PREFIX (the paper's augmentation,
every prefix one example), batched: :func:`session_graphs` takes a (B, t) batch and the (row,
position) of each of its P prefixes and returns (P, n, n) matrices over each row's n distinct
items (sorted by index), built by one sort and scatter-adds, with no Python loop over sessions.
A node the prefix has not reached yet has no edge and no click, so it would change nothing: the
GNN's maps run on the M (prefix, reached node) pairs only, packed, and only its (P, n, n) x
(P, n, d) products are padded. With ``L`` the clicks of a window and ``u <= L`` its distinct
items, one window costs O(L u^2) for its graphs, and per GNN step O(L n^2 d) for the products
(n: the most distinct items of a row of the batch) and O(m d^2) for the maps, m <= L u the pairs
(about 2.7 per prefix on rsc15-100k), against O(u d^2) for the last prefix alone; serving and
``recommend`` build the last prefix's graph only.

Deviations from the paper (Sec. 3-4) and the authors' code:

====================  ==============================================  =============================
what                  paper / authors' code                           here
====================  ==============================================  =============================
clicks read           the whole session                               the last ``max_len`` (20)
edge weights          paper: occurrences / degree;                    the paper's
                      code: 1 per distinct edge / degree
biases in the GNN     paper: b in ``a`` only; code: in the edge       the paper's
                      maps and in every gate too
GRU update            paper: ``U_o (r * v)``; code: torch's GRU       the paper's
                      form ``r * (U_o v + b)``, z and 1 - z swapped
readout biases        paper: c only; code: in W_1, W_2 and W_3        the paper's
initialisation        paper: N(0, 0.1); code: U(+-1/sqrt(d))          the code's
L2 penalty 1e-5       every parameter                                 the item table only (``l2``)
optimiser             Adam, lr 0.001, x0.1 every 3 epochs             Adam (beta2 0.98), lr 0.001,
                                                                      constant (preset ``paper``:
                                                                      the schedule)
batch                 100 prefixes                                    100 sessions' windows, every
                                                                      prefix of each (~290 prefixes)
epochs                30                                              up to 30, early-stopped on a
                                                                      hold-out (``patience``)
====================  ==============================================  =============================

The other defaults are the authors' (d = 100, one step, L2 1e-5, no dropout: ``dropout`` drops
item embeddings when set). The schedule is tied to an epoch's length: on the paper's yoochoose
1/64 its three epochs at lr 0.001 are ~11,000 Adam steps, on rsc15-100k ~530: too few there,
where it ends well below a constant rate with early stopping on the hold-out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nextclick.data.batching import trim_padding
from nextclick.errors import NextclickError
from nextclick.models.sasrec.config import SequenceConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import NumpyDropout, embed_with, eval_mode


@dataclass
class SRGNNConfig(SequenceConfig):
    max_len: int = 20
    hidden: int = 100  # d: item embedding and node vector size
    steps: int = 1  # gated GNN steps
    dropout: float = 0.0  # on the item embeddings (the authors': none)
    lr: float = 0.001
    batch_size: int = 100
    l2: float = 1e-5
    n_epochs: int = 30
    lr_decay: float = 0.1  # the learning rate times this ...
    lr_decay_every: int = 0  # ... after every this many epochs (0: constant; the paper's: 3, preset "paper")


@dataclass
class SessionGraphs:
    """The session graphs of P prefixes of a (B, t) batch, over each row's n distinct items
    (n = the most in any row; a row with fewer has nodes of item 0, never reached)."""

    items: torch.Tensor  # (B, n) item index of each row's nodes, ascending; 0 = no node
    row: torch.Tensor  # (P,) the row of each prefix
    a_out: torch.Tensor  # (P, n, n) occurrences of edge i -> j / out-degree of i
    a_in: torch.Tensor  # (P, n, n) occurrences of edge j -> i / in-degree of i
    clicks: torch.Tensor  # (P, n) clicks on each node within the prefix (0: not in the prefix's graph)
    last: torch.Tensor  # (P,) the node of each prefix's last click
    # the M (prefix, node) pairs of the nodes each prefix has reached, prefix by prefix: the node
    # vectors are computed for these only
    at: torch.Tensor  # (M,) the prefix
    node: torch.Tensor  # (M,) the node
    last_at: torch.Tensor  # (P,) the pair of each prefix's last click


def session_graphs(x: torch.Tensor, row: torch.Tensor, pos: torch.Tensor) -> SessionGraphs:
    """The graphs of the prefixes ending at slot ``pos[p]`` (a real click) of row ``row[p]`` of
    the LEFT-padded item indices ``x`` (B, t): one sort for each row's distinct items, then
    scatter-adds of the clicks and of the edges at or before each prefix's end."""
    B, t = x.shape
    real = x > 0
    srt, order = x.sort(dim=1)  # (B, t): padding (0) first, then the items ascending
    new = (srt > 0) & (srt != torch.cat([srt.new_zeros(B, 1), srt[:, :-1]], dim=1))  # first of its item
    node_sorted = new.cumsum(1) - 1  # (B, t) node of each sorted slot (-1: padding)
    n = max(int(new.sum(1).max()), 1) if B else 1
    alias = torch.empty_like(x).scatter_(1, order, node_sorted)  # (B, t) node of each slot
    items = x.new_zeros(B, n)
    items[new.nonzero(as_tuple=True)[0], node_sorted[new]] = srt[new]
    slot = torch.arange(t, device=x.device)
    node = alias[row].clamp(min=0)  # (P, t)
    seen = real[row] & (slot[None, :] <= pos[:, None])  # (P, t) clicks of each prefix
    clicks = x.new_zeros(row.numel(), n, dtype=torch.float32).scatter_add_(1, node, seen.float())
    edge = seen[:, 1:] & seen[:, :-1]  # (P, t - 1) the pair (slot j - 1, slot j) in the prefix
    counts = x.new_zeros(row.numel(), n * n, dtype=torch.float32)
    counts.scatter_add_(1, node[:, :-1] * n + node[:, 1:], edge.float())
    counts = counts.view(-1, n, n)  # (P, n, n) occurrences of edge i -> j
    a_out = counts / counts.sum(2, keepdim=True).clamp(min=1.0)
    into = counts.transpose(1, 2)  # (P, n, n) occurrences of edge j -> i
    a_in = into / into.sum(2, keepdim=True).clamp(min=1.0)
    reached = clicks > 0
    at, at_node = reached.nonzero(as_tuple=True)
    pair = reached.view(-1).cumsum(0).view(-1, n) - 1  # (P, n) the pair of each reached node
    last = alias[row, pos]
    last_at = pair[torch.arange(row.numel(), device=x.device), last]
    return SessionGraphs(items, row, a_out, a_in, clicks, last, at, at_node, last_at)


class SRGNNNet(nn.Module):
    """SR-GNN's network over left-padded batches, with :class:`SASRecNet`'s interface."""

    label = "srgnn"  # the model's name in the trainer's messages

    def __init__(self, n_items: int, cfg: SRGNNConfig) -> None:
        super().__init__()
        d = cfg.hidden
        self.steps = cfg.steps
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.drop = NumpyDropout(cfg.dropout)
        self.h_edge = nn.Linear(d, 2 * d, bias=False)  # [H_out | H_in]
        self.b = nn.Parameter(torch.zeros(2 * d))
        self.w_gates = nn.Linear(2 * d, 3 * d, bias=False)  # [W_z; W_r; W_o]
        self.u_zr = nn.Linear(d, 2 * d, bias=False)  # [U_z; U_r]
        self.u_o = nn.Linear(d, d, bias=False)
        self.w1 = nn.Linear(d, d, bias=False)
        self.w2 = nn.Linear(d, d)  # its bias is c
        self.q = nn.Linear(d, 1, bias=False)
        self.w3 = nn.Linear(2 * d, d, bias=False)

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.item_emb.embedding_dim)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def gnn_step(self, v: torch.Tensor, g: SessionGraphs) -> torch.Tensor:
        """One gated GNN step (Eq. 1-5) on the vectors (M, d) of the reached nodes (the nodes a
        prefix has not reached have no edge to them, so they are left out)."""
        d = v.shape[-1]
        hv = v.new_zeros(*g.clicks.shape, 2 * d).index_put((g.at, g.node), self.h_edge(v))  # (P, n, 2d)
        a = torch.cat([g.a_out @ hv[..., :d], g.a_in @ hv[..., d:]], dim=-1)[g.at, g.node] + self.b  # (M, 2d)
        wa, uv = self.w_gates(a), self.u_zr(v)  # (M, 3d), (M, 2d)
        z = torch.sigmoid(wa[:, :d] + uv[:, :d])
        r = torch.sigmoid(wa[:, d : 2 * d] + uv[:, d:])
        cand = torch.tanh(wa[:, 2 * d :] + self.u_o(r * v))
        return (1 - z) * v + z * cand

    def readout(self, v: torch.Tensor, g: SessionGraphs) -> torch.Tensor:
        """``s_h`` (P, d) of each prefix from the vectors (M, d) of its reached nodes (Eq. 6-7):
        the sum over the clicks is a sum over the nodes weighted by their clicks."""
        v_n = v[g.last_at]  # (P, d) s_l
        alpha = self.q(torch.sigmoid(self.w1(v_n)[g.at] + self.w2(v))).squeeze(-1)  # (M,)
        w = alpha * g.clicks[g.at, g.node]
        s_g = v.new_zeros(v_n.shape).index_add(0, g.at, w[:, None] * v)  # (P, d)
        return self.w3(torch.cat([v_n, s_g], dim=-1))

    def queries(self, x: np.ndarray, row: torch.Tensor, pos: torch.Tensor,
                extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``s_h`` (P, d) of the prefixes ending at slots ``pos`` of rows ``row`` of ``x`` (B, t),
        and the embeddings of ``extra`` (or None) from the same gather as the nodes'."""
        dev = self.item_emb.weight.device
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)).to(dev)
        g = session_graphs(xt, row, pos)
        e, ex = embed_with(self.item_emb, g.items.reshape(-1), extra)  # (B * n, d): each row's nodes
        v = self.drop(e)[g.row[g.at] * g.items.shape[1] + g.node]  # (M, d)
        for _ in range(self.steps):
            v = self.gnn_step(v, g)
        return self.readout(v, g), ex

    def forward(self, x: np.ndarray, weights: list | None = None, extra: torch.Tensor | None = None) -> Any:
        """(B, t) left-padded item indices -> (N, d) queries of the N real positions, row by row
        in position order (each from its prefix's graph); with ``extra``, also the embeddings of
        those item indices (as :meth:`SASRecNet.forward`)."""
        row, pos = torch.from_numpy(np.ascontiguousarray(x) > 0).to(self.item_emb.weight.device).nonzero(as_tuple=True)
        h, ex = self.queries(x, row, pos, extra)
        return h if extra is None else (h, ex)

    def forward_last(self, x: np.ndarray) -> torch.Tensor:
        """Inference: (B, d) queries of each left-padded row's whole window (its last slot)."""
        dev = self.item_emb.weight.device
        B, t = x.shape
        return self.queries(x, torch.arange(B, device=dev), torch.full((B,), t - 1, device=dev))[0]


class SRGNN(SASRec):
    """SR-GNN; see the module docstring."""

    name = "srgnn"
    Config = SRGNNConfig
    presets: dict[str, dict[str, Any]] = {
        # the authors' step schedule (see the module docstring for why it is not the default)
        "paper": dict(lr_decay_every=3),
        # the best of 12 TPE trials on rsc15-100k train_tr -> train_valid (MRR@20; the search of
        # benchmarks/tune_rsc15.sh, early stopping with patience 3 on the 10% hold-out), never on test
        "tuned_rsc15": dict(hidden=200, steps=2, lr=0.004683554400273298, l2=1e-6, dropout=0.5, patience=3),
    }
    renamed_presets: dict[str, str] = {}
    recommended: dict[str, str] = {"sessions like rsc15": "tuned_rsc15", "reproducing the paper": "paper"}

    def _make_net(self) -> nn.Module:
        c = self.config
        if c.steps < 1:
            raise NextclickError(f"srgnn: steps must be >= 1, got {c.steps}")
        if not 0.0 < c.lr_decay <= 1.0 or c.lr_decay_every < 0:
            raise NextclickError(f"srgnn: lr_decay must be in (0, 1] and lr_decay_every >= 0, got {c.lr_decay} and "
                                 f"{c.lr_decay_every}")
        return SRGNNNet(self.n_items_, self.config)

    @torch.no_grad()
    def _hidden(self, x: np.ndarray, last: np.ndarray) -> torch.Tensor:
        """As :meth:`SASRec._hidden` (the queries of the last ``last[b]`` positions of each row of
        ``x``, row by row), building the graphs of those prefixes only (recommend: one per row)."""
        with eval_mode(self.net_):
            x = trim_padding(x)  # (B, t)
            t = x.shape[1]
            sel = (x > 0) & (np.arange(t)[None, :] >= (t - last)[:, None])  # (B, t)
            row, pos = torch.from_numpy(sel).to(self.device_).nonzero(as_tuple=True)
            return self.net_.queries(x, row, pos)[0]
