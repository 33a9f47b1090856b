"""GRU4Rec's losses with their gradients, on tensors: cross-entropy with logQ correction and
BPR-max with score regularisation (the compiled row loops of
:mod:`nextclick.models.gru4rec.kernels.losses`, which the training step calls directly)."""

from __future__ import annotations

import numpy as np
import torch

EPS_LOG = 1e-24  # inside the logarithms of both losses, as in the official code


def xe_loss_grad(
    R: torch.Tensor, logq_offset: torch.Tensor | None, scale: float, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over a softmax of each row; row ``i``'s target is column ``i``.

    ``R`` (B, M) scores (not modified); ``logq_offset`` (M,) is subtracted from every row first
    (logQ correction) when given. Returns ``(loss, dL/dR)`` with ``loss = -scale * sum_i
    log(softmax(R)_ii + 1e-24)``; the gradient is written to ``out`` when given.
    """
    from nextclick.models.gru4rec.kernels import losses as kernels  # numba: imported only when used

    if out is None:
        out = torch.empty_like(R)
    Rn = R.numpy()
    lq = logq_offset.numpy().astype(Rn.dtype, copy=False) if logq_offset is not None else np.zeros(0, Rn.dtype)
    loss = kernels.xe_rows(Rn, lq, scale, EPS_LOG, Rn.dtype == np.float32, out.numpy(), 0)
    return torch.tensor(loss, dtype=R.dtype), out


def bpr_max_loss_grad(
    R: torch.Tensor, bpreg: float, elu_param: float, scale: float, out: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPR-max with score regularisation over ELU scores; row ``i``'s target is column ``i``.

    With ``o = elu(R)`` (identity when ``elu_param`` is 0), ``s`` the softmax of row ``i`` over
    its negatives (every column but the target) and ``t`` the target's score, the loss is
    ``scale * sum_i [-log(sum_j s_j sigmoid(t - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2]``.
    Returns ``(loss, dL/dR)`` (written to ``out`` when given). ``R`` may be overwritten.
    ``weights`` (M,): column ``j`` stands for ``weights[j]`` identical negatives (its softmax weight
    is multiplied by it), which equals repeating the column that many times.
    """
    from nextclick.models.gru4rec.kernels import losses as kernels  # numba: imported only when used

    Rn = R.numpy()
    k = kernels.constants(Rn.dtype, float(elu_param), bpreg, scale)
    if out is None:
        out = torch.empty_like(R)
    w = weights.numpy().astype(Rn.dtype, copy=False) if weights is not None else np.zeros(0, Rn.dtype)
    loss = kernels.bpr_max_rows(Rn, w, k, EPS_LOG, Rn.dtype == np.float32, out.numpy(), 0)
    return torch.tensor(loss, dtype=R.dtype), out

