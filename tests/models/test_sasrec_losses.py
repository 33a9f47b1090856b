"""SASRec's sampled softmax with top-k negatives and without logQ correction (TRON's recipe), and
the gSASRec / TRON presets' options: each loss equals its definition written out row by row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.models.sasrec import train as sasrec_train
from nextclick.models.sasrec.config import SASRecConfig
from nextclick.models.sasrec.losses import sampled_ce_loss
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import SASRecNet
from tests.models.test_sasrec import SMALL, cycle_sessions


def _case(n: int, K: int, shared_q: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.randn(n, generator=g), 2 * torch.randn(n, K, generator=g)
    lq_pos = torch.rand(n, generator=g).log()
    lq_neg = torch.rand(K if shared_q else (n, K), generator=g).log()
    hit = torch.rand(n, K, generator=g) < 0.2
    return pos, neg, lq_pos, lq_neg, hit


def _by_rows(pos, neg, lq_pos, lq_neg, hit, k: int) -> float:
    """The definition, one row at a time: the k largest corrected negatives that are not hits."""
    pos, neg, lq_pos, hit = pos.double().numpy(), neg.double().numpy(), lq_pos.double().numpy(), hit.numpy()
    lq_neg = np.broadcast_to(lq_neg.double().numpy(), neg.shape)
    total = 0.0
    for i in range(pos.size):
        p = pos[i] - lq_pos[i]
        kept = sorted((neg[i, j] - lq_neg[i, j] for j in range(neg.shape[1]) if not hit[i, j]), reverse=True)
        kept = kept[:k] if k > 0 else kept
        total -= p - np.log(np.exp(p) + np.sum(np.exp(kept)))
    return total / pos.size


@pytest.mark.parametrize("shared_q", [True, False], ids=["shared-logq", "per-row-logq"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_sampled_ce_equals_its_definition_row_by_row(k: int, shared_q: bool) -> None:
    case = _case(9, 12, shared_q)
    assert sampled_ce_loss(*case, top_k=k).item() == pytest.approx(_by_rows(*case, k), rel=1e-5)


def test_top_k_at_least_the_negatives_is_the_plain_loss_and_grads_reach_only_the_top_k() -> None:
    pos, neg, lq_pos, lq_neg, hit = _case(6, 10, shared_q=False, seed=1)
    grads = []
    for k in (0, 10, 25, 4):
        p, n_ = pos.clone().requires_grad_(), neg.clone().requires_grad_()
        loss = sampled_ce_loss(p, n_, lq_pos, lq_neg, hit, top_k=k)
        loss.backward()
        grads.append((loss.item(), p.grad, n_.grad))
    for value, gp, gn in grads[1:3]:  # k >= K: the plain loss, same gradients
        assert value == pytest.approx(grads[0][0], rel=1e-6)
        torch.testing.assert_close(gp, grads[0][1])
        torch.testing.assert_close(gn, grads[0][2])
    corrected = (neg - lq_neg).masked_fill(hit, float("-inf"))
    chosen = torch.zeros_like(hit).scatter_(1, corrected.topk(4, dim=1).indices, True)
    gn = grads[3][2]
    assert (gn[~chosen] == 0).all() and (gn[chosen & ~hit] > 0).all()


def _mixed_by_rows(h, pt, tgt, pn, negs, corr, k: int) -> float:
    """Mixed negatives written out: the other positions' targets and the sampled items, each
    logit minus ``corr[item]``, the target's repeats masked, the k largest kept."""
    n, K, want = tgt.numel(), negs.shape[1], 0.0
    for i in range(n):
        t = int(tgt[i])
        pos = float(h[i] @ pt[i]) - corr[t]
        others = [float(h[i] @ pt[j]) - corr[int(tgt[j])] for j in range(n) if int(tgt[j]) != t]
        others += [float(h[i] @ pn[j]) - corr[int(negs[0, j])] for j in range(K) if int(negs[0, j]) != t]
        others = sorted(others, reverse=True)[:k]
        want -= pos - np.log(np.exp(pos) + np.exp(others).sum())
    return want / n


@pytest.mark.parametrize("logq", [True, False], ids=["logq", "no-logq"])
@pytest.mark.parametrize("k", [2, 5, 100])
def test_in_batch_top_k_equals_its_definition(k: int, logq: bool) -> None:
    # targets with repeats (item 3 twice), negatives that hit targets: every mask is exercised
    n_items, K = 6, 4
    c = SASRecConfig(**dict(SMALL, loss="sampled_ce", n_negatives=K, in_batch_negatives=True, top_k_negatives=k,
                            logq_correction=logq, sample_alpha=0.0))
    train = cycle_sessions(30, n_items=n_items)
    bl = sasrec_train.BatchLoss(SASRecNet(n_items, c), c, torch.device("cpu"), n_items, train, np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    tgt, negs = torch.tensor([3, 1, 3, 5, 2]), torch.tensor([[3, 6, 1, 4]])
    h, pt, pn = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g), torch.randn(K, 8, generator=g)
    got = bl._mixed(h, pt, tgt, (h * pt).sum(1), h @ pn.T, negs, negs == tgt[:, None])
    clicks = np.bincount(train.items, minlength=n_items + 1)[1:] / train.items.size
    q = bl.pop.q  # uniform: sample_alpha = 0
    corr = {i: np.log(5 * clicks[i - 1] + K * q[i - 1]) if logq else 0.0 for i in range(1, n_items + 1)}
    assert got.item() == pytest.approx(_mixed_by_rows(h, pt, tgt, pn, negs, corr, k), rel=1e-5)


def test_a_whole_batch_with_k_above_its_negatives_is_the_plain_loss() -> None:
    train = cycle_sessions(40)
    x, y = sasrec_train.sequence_batch(train, np.arange(16), SMALL["max_len"])
    values = []
    for k in (0, 10_000):
        c = SASRecConfig(**dict(SMALL, dropout=0.0, loss="sampled_ce", n_negatives=8, in_batch_negatives=True,
                                top_k_negatives=k))
        torch.manual_seed(0)
        net = SASRecNet(train.n_items, c)
        net.reset_parameters()
        bl = sasrec_train.BatchLoss(net, c, torch.device("cpu"), train.n_items, train, np.random.default_rng(0))
        values.append(bl(x, y)[0].item())
    assert values[1] == pytest.approx(values[0], rel=1e-6)


def test_without_logq_the_sampled_softmax_scores_raw_logits() -> None:
    bl = sasrec_train.BatchLoss(*_net_and_config(loss="sampled_ce", logq_correction=False, sample_alpha=1.0))
    assert (bl.log_q == 0).all()  # popularity draws, but no candidate's logit is corrected
    bl = sasrec_train.BatchLoss(*_net_and_config(loss="sampled_ce", sample_alpha=1.0))
    assert (bl.log_q[1:] < 0).all()


def _net_and_config(**cfg) -> tuple:
    train = cycle_sessions(30, n_items=6)
    c = SASRecConfig(**dict(SMALL, **cfg))
    return SASRecNet(6, c), c, torch.device("cpu"), 6, train, np.random.default_rng(0)


def test_tron_options_learn_a_deterministic_cycle() -> None:
    m = SASRec(**dict(SMALL, n_blocks=1, n_heads=1, dropout=0.1, lr=0.01, n_epochs=15, loss="sampled_ce", sample_alpha=0.0,
                      n_negatives=8, in_batch_negatives=True, top_k_negatives=4, logq_correction=False))
    m.fit(cycle_sessions(300))
    assert evaluate(m, cycle_sessions(40, seed=1), cutoffs=(1,)).metrics["recall@1"] >= 0.9


@pytest.mark.parametrize("cfg,match", [
    (dict(loss="sampled_ce", top_k_negatives=-1), "top_k_negatives must be >= 0"),
    (dict(loss="gbce", top_k_negatives=10), "top_k_negatives and logq_correction need loss=sampled_ce, got gbce"),
    (dict(loss="ce", logq_correction=False), "top_k_negatives and logq_correction need loss=sampled_ce, got ce"),
])
def test_bad_top_k_config_names_the_parameter(cfg: dict, match: str) -> None:
    with pytest.raises(NextclickError, match=match):
        SASRec(**dict(SMALL, **cfg)).fit(cycle_sessions(20))


def test_presets_realise_the_recipes() -> None:
    g = SASRec.from_preset("gsasrec").config
    assert (g.loss, g.n_negatives, g.gbce_t) == ("gbce", 256, 0.75)
    t = SASRec.from_preset("tron").config
    assert (t.loss, t.sample_alpha, t.in_batch_negatives, t.top_k_negatives, t.logq_correction) == (
        "sampled_ce", 0.0, True, 100, False)
