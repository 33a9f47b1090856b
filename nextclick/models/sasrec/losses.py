"""SASRec's losses, each averaged over the real (non-padding) positions of a batch. See
:mod:`nextclick.models.sasrec.model` for which paper each comes from; the negatives they score are
drawn by :mod:`nextclick.data.sampling`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def bce_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Paper loss. ``pos`` (N,) target logits, ``neg`` (N,) one negative logit per position."""
    return (F.softplus(-pos) + F.softplus(neg)).mean()


class SoftmaxWorkspace:
    """A reused buffer for the (N, n_items) softmax of :func:`ce_loss` during training, so a large
    buffer is not allocated (and page-faulted) afresh every batch. Buffers larger than
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
    products, otherwise each block is recomputed. Same value and gradients as ``F.cross_entropy``
    (tested). Not differentiable twice."""

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
                    hit: torch.Tensor, top_k: int = 0) -> torch.Tensor:
    """Sampled softmax with logQ correction. ``pos`` (N,), ``neg`` (N, K) logits; ``log_q_*`` the log
    sampling probabilities of the target (N,) and of the negatives ((K,) or (N, K)); ``hit`` (N, K)
    True where a negative is the target itself (masked out).

    ``top_k`` > 0 (top-k negative sampling, TRON): of each row's K corrected negative logits
    ``neg - log_q_neg`` (hits masked), only the ``top_k`` largest enter the softmax, i.e. the
    largest terms of the sampled partition sum; the others get no gradient. ``top_k >= K`` (or 0)
    is the plain loss. A row with fewer than ``top_k`` unmasked negatives keeps them all."""
    neg_c = (neg - log_q_neg).masked_fill(hit, float("-inf"))
    if 0 < top_k < neg_c.shape[1]:
        neg_c = neg_c.topk(top_k, dim=1, sorted=False).values  # (N, top_k)
    logits = torch.cat([(pos - log_q_pos)[:, None], neg_c], dim=1)
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
