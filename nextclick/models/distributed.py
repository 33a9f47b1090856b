"""Data-parallel training on PyTorch's own distributed engine (``torch.distributed``).

A fit launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``) joins the process group: gloo on CPUs, NCCL on CUDA devices. Each rank trains
on its own shard of the sessions (:func:`shard`) and the ranks agree on every update by
averaging gradients (:func:`average_gradients`), so one synchronous step with a per-rank batch
of B / world equals one step of a single process with batch B (up to float summation order).
Without ``torchrun`` (or with ``WORLD_SIZE=1``) everything here is a no-op: rank 0 of 1.

Only rank 0 writes artifacts and prints progress (:func:`is_main`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def launched() -> bool:
    """Whether this process was started as one rank of several (``torchrun``: ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> tuple[int, int]:
    """Join the process group when :func:`launched` (gloo for CPU devices, NCCL for CUDA);
    returns ``(rank, world_size)``, ``(0, 1)`` in a lone process."""
    if not launched():
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_rank(), dist.get_world_size()


def local_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` when launched
    (one GPU per rank on a machine); other devices are returned as they are."""
    if device.type == "cuda" and device.index is None and launched():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the joined process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0 (or a lone process): the one that saves, logs progress and evaluates."""
    return rank_world()[0] == 0


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of ``order`` (session indices in the epoch's order): every ``world``-th
    one from position ``rank``, so the ranks' shares interleave and differ in size by at most one."""
    return order[rank::world]


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce the ``.grad`` of every parameter and divide by the world size (in place).
    Parameters without a gradient on this rank count as zero (every rank must pass the same
    parameters in the same order)."""
    rank, world = rank_world()
    if world == 1:
        return
    ps = list(params)
    for p in ps:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for group in _same_dtype_device(ps):  # one all-reduce per dtype and device, not one per tensor
        flat = torch.cat([p.grad.reshape(-1) for p in group]) if len(group) > 1 else group[0].grad.reshape(-1)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        if len(group) > 1 or flat.data_ptr() != group[0].grad.data_ptr():
            for p, part in zip(group, flat.split([p.numel() for p in group])):
                p.grad.copy_(part.view_as(p.grad))


def _same_dtype_device(ps: list[torch.nn.Parameter]) -> list[list[torch.nn.Parameter]]:
    groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
    for p in ps:
        groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    return list(groups.values())


def average_rows(p: torch.nn.Parameter, idx: torch.Tensor) -> None:
    """Average ``p.grad`` over the ranks (in place) when each rank's gradient is zero outside its
    rows ``idx`` (unique indices; the touched rows of an embedding table, which differ between
    ranks): only those rows travel (:func:`all_gather_rows`), not the whole table. Equals
    :func:`average_gradients` of ``p`` up to float summation order. No-op alone."""
    world = rank_world()[1]
    if world == 1:
        return
    if p.grad is None:
        p.grad = torch.zeros_like(p)
    g = p.grad
    all_idx, all_rows = all_gather_rows(idx, g[idx])
    g[idx] = 0.0
    g.index_add_(0, all_idx, all_rows.div_(world))


def average_sparse(p: torch.nn.Parameter) -> None:
    """Average a sparse (COO) ``p.grad`` over the ranks: its rows travel by :func:`all_gather_rows`
    and the result is the sparse gradient of every rank's rows divided by the world size
    (uncoalesced: a row several ranks touched appears once per rank). No-op alone."""
    world = rank_world()[1]
    if world == 1:
        return
    if p.grad is None:
        p.grad = torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.int64, device=p.device),
                                         p.new_zeros((0, *p.shape[1:])), p.shape, check_invariants=False)
    g = p.grad.coalesce()
    idx, rows = all_gather_rows(g.indices()[0], g.values())
    p.grad = torch.sparse_coo_tensor(idx[None], rows.div_(world), p.shape, check_invariants=False)


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``t`` from rank ``src`` on every rank (in place; returns it): a decision one rank took,
    such as early stopping, or the initial weights. No-op in a lone process."""
    if rank_world()[1] > 1:
        dist.broadcast(t, src=src)
    return t


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks (in place; returns it). No-op in a lone process."""
    if rank_world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_rows(idx: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's ``(idx (n_r,), rows (n_r, d))`` concatenated in rank order: the touched rows
    of a sparse (embedding) gradient, which differ in number between ranks. No-op alone."""
    rank, world = rank_world()
    if world == 1:
        return idx, rows
    n = torch.tensor([idx.numel()], dtype=torch.int64, device=idx.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    m = int(max(int(c.item()) for c in counts))
    pad_idx = torch.zeros(m, dtype=idx.dtype, device=idx.device)
    pad_rows = torch.zeros((m, rows.shape[1]), dtype=rows.dtype, device=rows.device)
    pad_idx[: idx.numel()] = idx
    pad_rows[: idx.numel()] = rows
    all_idx = [torch.zeros_like(pad_idx) for _ in range(world)]
    all_rows = [torch.zeros_like(pad_rows) for _ in range(world)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_rows, pad_rows)
    k = [int(c.item()) for c in counts]
    return torch.cat([a[:c] for a, c in zip(all_idx, k)]), torch.cat([r[:c] for r, c in zip(all_rows, k)])


def barrier() -> None:
    if rank_world()[1] > 1:
        dist.barrier()


_CLOSE_TIMEOUT = 60.0  # seconds a rank waits for the others to take the group down


def close() -> None:
    """Leave the process group (at the end of a launched fit).

    No rank returns (and may exit, closing its sockets) before every rank has taken its group
    down: a gloo rank whose peer vanished while it was still tearing down can abort. The ranks
    count themselves out on the rendezvous store, which outlives the group."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    store = dist.distributed_c10d._get_default_store() if world > 1 else None
    dist.destroy_process_group()
    if store is None:
        return
    global _closed
    _closed += 1
    key = f"nextclick/closed/{_closed}"
    store.add(key, 1)
    deadline = time.monotonic() + _CLOSE_TIMEOUT
    while store.add(key, 0) < world and time.monotonic() < deadline:
        time.sleep(0.01)


_closed = 0  # groups this process has left (each has its own count on the store)
