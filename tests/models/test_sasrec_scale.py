"""SASRec with a large catalogue: the sampled losses never form a (positions x catalogue) matrix,
and ``item_optimizer="sparse_adam"`` updates only the item rows a batch reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.models.sasrec import train as sasrec_train
from nextclick.models.sasrec.config import SASRecConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import SASRecNet
from tests.models.test_sasrec import SMALL, cycle_sessions

BIG = 200_000  # items: a (positions x catalogue) float matrix of a batch would hold > 10^7 numbers


@pytest.mark.parametrize("loss", ["sampled_ce", "bce", "gbce"])
@pytest.mark.parametrize("item_optimizer", ["adam", "sparse_adam"])
def test_sampled_losses_keep_nothing_catalogue_wide_but_the_table(loss: str, item_optimizer: str) -> None:
    c = SASRecConfig(**dict(SMALL, loss=loss, n_negatives=64, item_optimizer=item_optimizer))
    train = cycle_sessions(64, n_items=BIG)
    torch.manual_seed(0)
    net = SASRecNet(BIG, c)
    net.reset_parameters()
    net.set_rng(np.random.default_rng(1))
    net.item_emb.sparse = item_optimizer == "sparse_adam"
    net.train()
    x, y = sasrec_train.sequence_batch(train, np.arange(32), c.max_len)
    saved: list[tuple[int, ...]] = []

    def keep(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss_v, n = sasrec_train.BatchLoss(net, c, torch.device("cpu"), BIG, train, np.random.default_rng(0))(x, y)
    loss_v.backward()
    widest = max(int(np.prod(s)) for s in saved)
    assert widest < 64 * n * 4, f"a tensor of {widest} numbers kept for backward ({n} positions)"
    assert all(BIG not in s and BIG + 1 not in s for s in saved), saved
    g = net.item_emb.weight.grad
    assert g.is_sparse == (item_optimizer == "sparse_adam")
    if g.is_sparse:  # only the rows the batch read: its items, targets and negatives
        assert g.coalesce().indices().shape[1] <= x.size + y.size + 64 * x.shape[0]


def test_sparse_adam_moves_only_the_rows_a_step_reads() -> None:
    def two_steps(item_optimizer: str) -> tuple[torch.Tensor, torch.Tensor]:
        c = SASRecConfig(**dict(SMALL, loss="sampled_ce", item_optimizer=item_optimizer))
        torch.manual_seed(0)
        net = SASRecNet(10, c)
        net.item_emb.sparse = item_optimizer == "sparse_adam"
        opt = sasrec_train.make_optimizer(net, c, torch.device("cpu"))
        w0 = net.item_emb.weight.detach().clone()
        for row in (1, 2):  # step 1 reads row 1, step 2 row 2
            opt.zero_grad(set_to_none=True)
            net.item_emb(torch.tensor([row])).sum().backward()
            opt.step()
        return w0, net.item_emb.weight.detach()

    w0, w = two_steps("sparse_adam")
    assert not torch.equal(w[1], w0[1]) and not torch.equal(w[2], w0[2])
    after_one = two_steps("sparse_adam")[1][1]
    assert torch.equal(w[3:], w0[3:])  # rows never read
    # Adam keeps moving row 1 at step 2 (its momentum); SparseAdam leaves it where step 1 put it
    w0d, wd = two_steps("adam")
    assert torch.equal(after_one, w[1])
    assert not torch.allclose(wd[1] - w0d[1], w[1] - w0[1])


def test_sparse_adam_learns_a_deterministic_cycle() -> None:
    m = SASRec(**dict(SMALL, n_blocks=1, n_heads=1, dropout=0.1, lr=0.01, n_epochs=15, loss="sampled_ce",
                      n_negatives=8, item_optimizer="sparse_adam")).fit(cycle_sessions(300))
    r = evaluate(m, cycle_sessions(40, seed=1), cutoffs=(1, 5)).metrics
    assert r["recall@1"] >= 0.9, r
    assert not m.net_.item_emb.sparse  # the fitted model scores with the ordinary embedding


@pytest.mark.parametrize("bad", [dict(loss="ce"), dict(loss="sampled_ce", l2=0.1), dict(item_optimizer="sgd")])
def test_sparse_adam_config_errors(bad: dict) -> None:
    cfg = dict(SMALL, item_optimizer="sparse_adam", **bad) if "item_optimizer" not in bad else dict(SMALL, **bad)
    with pytest.raises(NextclickError, match="item_optimizer"):
        SASRec(**cfg).fit(cycle_sessions(20))
