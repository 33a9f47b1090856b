"""SASRec's training: mini-batches of whole sequences, the configured loss on them (negatives from
:mod:`nextclick.data.sampling`), Adam, and early stopping on a validation split.

Random state: one numpy generator seeded with ``config.seed`` draws, in this order, each epoch's
permutation of the training sequences and then, batch by batch, that batch's negatives; dropout
masks come from a second generator seeded with ``[seed, 1]``. Torch's global generator is only
used (by the caller) to initialise the weights.

Data-parallel (under ``torchrun``, see :mod:`nextclick.models.distributed`): every rank draws the
same epoch order from the seed; a step takes the next ``batch_size`` sequences of it and rank r
trains on rows r, r + world, ... of them (``batch_size / world`` per rank: the ranks' shards of the
epoch, :func:`~nextclick.models.distributed.shard`, in batches). Each rank's mean loss is weighted
by its share of the step's positions and the gradients are averaged (the item table's touched
rows only, for the sampled losses), so a step equals one process's step on the whole batch up to
float summation order (but for ``in_batch_negatives``, whose in-batch negatives are the rank's own
positions' targets). Negatives shared by the whole batch (``sampled_ce``) come from the seeded
generator every rank advances alike, so they match a lone process's too; per-row negatives
(``bce``, per-sequence ``gbce``) and dropout masks come from per-rank generators seeded with
``[seed, 2, rank]`` and ``[seed, 1, rank]`` (same distribution, other draws). Only rank 0
validates; its early-stopping decision is broadcast, so every rank keeps the same weights.
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
from nextclick.models import distributed
from nextclick.models.sasrec.config import SASRecConfig, neg_sharing
from nextclick.models.sasrec.losses import SoftmaxWorkspace, bce_loss, ce_loss, gbce_beta, gbce_loss, sampled_ce_loss
from nextclick.models.sasrec.net import SASRecNet, set_dropout_rng

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
                 rng: np.random.Generator, local_rng: np.random.Generator | None = None) -> None:
        # rng: draws every rank makes alike (batch-shared negatives); local_rng: per-row draws
        self.net, self.c, self.dev, self.V, self.rng = net, c, device, n_items, rng
        self.local = local_rng if local_rng is not None else rng
        self.track = distributed.rank_world()[1] > 1  # record the item rows each batch touches
        self.touched: torch.Tensor | None = None  # (M,) unique item rows of the last batch; None: all
        self.share = neg_sharing(c)
        self.beta = gbce_beta(c.n_negatives, n_items, c.gbce_t) if c.loss == "gbce" else 1.0
        self.workspace = SoftmaxWorkspace() if c.loss == "ce" else None
        # a network may turn the next-click batch into its own (inputs, targets) with a
        # ``loss_batch(x, y, rng)`` method (BERT4Rec's Cloze task); net(inputs) then returns the
        # states at the targets' positions. Without it (SASRec, NARM, STAMP) the batch is used as it is.
        self.prepare = getattr(net, "loss_batch", None)
        self.pop: PopularitySampler | None = None
        if c.loss == "sampled_ce":
            self.pop = PopularitySampler.from_clicks(train.items, n_items, c.sample_alpha)
            self.log_q = torch.tensor(self.pop.log_q, dtype=torch.float32, device=device)  # (V + 1,)
            if c.in_batch_negatives:  # each source's probabilities: the batch's targets ~ clicks, samples ~ q
                clicks = np.bincount(train.items, minlength=n_items + 1).astype(np.float64)
                clicks[0] = 0.0
                self.p_click = torch.tensor(clicks / clicks.sum(), dtype=torch.float32, device=device)  # (V + 1,)
                self.q = torch.tensor(np.concatenate([[0.0], self.pop.q]), dtype=torch.float32, device=device)
            if not c.logq_correction:  # the plain sampled softmax: no candidate's logit is corrected
                self.log_q.zero_()
        self.top_k = c.top_k_negatives

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
        """Negatives of ``shape`` from ``rng`` (default: the shared generator): popularity**alpha
        for sampled_ce, uniform otherwise."""
        rng = rng if rng is not None else self.rng
        if self.pop is not None:
            return self.pop.draw(rng, shape)
        return uniform(rng, self.V, shape)

    def bce_negatives(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, t) uniform negatives; with ``bce_exclude_seen`` none is an item of its row's window
        (inputs and the last target), after at most 20 redraws."""
        if not self.c.bce_exclude_seen:
            return uniform(self.local, self.V, x.shape)
        seen = np.concatenate([x, y[:, -1:]], axis=1)  # (B, t + 1)
        rows = np.repeat(np.arange(x.shape[0]), seen.shape[1])
        return uniform_not_in(self.local, self.V, x.shape, rows, seen.ravel(), max_rounds=20)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, int]:
        c, net, dev = self.c, self.net, self.dev
        if self.prepare is not None:
            x, y = self.prepare(x, y, self.local)
        real = y > 0
        tgt_np = y[real]
        tgt = torch.from_numpy(tgt_np).to(dev)  # (N,) targets of the real positions
        n = tgt.numel()
        self.touched = None
        if c.loss == "ce":  # every item row gets a gradient
            h = net(x)  # (N, D)
            return ce_loss(h, net.item_emb.weight, tgt, self.workspace), n
        if c.loss == "bce":
            neg = torch.from_numpy(self.bce_negatives(x, y)[real]).to(dev)  # (N,)
            h, pn = net(x, extra=self._touch(x, torch.cat([tgt, neg])))  # (N, D), (2N, D)
            pos_l, neg_l = (h[None] * pn.view(2, n, -1)).sum(-1)
            return bce_loss(pos_l, neg_l), n
        K = c.n_negatives
        if self.share == "batch":
            negs = self.sample((K,))  # (K,) for every position
            h, pn = net(x, extra=self._touch(x, torch.cat([tgt, torch.from_numpy(negs).to(dev)])))
            neg_l = h @ pn[n:].T  # (N, K)
            neg_of = negs[None, :]
        else:
            B, t = x.shape
            negs = self.sample((B, K), self.local)  # (B, K): one draw per sequence
            h, pn = net(x, extra=self._touch(x, torch.cat([tgt, torch.from_numpy(negs.ravel()).to(dev)])))
            flat = torch.from_numpy(np.flatnonzero(real)).to(dev)
            hp = h.new_zeros(B * t, h.shape[1]).index_copy(0, flat, h).view(B, t, -1)  # (B, t, D)
            neg_l = torch.bmm(hp, pn[n:].view(B, K, -1).transpose(1, 2)).view(B * t, K)[flat]  # (N, K)
            neg_of = negs[np.repeat(np.arange(B), real.sum(1))]  # (N, K) negatives of each position
        pos_l = (h * pn[:n]).sum(-1)  # (N,)
        hit = torch.from_numpy(neg_of == tgt_np[:, None]).to(dev)  # a "negative" that is the target
        if c.loss == "sampled_ce" and c.in_batch_negatives:
            return self._mixed(h, pn[:n], tgt, pos_l, neg_l, torch.from_numpy(neg_of).to(dev), hit), n
        if c.loss == "sampled_ce":
            log_q_neg = self.log_q[torch.from_numpy(neg_of).to(dev)]
            return sampled_ce_loss(pos_l, neg_l, self.log_q[tgt], log_q_neg, hit, self.top_k), n
        return gbce_loss(pos_l, neg_l, self.beta, hit), n

    def _mixed(self, h: torch.Tensor, pt: torch.Tensor, tgt: torch.Tensor, pos_l: torch.Tensor, neg_l: torch.Tensor,
               neg_of: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
        """Sampled softmax over the target, the batch's other targets and the sampled negatives
        (``in_batch_negatives``): every logit is corrected by the log of its item's expected count
        among the candidates, ``log(N p_click + K q)`` (both sources' logQ); another position's
        target that is this position's target is masked out (``logq_correction=False``: no correction).
        With ``top_k_negatives`` only the k largest corrected logits of the N + K negatives take part.
        ``h``, ``pt`` (N, D); ``neg_l`` (N, K)."""
        n, K = tgt.numel(), self.c.n_negatives
        in_batch = h @ pt.T  # (N, N): position i against position j's target
        same = tgt[:, None] == tgt[None, :]  # (N, N), the diagonal included (that is the positive)
        if self.c.logq_correction:
            log_c_t = torch.log(n * self.p_click[tgt] + K * self.q[tgt])  # (N,)
            log_c_n = torch.log(n * self.p_click[neg_of] + K * self.q[neg_of])  # (1, K) or (N, K)
        else:
            log_c_t, log_c_n = h.new_zeros(n), h.new_zeros(1, 1)
        log_c = torch.cat([log_c_t[None].expand(n, n), log_c_n.expand(n, K)], dim=1)  # (N, N + K)
        return sampled_ce_loss(pos_l, torch.cat([in_batch, neg_l], dim=1), log_c_t, log_c, torch.cat([same, hit], dim=1),
                               self.top_k)

    def _touch(self, x: np.ndarray, extra: torch.Tensor) -> torch.Tensor:
        """``extra`` unchanged; records the item rows the batch reads (inputs + ``extra``) when
        gradients are averaged across ranks."""
        if self.track:
            self.touched = torch.unique(torch.cat([torch.from_numpy(x[x > 0]).to(extra.device), extra]))
        return extra


def run_epoch(net: SASRecNet, c: SASRecConfig, opt: torch.optim.Optimizer | Optimizers, loss_fn: BatchLoss, train: Sessions,
              perm: np.ndarray, epoch: int) -> float:
    """One pass over the sequences ``perm`` in batches of ``batch_size`` (this rank: its rows of
    each batch); the mean loss per position over all ranks. A non-finite loss raises."""
    net.train()
    rank, world = distributed.rank_world()
    stats = torch.zeros(3, dtype=torch.float64, device=loss_fn.dev)  # loss sum, positions, non-finite losses
    n_batches = math.ceil(perm.size / c.batch_size)
    bar: Any = range(n_batches)
    show = c.progress and rank == 0
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(bar, desc=f"{label(net)} epoch {epoch}", leave=False, unit="batch")
    for b in bar:
        batch = perm[b * c.batch_size : (b + 1) * c.batch_size]
        opt.zero_grad(set_to_none=True)
        loss, n = _backward(net, c, loss_fn, train, batch, rank, world)
        if not math.isfinite(loss):
            stats[2] += 1
            if world == 1:
                _raise_nonfinite(label(net), c, loss, epoch, b)
        if world > 1:
            _sync_gradients(net, loss_fn, stats, epoch, b, c)
        opt.step()
        stats[0] += loss * n
        stats[1] += n
        if show and b % 20 == 0:
            bar.set_postfix(loss=f"{stats[0].item() / max(stats[1].item(), 1):.4f}")
    if show:
        bar.close()
    distributed.all_reduce_sum(stats)
    return stats[0].item() / max(stats[1].item(), 1)


def _backward(net: SASRecNet, c: SASRecConfig, loss_fn: BatchLoss, train: Sessions, batch: np.ndarray,
              rank: int, world: int) -> tuple[float, int]:
    """Loss and gradients of this rank's rows of ``batch``: ``(mean loss, positions)``, (0.0, 0)
    for no rows. With several ranks the loss is weighted by this rank's share of the batch's
    positions (times ``world``: averaging the gradients then gives the batch's mean)."""
    mine = distributed.shard(batch, rank, world)
    loss_fn.touched = None if c.loss == "ce" else torch.zeros(0, dtype=torch.int64, device=loss_fn.dev)
    if mine.size == 0:
        return 0.0, 0
    x, y = sequence_batch(train, mine, c.max_len)
    loss, n = loss_fn(x, y)
    value = loss.item()
    if world > 1 and math.isfinite(value):
        n_all = int(np.minimum(train.lengths[batch] - 1, c.max_len).sum())  # positions of the whole batch
        loss = loss * (n * world / n_all)
    if math.isfinite(value):
        loss.backward()
    return value, n


def _sync_gradients(net: SASRecNet, loss_fn: BatchLoss, stats: torch.Tensor, epoch: int, b: int, c: SASRecConfig) -> None:
    """Average the ranks' gradients (the item table's touched rows only when the loss says which);
    raise on every rank when some rank's loss was not finite."""
    bad = distributed.all_reduce_sum(stats[2:].clone())
    if bad.item() > 0:
        _raise_nonfinite(label(net), c, float("nan"), epoch, b)
    emb = net.item_emb.weight
    distributed.average_gradients(p for p in net.parameters() if p is not emb)
    if c.item_optimizer == "sparse_adam":
        distributed.average_sparse(emb)
    elif loss_fn.touched is None:
        distributed.average_gradients([emb])
    else:
        distributed.average_rows(emb, loss_fn.touched)


def label(net: torch.nn.Module) -> str:
    """The model's name in the trainer's messages: the network's ``label`` (SASRec's without one)."""
    return getattr(net, "label", "sasrec")


def _raise_nonfinite(who: str, c: SASRecConfig, loss: float, epoch: int, b: int) -> None:
    raise NextclickError(
        f"{who}: {c.loss} loss is {loss} at epoch {epoch}, batch {b + 1}; lower lr (now {c.lr}) or check the data"
    )


class Optimizers:
    """Several optimisers stepped as one (the item table's and the rest's)."""

    def __init__(self, *opts: torch.optim.Optimizer) -> None:
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.opts:
            o.step()


def make_optimizer(net: SASRecNet, c: SASRecConfig, device: torch.device) -> torch.optim.Optimizer | Optimizers:
    """Adam with beta2 = 0.98; ``l2`` is Adam's L2 penalty on the item embedding table only. With
    ``item_optimizer="sparse_adam"`` the item table gets torch's SparseAdam (same betas) on the
    sparse gradient of the rows each batch reads (the net's embedding is switched to sparse
    gradients for the fit)."""
    emb = net.item_emb.weight
    other = [p for n, p in net.named_parameters() if n != "item_emb.weight"]
    fused = device.type in ("cpu", "cuda")
    if c.item_optimizer == "sparse_adam":
        return Optimizers(torch.optim.SparseAdam([emb], lr=c.lr, betas=(0.9, 0.98)),
                          torch.optim.Adam(other, lr=c.lr, betas=(0.9, 0.98), fused=fused))
    return torch.optim.Adam(
        [{"params": [emb], "weight_decay": c.l2}, {"params": other, "weight_decay": 0.0}],
        lr=c.lr, betas=(0.9, 0.98), fused=fused,
    )


def decay_lr(opt: torch.optim.Optimizer | Optimizers, c: SASRecConfig, epoch: int) -> None:
    """A step schedule for the configs that name one (SR-GNN's): the learning rate times
    ``lr_decay`` after every ``lr_decay_every`` epochs; without ``lr_decay_every`` (or 0), constant."""
    every = getattr(c, "lr_decay_every", 0)
    if every > 0 and epoch % every == 0:
        for o in opt.opts if isinstance(opt, Optimizers) else (opt,):
            for group in o.param_groups:
                group["lr"] *= c.lr_decay


def train_net(net: SASRecNet, c: SASRecConfig, device: torch.device, n_items: int, train: Sessions,
              validate: Callable[[], dict[str, float]] | None) -> tuple[list[dict[str, Any]], int | None]:
    """Train ``net`` for up to ``n_epochs``; with ``validate`` (metrics of the current weights),
    evaluate every ``eval_every`` epochs and after the last, stop after ``patience`` evaluations
    without improvement of ``valid_metric`` and restore the best weights. Under ``torchrun``
    every rank calls this (see the module docstring); only rank 0 calls ``validate``.

    Returns ``(history, best_epoch)``: one record per epoch (loss, seconds, validation metrics on
    rank 0), and the epoch of the restored weights (None without validation). Leaves ``net`` in
    eval mode.
    """
    rank, world = distributed.rank_world()
    rng = np.random.default_rng(c.seed)  # batches and negatives
    local = np.random.default_rng([c.seed, 2, rank]) if world > 1 else None  # per-rank negatives
    set_dropout_rng(net, np.random.default_rng([c.seed, 1] if world == 1 else [c.seed, 1, rank]))  # dropout masks
    usable = np.flatnonzero(train.lengths >= 2)
    if usable.size == 0:
        raise NextclickError(f"{label(net)}: no training sequence has 2 or more clicks (nothing to predict)")
    if world > 1:
        for p in net.parameters():  # the same start on every rank, whatever each initialised
            distributed.broadcast(p.data)
        log.info("%s rank %d of %d: %d of every batch_size=%d sequences per step", label(net), rank, world,
                 math.ceil(c.batch_size / world), c.batch_size)
    net.item_emb.sparse = c.item_optimizer == "sparse_adam"
    opt = make_optimizer(net, c, device)
    loss_fn = BatchLoss(net, c, device, n_items, train, rng, local)
    history: list[dict[str, Any]] = []
    best, best_epoch, best_state, since_best = -math.inf, None, None, 0
    t_start, eval_time = time.perf_counter(), 0.0
    for epoch in range(1, c.n_epochs + 1):
        t0 = time.perf_counter()
        loss = run_epoch(net, c, opt, loss_fn, train, rng.permutation(usable), epoch)
        decay_lr(opt, c, epoch)
        rec: dict[str, Any] = {"epoch": epoch, "loss": loss, "epoch_seconds": time.perf_counter() - t0}
        if rank == 0:
            log.info("%s epoch %d: %s loss %.4f (%.1f s)", label(net), epoch, c.loss, rec["loss"], rec["epoch_seconds"])
        stop = False
        if validate is not None and (epoch % c.eval_every == 0 or epoch == c.n_epochs):
            te = time.perf_counter()
            improved, stop = _validate(validate, rec, c, best, since_best, device, label(net))
            eval_time += time.perf_counter() - te
            if improved:
                best, since_best, best_epoch = rec.get("valid", {}).get(c.valid_metric, best), 0, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since_best += 1
        rec["train_seconds"] = time.perf_counter() - t_start - eval_time  # cumulative, evaluation excluded
        history.append(rec)
        if stop:
            if rank == 0:
                log.info("%s: early stop at epoch %d; best %s = %.4f at epoch %d", label(net), epoch, c.valid_metric, best,
                         best_epoch)
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    set_dropout_rng(net, None)
    net.item_emb.sparse = False
    net.eval()
    return history, best_epoch


def _validate(validate: Callable[[], dict[str, float]], rec: dict[str, Any], c: SASRecConfig, best: float,
              since_best: int, device: torch.device, who: str) -> tuple[bool, bool]:
    """Rank 0 evaluates (into ``rec["valid"]``) and decides ``(improved, stop)``; the decision is
    broadcast so every rank keeps and restores the same weights."""
    flags = torch.zeros(2, dtype=torch.int64, device=device)
    if distributed.is_main():
        rec["valid"] = metrics = validate()
        score = metrics[c.valid_metric]
        log.info("%s epoch %d: valid %s = %.4f", who, rec["epoch"], c.valid_metric, score)
        improved = score > best
        flags[0] = int(improved)
        flags[1] = int(not improved and c.patience > 0 and since_best + 1 >= c.patience)
    distributed.broadcast(flags)
    return bool(flags[0].item()), bool(flags[1].item())
