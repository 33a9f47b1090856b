"""SASRec's training: mini-batches of whole sequences, the configured loss on them (negatives from
:mod:`nextclick.data.sampling`), Adam, and early stopping on a validation split.

Random state: one numpy generator seeded with ``config.seed`` draws, in this order, each epoch's
permutation of the training sequences and then, batch by batch, that batch's negatives; dropout
masks come from a second generator seeded with ``[seed, 1]``. Torch's global generator is only
used (by the caller) to initialise the weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nextclick.data.batching import pad_prefixes, trim_padding
from nextclick.data.sampling import PopularitySampler, uniform, uniform_not_in
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.sasrec.config import SASRecConfig, neg_sharing
from nextclick.models.sasrec.losses import SoftmaxWorkspace, bce_loss, ce_loss, gbce_beta, gbce_loss, sampled_ce_loss
from nextclick.models.sasrec.net import SASRecNet

log = logging.getLogger(__name__)


def sequence_batch(train: Sessions, idx: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-click targets of sequences ``idx``: (B, t) each, left-padded and aligned,
    t = the longest kept input in the batch (<= T = ``max_len``)."""
    starts, n_in = train.offsets[idx], train.lengths[idx] - 1
    x, kept = pad_prefixes(train.items, starts, n_in, max_len)  # (B, T) clicks 1..L-1 (last T)
    y, _ = pad_prefixes(train.items, starts + 1, n_in, max_len)  # (B, T) clicks 2..L
    t = int(kept.max())
    return trim_padding(x, t), trim_padding(y, t)


class BatchLoss:
    """``loss(x, y) -> (loss, n_positions)`` of a (B, t) batch for ``config.loss``: draws the
    negatives from ``rng``, runs the network once and scores targets and negatives."""

    def __init__(self, net: SASRecNet, c: SASRecConfig, device: torch.device, n_items: int, train: Sessions,
                 rng: np.random.Generator) -> None:
        self.net, self.c, self.dev, self.V, self.rng = net, c, device, n_items, rng
        self.share = neg_sharing(c)
        self.beta = gbce_beta(c.n_negatives, n_items, c.gbce_t) if c.loss == "gbce" else 1.0
        self.workspace = SoftmaxWorkspace() if c.loss == "ce" else None
        self.pop: PopularitySampler | None = None
        if c.loss == "sampled_ce":
            self.pop = PopularitySampler.from_clicks(train.items, n_items, c.sample_alpha)
            self.log_q = torch.tensor(self.pop.log_q, dtype=torch.float32, device=device)  # (V + 1,)

    def sample(self, shape: tuple[int, ...]) -> np.ndarray:
        """Negatives of ``shape``: popularity**alpha for sampled_ce, uniform otherwise."""
        if self.pop is not None:
            return self.pop.draw(self.rng, shape)
        return uniform(self.rng, self.V, shape)

    def bce_negatives(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, t) uniform negatives; with ``bce_exclude_seen`` none is an item of its row's window
        (inputs and the last target), after at most 20 redraws."""
        if not self.c.bce_exclude_seen:
            return uniform(self.rng, self.V, x.shape)
        seen = np.concatenate([x, y[:, -1:]], axis=1)  # (B, t + 1)
        rows = np.repeat(np.arange(x.shape[0]), seen.shape[1])
        return uniform_not_in(self.rng, self.V, x.shape, rows, seen.ravel(), max_rounds=20)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, int]:
        c, net, dev = self.c, self.net, self.dev
        real = y > 0
        tgt_np = y[real]
        tgt = torch.from_numpy(tgt_np).to(dev)  # (N,) targets of the real positions
        n = tgt.numel()
        if c.loss == "ce":
            h = net(x)  # (N, D)
            return ce_loss(h, net.item_emb.weight, tgt, self.workspace), n
        if c.loss == "bce":
            neg = torch.from_numpy(self.bce_negatives(x, y)[real]).to(dev)  # (N,)
            h, pn = net(x, extra=torch.cat([tgt, neg]))  # (N, D), (2N, D)
            pos_l, neg_l = (h[None] * pn.view(2, n, -1)).sum(-1)
            return bce_loss(pos_l, neg_l), n
        K = c.n_negatives
        if self.share == "batch":
            negs = self.sample((K,))  # (K,) for every position
            h, pn = net(x, extra=torch.cat([tgt, torch.from_numpy(negs).to(dev)]))
            neg_l = h @ pn[n:].T  # (N, K)
            neg_of = negs[None, :]
        else:
            B, t = x.shape
            negs = self.sample((B, K))  # (B, K): one draw per sequence
            h, pn = net(x, extra=torch.cat([tgt, torch.from_numpy(negs.ravel()).to(dev)]))
            flat = torch.from_numpy(np.flatnonzero(real)).to(dev)
            hp = h.new_zeros(B * t, h.shape[1]).index_copy(0, flat, h).view(B, t, -1)  # (B, t, D)
            neg_l = torch.bmm(hp, pn[n:].view(B, K, -1).transpose(1, 2)).view(B * t, K)[flat]  # (N, K)
            neg_of = negs[np.repeat(np.arange(B), real.sum(1))]  # (N, K) negatives of each position
        pos_l = (h * pn[:n]).sum(-1)  # (N,)
        hit = torch.from_numpy(neg_of == tgt_np[:, None]).to(dev)  # a "negative" that is the target
        if c.loss == "sampled_ce":
            log_q_neg = self.log_q[torch.from_numpy(neg_of).to(dev)]
            return sampled_ce_loss(pos_l, neg_l, self.log_q[tgt], log_q_neg, hit), n
        return gbce_loss(pos_l, neg_l, self.beta, hit), n


def run_epoch(net: SASRecNet, c: SASRecConfig, opt: torch.optim.Optimizer, loss_fn: BatchLoss, train: Sessions,
              perm: np.ndarray, epoch: int) -> float:
    """One pass over the sequences ``perm`` in batches of ``batch_size``; the mean loss per
    position. A non-finite loss raises."""
    net.train()
    total, count = 0.0, 0
    n_batches = math.ceil(perm.size / c.batch_size)
    bar: Any = range(n_batches)
    if c.progress:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"sasrec epoch {epoch}", leave=False, unit="batch")
    for b in bar:
        x, y = sequence_batch(train, perm[b * c.batch_size : (b + 1) * c.batch_size], c.max_len)
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
    return total / max(count, 1)


def make_optimizer(net: SASRecNet, c: SASRecConfig, device: torch.device) -> torch.optim.Optimizer:
    """Adam with beta2 = 0.98; ``l2`` is Adam's L2 penalty on the item embedding table only."""
    emb = net.item_emb.weight
    other = [p for n, p in net.named_parameters() if n != "item_emb.weight"]
    return torch.optim.Adam(
        [{"params": [emb], "weight_decay": c.l2}, {"params": other, "weight_decay": 0.0}],
        lr=c.lr, betas=(0.9, 0.98), fused=device.type in ("cpu", "cuda"),
    )


def train_net(net: SASRecNet, c: SASRecConfig, device: torch.device, n_items: int, train: Sessions,
              validate: Callable[[], dict[str, float]] | None) -> tuple[list[dict[str, Any]], int | None]:
    """Train ``net`` for up to ``n_epochs``; with ``validate`` (metrics of the current weights),
    evaluate every ``eval_every`` epochs and after the last, stop after ``patience`` evaluations
    without improvement of ``valid_metric`` and restore the best weights.

    Returns ``(history, best_epoch)``: one record per epoch (loss, seconds, validation metrics),
    and the epoch of the restored weights (None without validation). Leaves ``net`` in eval mode.
    """
    rng = np.random.default_rng(c.seed)  # batches and negatives
    net.set_rng(np.random.default_rng([c.seed, 1]))  # dropout masks
    usable = np.flatnonzero(train.lengths >= 2)
    if usable.size == 0:
        raise NextclickError("sasrec: no training sequence has 2 or more clicks (nothing to predict)")
    opt = make_optimizer(net, c, device)
    loss_fn = BatchLoss(net, c, device, n_items, train, rng)
    history: list[dict[str, Any]] = []
    best, best_epoch, best_state, since_best = -math.inf, None, None, 0
    t_start, eval_time = time.perf_counter(), 0.0
    for epoch in range(1, c.n_epochs + 1):
        t0 = time.perf_counter()
        loss = run_epoch(net, c, opt, loss_fn, train, rng.permutation(usable), epoch)
        rec: dict[str, Any] = {"epoch": epoch, "loss": loss, "epoch_seconds": time.perf_counter() - t0}
        log.info("sasrec epoch %d: %s loss %.4f (%.1f s)", epoch, c.loss, rec["loss"], rec["epoch_seconds"])
        stop = False
        if validate is not None and (epoch % c.eval_every == 0 or epoch == c.n_epochs):
            te = time.perf_counter()
            rec["valid"] = metrics = validate()
            eval_time += time.perf_counter() - te
            score = metrics[c.valid_metric]
            log.info("sasrec epoch %d: valid %s = %.4f", epoch, c.valid_metric, score)
            if score > best:
                best, since_best, best_epoch = score, 0, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since_best += 1
                stop = c.patience > 0 and since_best >= c.patience
        rec["train_seconds"] = time.perf_counter() - t_start - eval_time  # cumulative, evaluation excluded
        history.append(rec)
        if stop:
            log.info("sasrec: early stop at epoch %d; best %s = %.4f at epoch %d", epoch, c.valid_metric, best, best_epoch)
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    net.set_rng(None)
    net.eval()
    return history, best_epoch
