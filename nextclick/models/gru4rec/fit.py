"""GRU4Rec's epoch loop: session-parallel mini-batches laid out as flat arrays before each epoch,
negatives from the pre-drawn sample store, one :class:`~.train.Trainer` step per mini-batch, so
the Python work per step is a few slices."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from nextclick.data.batching import SessionParallelBatches
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models import distributed
from nextclick.models.gru4rec.config import GRU4RecConfig
from nextclick.models.gru4rec.net import Net, torch_threads
from nextclick.models.gru4rec.sampling import SampleStore
from nextclick.models.gru4rec.train import Trainer

if TYPE_CHECKING:
    from nextclick.models.gru4rec.train_torch import TorchTrainer


@contextmanager
def numba_threads(n: int) -> Iterator[int]:
    """Run numba's parallel loops with ``n`` threads (at most its pool's size) inside the block;
    yields the number used. For one thread numba's thread pool is left alone (not started)."""
    if n <= 1:
        yield 1
        return
    import numba

    old = numba.get_num_threads()
    use = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(use)
    try:
        yield use
    finally:
        numba.set_num_threads(old)


@dataclass
class EpochPlan:
    """An epoch's session-parallel steps as flat tensors (step ``t`` covers ``[off[t], off[t] + size[t])``)."""

    x: torch.Tensor  # (N,) inputs
    y: torch.Tensor  # (N,) targets
    carry: torch.Tensor  # (N, 1) float: 0 where a slot starts a new session, else 1
    off: list[int]
    size: list[int]
    has_reset: list[bool]
    keep: dict[int, torch.Tensor]  # step -> rows of the previous hidden state that continue

    @classmethod
    def build(cls, batches: SessionParallelBatches) -> EpochPlan:
        xs, ys, rs, sizes, keep = [], [], [], [], {}
        for t, st in enumerate(batches):
            xs.append(st.inputs)
            ys.append(st.targets)
            rs.append(st.reset)
            sizes.append(st.inputs.size)
            if st.keep is not None:
                keep[t] = torch.from_numpy(np.asarray(st.keep, dtype=np.int64))
        off = np.concatenate([[0], np.cumsum(sizes)])[:-1].tolist() if sizes else []
        reset = np.concatenate(rs) if rs else np.zeros(0, bool)
        return cls(
            x=torch.from_numpy(np.concatenate(xs) if xs else np.zeros(0, np.int64)),
            y=torch.from_numpy(np.concatenate(ys) if ys else np.zeros(0, np.int64)),
            carry=torch.from_numpy((~reset).astype(np.float32))[:, None],
            off=off,
            size=[int(s) for s in sizes],
            has_reset=[bool(r.any()) for r in rs],
            keep=keep,
        )

    @property
    def n_events(self) -> int:
        return int(self.x.numel())

    def to(self, device: torch.device) -> EpochPlan:
        """The plan's tensors on ``device`` (itself on the CPU)."""
        if device.type == "cpu":
            return self
        t = {k: v.to(device) for k, v in self.keep.items()}
        return EpochPlan(self.x.to(device), self.y.to(device), self.carry.to(device), self.off, self.size, self.has_reset, t)



@dataclass
class Epoch:
    """What one epoch reports."""

    index: int  # from 0
    loss: float  # mean loss per event
    n_events: int
    seconds: float
    out_of_time: bool = False  # the time budget ran out during this epoch (the last one trained)


def epochs(cfg: GRU4RecConfig, train: Sessions, counts: np.ndarray, n_items: int) -> tuple[Net, Iterator[Epoch]]:
    """The network, initialised, and an iterator that trains it an epoch per step.

    Sessions are ordered by their first click (``session_order="time"``) or reshuffled every
    epoch; negatives come from a :class:`~.sampling.SampleStore` sized to what the whole training
    uses. The iterator holds the thread settings of training (torch and BLAS on one thread,
    numba's pool on ``n_threads``; the torch engine: torch on ``n_threads``) while it runs,
    including while the caller handles an epoch.

    With ``engine="torch"`` under ``torchrun`` (several ranks) the process joins the group, trains
    on its shard of the sessions (every ``world``-th in time order) with a sample store of its own
    and ``batch_size`` slots, and the ranks step together (:mod:`.train_torch`); every rank ends
    with the same weights.
    """
    rng = np.random.default_rng(cfg.seed)
    if cfg.session_order == "time" and train.times is not None:  # oldest session first
        train = train.select(np.argsort(train.times[train.offsets[:-1]], kind="stable"))
    rank, world = 0, 1
    device = torch.device("cpu")
    if cfg.engine == "compiled" and distributed.launched():
        raise NextclickError("gru4rec: engine='compiled' trains in one process; use engine='torch' under torchrun")
    if cfg.engine == "torch":
        device = _torch_device(cfg.device)
        rank, world = distributed.init(device)
        if world > 1:
            train = train.select(distributed.shard(np.arange(train.n_sessions), rank, world))
    order = "given" if cfg.session_order == "time" else "random"
    batches = SessionParallelBatches(train, cfg.batch_size, order=order, seed=cfg.seed)
    plan = EpochPlan.build(batches)
    if plan.n_events == 0:
        raise NextclickError("gru4rec: no training session has 2 or more clicks")
    store = None
    if cfg.n_sample:  # never draw more negatives in advance than the whole training uses
        size = min(cfg.sample_cache_max_size, cfg.n_sample * len(plan.size) * cfg.n_epochs)
        store_rng = rng if world == 1 else np.random.default_rng([cfg.seed, 2, rank])  # the net's draws stay shared
        store = SampleStore(counts**cfg.sample_alpha, cfg.n_sample, size, store_rng)
    net = Net.create(cfg, n_items, rng)
    if cfg.engine == "torch":
        return net, _run_torch(net, cfg, device, counts, batches, plan, store, reshuffle=order == "random")
    return net, _run(net, cfg, counts, batches, plan, store, reshuffle=order == "random")


def _torch_device(name: str) -> torch.device:
    """The torch engine's device: ``cuda`` under torchrun is the rank's own GPU (``LOCAL_RANK``)."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NextclickError(f"gru4rec: device={name!r} but this torch build sees no CUDA device")
        if device.index is None and distributed.launched():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _run(
    net: Net, cfg: GRU4RecConfig, counts: np.ndarray, batches: SessionParallelBatches, plan: EpochPlan,
    store: SampleStore | None, reshuffle: bool,
) -> Iterator[Epoch]:
    # numba's products call scipy's BLAS: load it before the limits so that they cover it too
    import scipy.linalg.cython_blas  # noqa: F401

    with (
        torch_threads(1),
        threadpool_limits(1, user_api="blas"),
        numba_threads(cfg.n_threads) as parts,
        torch.no_grad(),
        np.errstate(over="ignore", invalid="ignore"),
    ):
        trainer = Trainer(net, cfg, counts, parts=parts)
        deadline = _deadline(cfg)
        for epoch in range(cfg.n_epochs):
            if epoch and reshuffle:
                plan = EpochPlan.build(batches)
            t0 = time.perf_counter()
            loss, n_ev, late = run_epoch(trainer, plan, store, epoch, deadline=deadline)
            yield Epoch(epoch, loss, n_ev, time.perf_counter() - t0, late)
            if late:
                return


def _run_torch(
    net: Net, cfg: GRU4RecConfig, device: torch.device, counts: np.ndarray, batches: SessionParallelBatches,
    plan: EpochPlan, store: SampleStore | None, reshuffle: bool,
) -> Iterator[Epoch]:
    """:func:`_run` for ``engine="torch"``: torch on ``n_threads`` threads, the weights written
    back to the net after every epoch."""
    from nextclick.models.gru4rec.train_torch import TorchTrainer

    with torch_threads(cfg.n_threads), torch.no_grad():
        trainer = TorchTrainer(net, cfg, counts, str(device))
        deadline = _deadline(cfg)
        for epoch in range(cfg.n_epochs):
            if epoch and reshuffle:
                plan = EpochPlan.build(batches)
            n_steps = len(plan.size)
            if trainer.world > 1:  # every rank takes part in every step, some in empty ones at the end
                steps = torch.zeros(trainer.world, dtype=torch.int64)
                steps[trainer.rank] = n_steps
                n_steps = int(distributed.all_reduce_sum(steps.to(device)).max())
            t0 = time.perf_counter()
            loss, n_ev, late = run_epoch(trainer, plan.to(device), store, epoch, n_steps, deadline)
            trainer.sync()
            yield Epoch(epoch, loss, n_ev, time.perf_counter() - t0, late)
            if late:
                return


def _deadline(cfg: GRU4RecConfig) -> float | None:
    """When training must stop (``time.monotonic()``), or None without a time budget."""
    return time.monotonic() + cfg.time_budget if cfg.time_budget else None


def _late(deadline: float | None, synchronous: bool, device: torch.device) -> bool:
    """Whether the time budget has run out; with several ranks, whether it has on any of them
    (every rank asks at the same step, so all of them stop there)."""
    if deadline is None:
        return False
    late = time.monotonic() > deadline
    if synchronous:
        flag = torch.tensor([float(late)], device=device)
        late = bool(distributed.all_reduce_sum(flag).item() > 0)
    return late


def run_epoch(
    trainer: Trainer | TorchTrainer, plan: EpochPlan, store: SampleStore | None, epoch: int, n_steps: int | None = None,
    deadline: float | None = None,
) -> tuple[float, int, bool]:
    """One pass over the session-parallel steps; returns the mean loss per event, #events, and
    whether it stopped early because ``deadline`` (``time.monotonic()``) passed (checked every 64
    steps). ``n_steps`` beyond the plan's steps: empty steps at the end (a rank of a data-parallel
    fit whose shard ran out takes part in the others' steps)."""
    from tqdm.auto import tqdm

    cfg = trainer.cfg
    synchronous = getattr(trainer, "world", 1) > 1  # every rank must take every step
    skip_single = cfg.loss == "bpr-max" and store is None and not synchronous  # one slot, no negatives: no BPR-max
    dev = plan.x.device
    H = [torch.zeros(plan.size[0], Dl, device=dev) for Dl in cfg.layers]
    total, n_ev, late = 0.0, 0, False
    bar = tqdm(
        total=plan.n_events,
        desc=f"gru4rec epoch {epoch + 1}/{cfg.n_epochs}",
        unit="ev",
        leave=False,
        disable=None,
        mininterval=0.5,
    )
    for t, (o, b) in enumerate(zip(plan.off, plan.size)):
        keep = plan.keep.get(t)
        if keep is not None:  # the batch shrank: keep the states of the slots that go on
            H = [h.index_select(0, keep) for h in H]
        if plan.has_reset[t]:  # zero the states of slots that start a new session
            carry = plan.carry[o : o + b]
            for h in H:
                h.mul_(carry)
        if skip_single and b < 2:
            continue
        v = trainer.step(plan.x[o : o + b], plan.y[o : o + b], store.next() if store else None, H)
        if not math.isfinite(v):
            raise NextclickError(
                f"gru4rec: loss is {v} at epoch {epoch + 1}, step {t}; lower learning_rate "
                f"(now {cfg.learning_rate}) or momentum (now {cfg.momentum})"
            )
        total += v * b
        n_ev += b
        if t % 64 == 63:
            bar.update(o + b - bar.n)
            if late := _late(deadline, synchronous, dev):
                break
    else:  # the plan ran to its end (no time-out): empty steps, the other ranks' tail
        for t in range(len(plan.off), n_steps or 0):
            trainer.step(plan.x[:0], plan.y[:0], store.next() if store else None, [h[:0] for h in H])
            if t % 64 == 63 and (late := _late(deadline, synchronous, dev)):
                break
    bar.close()
    return total / max(n_ev, 1), n_ev, late
