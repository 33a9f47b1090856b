"""SASRec-specific tests (the shared contract suite in test_contract.py runs on top of these)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nextclick.data.holdout import hold_out_last_clicks
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.models.base import Recommender
from nextclick.models.sasrec import train as sasrec_train
from nextclick.models.sasrec.losses import (
    SoftmaxWorkspace,
    bce_loss,
    ce_loss,
    gbce_beta,
    gbce_loss,
    sampled_ce_loss,
)
from nextclick.models.sasrec.model import SASRec
from nextclick.models.sasrec.net import Block, Layout

N_ITEMS = 30
SMALL = dict(max_len=8, hidden=16, n_blocks=2, n_heads=2, dropout=0.2, batch_size=32, progress=False, seed=0, n_threads=1,
             holdout=0.0)  # fixed epoch counts: nothing held out to stop early on


def cycle_sessions(n_sessions: int, n_items: int = N_ITEMS, seed: int = 0) -> Sessions:
    """Sessions walking the cycle 1 -> 2 -> ... -> n_items -> 1 from random starts, lengths 2..12."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sessions):
        start, length = rng.integers(0, n_items), rng.integers(2, 13)
        out.append([(start + j) % n_items + 1 for j in range(length)])
    return Sessions.from_lists(out, n_items=n_items)


@pytest.fixture(scope="module", params=[("end", False), ("start", True)], ids=["paper-positions", "start-pre_ln"])
def model(request) -> SASRec:
    positions, pre_ln = request.param
    return SASRec(n_epochs=2, positions=positions, pre_ln=pre_ln, **SMALL).fit(cycle_sessions(200))


def hidden(m: SASRec, rows: list[list[int]]) -> list[np.ndarray]:
    """Hidden states of the real positions of each left-padded row (eval mode)."""
    width = max(len(r) for r in rows)
    x = np.array([[0] * (width - len(r)) + r for r in rows], dtype=np.int64)
    m.net_.eval()
    with torch.no_grad():
        h = m.net_(x).numpy()
    bounds = np.cumsum([0] + [len(r) for r in rows])
    return [h[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------------------------- masks
def test_causal_mask_later_clicks_do_not_change_earlier_outputs(model: SASRec) -> None:
    a = [3, 7, 1, 9, 4, 12]
    base = hidden(model, [a])[0]
    for t in range(len(a)):
        b = a[:t] + [20] + a[t + 1 :]  # change click t
        h = hidden(model, [b])[0]
        np.testing.assert_allclose(h[:t], base[:t], rtol=1e-5, atol=1e-6)  # positions before t: untouched
        assert not np.allclose(h[t], base[t])  # position t sees its own click


def test_padding_does_not_change_scores(model: SASRec) -> None:
    s = [5, 6, 7]
    alone = hidden(model, [s])[0]
    # the same row next to longer rows (more left padding) and with explicit padding columns
    mixed = hidden(model, [[1, 2, 3, 4, 5, 6, 7, 8], s, [9]])[1]
    np.testing.assert_allclose(mixed, alone, rtol=1e-5, atol=1e-6)
    ref = model.score_batch([s])
    np.testing.assert_allclose(model.score_batch([[0, 0, 5, 6, 7]]), ref, rtol=1e-5, atol=1e-6)  # 0 = padding
    batch = model.score_batch([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], s, [4]])
    np.testing.assert_allclose(batch[1], ref[0], rtol=1e-5, atol=1e-6)


def test_inference_keeps_the_last_max_len_clicks(model: SASRec) -> None:
    long = list(range(1, 21))  # 20 clicks, max_len = 8
    np.testing.assert_allclose(model.score_batch([long]), model.score_batch([long[-8:]]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("last_only", [False, True])
def test_one_pass_evaluation_equals_prefix_scoring(model: SASRec, last_only: bool) -> None:
    """iter_scores (all positions of a session in one pass, windows past max_len) == score_batch."""
    test = Sessions.from_lists([[4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [3, 9], [7], [2, 3, 4]], n_items=N_ITEMS,
                               last_only=last_only)
    n = 0
    for scores, targets, sess, plen in model.iter_scores(test, batch_size=5):
        want = model.score_batch([test.session(s)[:p] for s, p in zip(sess, plen)])
        np.testing.assert_allclose(scores[:, 1:], want[:, 1:], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(targets, [test.session(s)[p] for s, p in zip(sess, plen)])
        n += len(targets)
    assert n == test.n_predictions()


# ---------------------------------------------------------------------------------------- losses
def test_bce_loss_by_hand() -> None:
    pos, neg = torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0])
    # -log sigma(s+) - log(1 - sigma(s-)) = log(1 + e^-s+) + log(1 + e^s-), averaged over positions
    want = ((math.log(2) + math.log(1 + math.e)) + (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))) / 2
    assert bce_loss(pos, neg).item() == pytest.approx(want, rel=1e-6)


def test_ce_loss_by_hand_ignores_padding_row() -> None:
    E = torch.tensor([[9.0, 9.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)  # row 0 = padding
    h = torch.tensor([[1.0, 2.0], [0.5, 0.0]], requires_grad=True)
    target = torch.tensor([2, 3])
    l1 = [1.0, 2.0, 3.0]  # h0 . E[1:]
    l2 = [0.5, 0.0, 0.5]  # h1 . E[1:]
    want = (-math.log(math.exp(2) / sum(map(math.exp, l1))) - math.log(math.exp(0.5) / sum(map(math.exp, l2)))) / 2
    loss = ce_loss(h, E, target)
    assert loss.item() == pytest.approx(want, rel=1e-6)
    # gradients equal torch's cross-entropy over items 1..V; the padding row gets none
    gh, gE = torch.autograd.grad(loss, (h, E))
    rh, rE = torch.autograd.grad(F.cross_entropy(h @ E[1:].T, target - 1), (h, E))
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gE, rE)
    assert torch.all(gE[0] == 0)


@pytest.mark.parametrize("workspace", [None, "kept", "too-small"])
def test_ce_loss_blocks_match_torch_on_many_rows(workspace: str | None) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(700, 8, generator=g, dtype=torch.float64, requires_grad=True)
    E = torch.randn(5001, 8, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(1, 5001, (700,), generator=g)
    ws = None if workspace is None else SoftmaxWorkspace(max_bytes=1 << 30 if workspace == "kept" else 1 << 10)
    ref = torch.autograd.grad(F.cross_entropy(h @ E[1:].T, t - 1) * 3.0, (h, E))
    for _ in range(2):  # the workspace is reused by the next batch
        ours = torch.autograd.grad(ce_loss(h, E, t, ws) * 3.0, (h, E))
        torch.testing.assert_close(ours, ref)


def test_sampled_ce_loss_by_hand() -> None:
    pos = torch.tensor([1.0])
    neg = torch.tensor([[0.5, 2.0]])
    log_q_pos = torch.tensor([math.log(0.5)])
    log_q_neg = torch.tensor([math.log(0.25), math.log(0.25)])
    hit = torch.tensor([[False, True]])  # the second "negative" is the target itself: masked
    a, b = 1.0 - math.log(0.5), 0.5 - math.log(0.25)
    want = -math.log(math.exp(a) / (math.exp(a) + math.exp(b)))
    assert sampled_ce_loss(pos, neg, log_q_pos, log_q_neg, hit).item() == pytest.approx(want, rel=1e-6)


def test_gbce_by_hand() -> None:
    # alpha = k / (|I| - 1) = 2 / 4; beta = alpha (t (1 - 1/alpha) + 1/alpha)
    assert gbce_beta(2, 5, 0.5) == pytest.approx(0.5 * (0.5 * (1 - 2) + 2))  # 0.75
    assert gbce_beta(2, 5, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(2, 5, 1.0) == pytest.approx(0.5)  # t = 1: beta = alpha
    pos, neg = torch.tensor([0.3]), torch.tensor([[0.2, -1.0]])
    want = -0.75 * math.log(1 / (1 + math.exp(-0.3))) - math.log(1 - 1 / (1 + math.exp(-0.2))) - math.log(
        1 - 1 / (1 + math.exp(1.0)))
    assert gbce_loss(pos, neg, 0.75).item() == pytest.approx(want, rel=1e-6)
    masked = gbce_loss(pos, neg, 0.75, hit=torch.tensor([[False, True]])).item()
    assert masked == pytest.approx(want + math.log(1 - 1 / (1 + math.exp(1.0))), rel=1e-6)



# ---------------------------------------------------------------------------------------- batches and negatives
def test_sequence_batch_aligns_inputs_and_next_clicks() -> None:
    train = Sessions.from_lists([[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11, 12]], n_items=12)
    x, y = sasrec_train.sequence_batch(train, np.array([0, 1]), max_len=4)
    assert x.tolist() == [[1, 2, 3], [0, 0, 5]] and y.tolist() == [[2, 3, 4], [0, 0, 6]]  # width = longest input
    x, y = sasrec_train.sequence_batch(train, np.array([2]), max_len=3)  # the last T inputs and their targets
    assert x.tolist() == [[9, 10, 11]] and y.tolist() == [[10, 11, 12]]


def _batch_loss(**cfg) -> sasrec_train.BatchLoss:
    m = SASRec(**dict(SMALL, **cfg))
    m.n_items_ = 6
    m._build(fit=True)
    train = Sessions.from_lists([[1, 1, 1, 2], [3, 4]], n_items=6)
    return sasrec_train.BatchLoss(m.net_, m.config, m.device_, 6, train, np.random.default_rng(0))


def test_bce_negatives_avoid_the_rows_window() -> None:
    x = np.array([[0, 1, 2], [3, 4, 5]])
    y = np.array([[0, 2, 3], [4, 5, 6]])
    neg = _batch_loss(loss="bce").bce_negatives(x, y)
    assert set(neg[0].tolist()) <= {4, 5, 6} and (neg[1] <= 2).all() and (neg[1] >= 1).all()
    neg = _batch_loss(loss="bce", bce_exclude_seen=False).bce_negatives(np.tile(x, (50, 1)), np.tile(y, (50, 1)))
    assert set(neg.ravel().tolist()) == {1, 2, 3, 4, 5, 6}  # from all items


def test_sampled_ce_draws_from_popularity_with_its_log_q() -> None:
    bl = _batch_loss(loss="sampled_ce", sample_alpha=1.0)
    q = np.array([3, 1, 1, 1, 1, 1]) / 8.0  # item 1 clicked 3 times; unclicked items count once
    np.testing.assert_allclose(bl.log_q.numpy(), np.concatenate([[0.0], np.log(q)]).astype(np.float32))
    d = bl.sample((40_000,))
    np.testing.assert_allclose(np.bincount(d, minlength=7)[1:] / d.size, q, atol=0.01)


# ---------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("loss,sharing", [("bce", "auto"), ("ce", "auto"), ("sampled_ce", "auto"),
                                          ("sampled_ce", "sequence"), ("gbce", "auto"), ("gbce", "batch")])
def test_learns_a_deterministic_cycle(loss: str, sharing: str) -> None:
    # bce_exclude_seen=False: the paper's sampler never uses the session's own items as negatives,
    # so it never learns to rank them below the target, which full ranking counts
    cfg = dict(SMALL, n_blocks=1, n_heads=1, dropout=0.1, lr=0.01, n_epochs=15, loss=loss, n_negatives=8,
               bce_exclude_seen=False, neg_sharing=sharing)
    m = SASRec(**cfg).fit(cycle_sessions(300))
    r = evaluate(m, cycle_sessions(40, seed=1), cutoffs=(1, 5)).metrics
    if loss == "gbce":  # with 8 of 30 items as negatives gBCE ranks the target top-5 but sharpens slowly
        assert r["recall@5"] >= 0.95 and r["recall@1"] >= 0.4, r
    else:
        assert r["recall@1"] >= 0.9, f"{loss}: Recall@1 {r['recall@1']:.3f} on a deterministic cycle"


def test_learns_to_copy_with_attention() -> None:
    """Sessions a b c a b c: after the second a, the next item is b -- not a function of the last
    click (a's successor differs in every session), only of what attention finds earlier on."""
    rng = np.random.default_rng(0)

    def data(n: int) -> Sessions:
        return Sessions.from_lists([list(rng.choice(N_ITEMS, 3, replace=False) + 1) * 2 for _ in range(n)], n_items=N_ITEMS)

    m = SASRec(**dict(SMALL, n_blocks=2, n_heads=1, dropout=0.0, lr=0.01, n_epochs=30, batch_size=64)).fit(data(400))
    test = data(100)
    hits = []
    for scores, targets, _sess, plen in m.iter_scores(test):
        keep = plen >= 4  # predictions that need the first half of the session
        hits.append(scores[keep].argmax(1) == targets[keep])
    assert np.concatenate(hits).mean() >= 0.9


def test_nan_loss_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sasrec_train, "ce_loss", lambda h, E, target, *rest: (h * float("nan")).sum())
    with pytest.raises(NextclickError, match="ce loss is nan at epoch 1, batch 1"):
        SASRec(**dict(SMALL, loss="ce", n_epochs=1)).fit(cycle_sessions(200))


def test_fit_is_deterministic_and_validation_restores_best_weights() -> None:
    train, valid = cycle_sessions(200), cycle_sessions(30, seed=2)
    cfg = dict(SMALL, n_epochs=3, eval_every=1, patience=0, valid_metric="mrr@20", valid_negatives=10)
    a = SASRec(**cfg).fit(train, valid)
    b = SASRec(**cfg).fit(train, valid)
    for k, v in a._state().items():
        np.testing.assert_array_equal(v, b._state()[k])
    assert [r["epoch"] for r in a.history_] == [1, 2, 3] and all("valid" in r for r in a.history_)
    best = max(a.history_, key=lambda r: r["valid"]["mrr@20"])
    assert a.best_epoch_ == best["epoch"]
    again = evaluate(a, valid, cutoffs=(10, 20)).metrics["mrr@20"]
    assert again == pytest.approx(best["valid"]["mrr@20"], abs=1e-6)


def test_bad_config_names_the_parameter() -> None:
    with pytest.raises(NextclickError, match="loss"):
        SASRec(loss="hinge", **SMALL).fit(cycle_sessions(20))
    with pytest.raises(NextclickError, match="n_heads"):
        SASRec(**dict(SMALL, hidden=10, n_heads=3)).fit(cycle_sessions(20))
    with pytest.raises(NextclickError, match="valid_metric 'auc'"):
        SASRec(**dict(SMALL, valid_metric="auc")).fit(cycle_sessions(20), cycle_sessions(5))


# ---------------------------------------------------------------------------------------- attention
def test_attention_rows_sum_to_one_over_visible_clicks(model: SASRec) -> None:
    s = [3, 4, 5, 6, 7]
    mats = model.attention(s)
    assert len(mats) == model.config.n_blocks
    for w in mats:
        assert w.shape == (5, 5)
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
        assert np.all(np.triu(w, 1) == 0)  # no weight on later clicks
    heads = model.attention(s, per_head=True)
    assert heads[0].shape == (model.config.n_heads, 5, 5)
    np.testing.assert_allclose(heads[0].mean(0), mats[0], rtol=1e-6)
    # a long session keeps its last max_len clicks
    assert model.attention(list(range(1, 21)))[0].shape == (8, 8)


def test_click_weights_for_a_live_session(model: SASRec) -> None:
    ids, w = model.click_weights([3, 4, 999, 5])  # 999 is unknown: ignored
    assert ids.tolist() == [3, 4, 5] and w.shape == (3,)
    assert w.sum() == pytest.approx(1.0, rel=1e-5) and np.all(w >= 0)
    ids, w = model.click_weights([999])
    assert ids.size == 0 and w.size == 0


# ---------------------------------------------------------------------------------------- artifacts
def test_save_load_round_trip_gives_identical_scores(model: SASRec, tmp_path: Path) -> None:
    loaded = Recommender.load(model.save(tmp_path / "m"))
    assert isinstance(loaded, SASRec) and loaded.config == model.config
    sessions = [[1, 2, 3], [7], list(range(1, 25))]
    np.testing.assert_array_equal(loaded.score_batch(sessions), model.score_batch(sessions))
    for a, b in zip(loaded.attention([4, 5, 6]), model.attention([4, 5, 6])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("positions,pre_ln", [("start", False), ("end", False), ("start", True)])
def test_live_query_dense_forward_equals_the_packed_forward(positions: str, pre_ln: bool) -> None:
    # the service's query (dense (B, t) attention) and training/evaluation's packed forward agree
    m = SASRec(**dict(SMALL, n_epochs=1, positions=positions, pre_ln=pre_ln)).fit(cycle_sessions(60))
    rng = np.random.default_rng(3)
    clicks = [rng.integers(1, m.n_items_ + 1, size=n) for n in (1, 3, 8, 12, 5)]
    q = m.live().queries(None, clicks)
    for r, c in enumerate(clicks):
        ref = m._hidden(c[-m.config.max_len :][None, :], np.ones(1, dtype=np.int64))[0]
        np.testing.assert_allclose(q[r].numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    scores = m.score_batch(clicks)  # the evaluation path, through the output matrix
    W, _ = m.live().output_layer()
    np.testing.assert_allclose((q @ W.T).numpy()[:, 1:], scores[:, 1:], rtol=1e-4, atol=1e-4)


class _Zero(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_paper_placement_drops_attention_weights_not_the_attention_output() -> None:
    # the reference code: q = LN(x); x = q + Attn(q, x) with dropout on the attention WEIGHTS only.
    # With the FFN's dropout zeroing everything and no weight dropout, a training-mode block must
    # return LN(q + Attn), which is what the evaluation-mode block with a zero FFN returns.
    torch.manual_seed(0)
    block = Block(8, 1, 0.5, pre_ln=False)
    layout = Layout.build(np.array([2, 3]), 4, torch.device("cpu"))
    x = torch.randn(5, 8)
    block.train()
    block.attn_drop.p = 0.0
    block.drop = _Zero()
    trained = block(x, layout)
    block.eval()
    with torch.no_grad():
        block.ff2.weight.zero_()
        block.ff2.bias.zero_()
    torch.testing.assert_close(trained, block(x, layout))
    assert not torch.allclose(trained, block.ln_ffn(block.ln_attn(x)))  # the attention output was kept


# ---------------------------------------------------------------------------------------- devices
def test_device_errors_name_the_parameter() -> None:
    with pytest.raises(NextclickError, match="device must be a torch device.*'gpu'"):
        SASRec(**dict(SMALL, n_epochs=1, device="gpu")).fit(cycle_sessions(50))
    if not torch.cuda.is_available():
        with pytest.raises(NextclickError, match="device 'cuda'.*no such CUDA device.*device=cpu"):
            SASRec(**dict(SMALL, n_epochs=1, device="cuda")).fit(cycle_sessions(50))


def test_an_artifact_that_names_a_gpu_loads_where_there_is_none(model: SASRec, tmp_path: Path) -> None:
    # trained on a GPU, served on a CPU machine: the artifact's arrays load on the CPU
    path = model.save(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["device"] = "cuda:7"  # a device this machine cannot have
    (path / "config.json").write_text(json.dumps(cfg))
    loaded = Recommender.load(path)
    assert isinstance(loaded, SASRec) and loaded.config.device == "cuda:7"
    assert loaded.device_ == torch.device("cpu") or torch.cuda.device_count() > 7
    sessions = [[1, 2, 3], [7], list(range(1, 25))]
    np.testing.assert_array_equal(loaded.score_batch(sessions), model.score_batch(sessions))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trains_on_a_gpu_and_its_artifact_scores_the_same_on_the_cpu(tmp_path: Path) -> None:
    cfg = dict(SMALL, n_blocks=1, n_heads=1, dropout=0.1, lr=0.01, n_epochs=15, loss="ce", bce_exclude_seen=False)
    gpu = SASRec(**cfg, device="cuda").fit(cycle_sessions(300))
    assert gpu.device_.type == "cuda" and next(gpu.net_.parameters()).is_cuda
    r = evaluate(gpu, cycle_sessions(40, seed=1), cutoffs=(1, 5)).metrics
    assert r["recall@1"] >= 0.9, r  # what the CPU learns in test_learns_a_deterministic_cycle
    path = gpu.save(tmp_path / "m")
    cfg_file = path / "config.json"
    art = json.loads(cfg_file.read_text())
    art["config"]["device"] = "cpu"
    cfg_file.write_text(json.dumps(art))
    cpu = Recommender.load(path)
    assert cpu.device_ == torch.device("cpu")
    sessions = [[1, 2, 3], [7], list(range(1, 25))]
    np.testing.assert_allclose(cpu.score_batch(sessions), gpu.score_batch(sessions), rtol=1e-4, atol=1e-4)
    q_gpu, q_cpu = (m.live().queries(None, [np.array([3, 4])]) for m in (gpu, cpu))
    np.testing.assert_allclose(q_cpu.numpy(), q_gpu.numpy(), rtol=1e-4, atol=1e-4)


def test_without_validation_data_it_holds_out_last_clicks_to_stop_early() -> None:
    train = cycle_sessions(300)
    cfg = dict(SMALL, n_blocks=1, dropout=0.1, lr=0.01, n_epochs=40, patience=2, valid_metric="mrr@20", holdout=0.1)
    m = SASRec(**cfg).fit(train)
    held = m.training_["held_out"]["sequences"]
    assert held == round(0.1 * int((train.lengths >= 3).sum()))
    hist = m.history_
    assert all("valid" in r for r in hist) and len(hist) < 40  # a cycle is learnt long before 40 epochs
    assert m.best_epoch_ == max(hist, key=lambda r: r["valid"]["mrr@20"])["epoch"] == m.training_["held_out"]["best_epoch"]
    # the weights are the best epoch's: scoring the held-out clicks again gives its figure
    fit, valid = hold_out_last_clicks(train, 0.1, seed=0)
    assert evaluate(m, valid, cutoffs=(10, 20)).metrics["mrr@20"] == pytest.approx(hist[m.best_epoch_ - 1]["valid"]["mrr@20"], abs=1e-6)
    fixed = SASRec(**dict(cfg, holdout=0.0, n_epochs=3)).fit(train)  # no hold-out: every epoch asked for
    assert [r["epoch"] for r in fixed.history_] == [1, 2, 3] and "held_out" not in fixed.training_
