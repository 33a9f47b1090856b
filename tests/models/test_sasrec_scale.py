"""SASRec with a large catalogue: the sampled losses never form a (positions x catalogue) matrix,
``item_optimizer="sparse_adam"`` updates only the item rows a batch reads, and sampled softmax
with in-batch negatives is the mixed-negatives loss it is defined to be."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.models.sasrec import train as sasrec_train
from nextclick.models.sasrec.config import SASRecConfig
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import SASRecNet, set_dropout_rng
from tests.models.test_sasrec import SMALL, cycle_sessions

BIG = 200_000  # items: a (positions x catalogue) float matrix of a batch would hold > 10^7 numbers


@pytest.mark.parametrize("loss", ["sampled_ce", "sampled_ce+in_batch", "bce", "gbce"])
@pytest.mark.parametrize("item_optimizer", ["adam", "sparse_adam"])
def test_sampled_losses_keep_nothing_catalogue_wide_but_the_table(loss: str, item_optimizer: str) -> None:
    c = SASRecConfig(**dict(SMALL, loss=loss.removesuffix("+in_batch"), n_negatives=64, item_optimizer=item_optimizer,
                            in_batch_negatives=loss.endswith("+in_batch")))
    train = cycle_sessions(64, n_items=BIG)
    torch.manual_seed(0)
    net = SASRecNet(BIG, c)
    net.reset_parameters()
    set_dropout_rng(net, np.random.default_rng(1))
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
    assert widest < (64 + n) * n * 4, f"a tensor of {widest} numbers kept for backward ({n} positions)"
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


def test_in_batch_negatives_loss_equals_its_definition() -> None:
    # targets with repeats (item 3 twice), negatives that hit targets: every mask is exercised
    n_items, K = 6, 4
    c = SASRecConfig(**dict(SMALL, loss="sampled_ce", n_negatives=K, in_batch_negatives=True))
    train = cycle_sessions(30, n_items=n_items)
    bl = sasrec_train.BatchLoss(SASRecNet(n_items, c), c, torch.device("cpu"), n_items, train, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    tgt = torch.tensor([3, 1, 3, 5, 2])
    negs = torch.tensor([[3, 6, 1, 4]])
    h, pt, pn = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(K, 8, generator=g)
    got = bl._mixed(h, pt, tgt, (h * pt).sum(1), h @ pn.T, negs, negs == tgt[:, None])
    clicks = np.bincount(train.items, minlength=n_items + 1)[1:] / train.items.size
    q = bl.pop.q
    corr = {i: np.log(5 * clicks[i - 1] + K * q[i - 1]) for i in range(1, n_items + 1)}
    want = 0.0
    for i in range(5):
        t = int(tgt[i])
        pos = float(h[i] @ pt[i]) - corr[t]
        others = [float(h[i] @ pt[j]) - corr[int(tgt[j])] for j in range(5) if int(tgt[j]) != t]
        others += [float(h[i] @ pn[k]) - corr[int(negs[0, k])] for k in range(K) if int(negs[0, k]) != t]
        want -= pos - np.log(np.exp(pos) + np.exp(others).sum())
    assert got.item() == pytest.approx(want / 5, rel=1e-5)


def test_in_batch_negatives_learn_a_deterministic_cycle_and_need_sampled_ce() -> None:
    m = SASRec(**dict(SMALL, n_blocks=1, n_heads=1, dropout=0.1, lr=0.01, n_epochs=15, loss="sampled_ce",
                      n_negatives=8, in_batch_negatives=True)).fit(cycle_sessions(300))
    assert evaluate(m, cycle_sessions(40, seed=1), cutoffs=(1,)).metrics["recall@1"] >= 0.9
    with pytest.raises(NextclickError, match="in_batch_negatives needs loss=sampled_ce"):
        SASRec(**dict(SMALL, loss="bce", in_batch_negatives=True)).fit(cycle_sessions(20))
