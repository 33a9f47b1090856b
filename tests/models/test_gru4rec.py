"""GRU4Rec-specific tests: losses, negative sampling, the hand-written backward pass, learning,
step-wise inference and artifacts. Everything runs on tiny data in a few seconds."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.data.sampling import alias_table  # noqa: E402
from nextclick.data.sessions import Sessions  # noqa: E402
from nextclick.errors import NextclickError  # noqa: E402
from nextclick.evaluate import evaluate  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.base import Recommender  # noqa: E402
from nextclick.models.gru4rec.losses import bpr_max_loss_grad, xe_loss_grad  # noqa: E402
from nextclick.models.gru4rec.model import GRU4Rec, GRU4RecConfig  # noqa: E402
from nextclick.models.gru4rec.net import Net  # noqa: E402
from nextclick.models.gru4rec.sampling import SampleStore  # noqa: E402
from nextclick.models.gru4rec.train import Trainer  # noqa: E402

MODES = {
    "constrained": dict(constrained_embedding=True),
    "embedding": dict(constrained_embedding=False, embedding=16),
    "onehot": dict(constrained_embedding=False, embedding=0),
}


# ------------------------------------------------------------------------------ references
def xe_reference(R: torch.Tensor, lq: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy over softmax, written the plain way (autograd differentiates it)."""
    if lq is not None:
        R = R - lq
    X = torch.softmax(R, dim=1)
    return -torch.log(torch.diagonal(X) + 1e-24).sum()


def bpr_max_reference(R: torch.Tensor, bpreg: float, elu: float) -> torch.Tensor:
    """BPR-max as in the CIKM 2018 paper: softmax over the negatives (target column masked)."""
    O = torch.nn.functional.elu(R, elu) if elu > 0 else R
    hm = 1.0 - torch.eye(*O.shape, dtype=O.dtype)
    X = O * hm
    e = torch.exp(X - X.max(dim=1, keepdim=True).values) * hm
    s = e / e.sum(dim=1, keepdim=True)
    t = torch.diagonal(O)[:, None]
    return (-torch.log((torch.sigmoid(t - O) * s).sum(1) + 1e-24) + bpreg * (O**2 * s).sum(1)).sum()


# ------------------------------------------------------------------------------ losses
def test_xe_loss_hand_computed() -> None:
    R = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]
    lq = [0.2, 0.0, 0.5]
    expected = 0.0
    for i, row in enumerate(R):
        z = [r - q for r, q in zip(row, lq)]
        expected += -(z[i] - math.log(sum(math.exp(v) for v in z)))
    loss, grad = xe_loss_grad(torch.tensor(R), torch.tensor(lq), 0.5)
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-6)
    Rt = torch.tensor(R, dtype=torch.float64, requires_grad=True)
    (0.5 * xe_reference(Rt, torch.tensor(lq, dtype=torch.float64))).backward()
    np.testing.assert_allclose(grad.numpy(), Rt.grad.numpy(), atol=1e-6)


def test_bpr_max_loss_hand_computed() -> None:
    R = [[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]
    bpreg, alpha = 1.5, 0.5
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    elu = lambda v: v if v > 0 else alpha * (math.exp(v) - 1.0)  # noqa: E731
    expected = 0.0
    for i, row in enumerate(R):
        o = [elu(v) for v in row]
        neg = [j for j in range(len(o)) if j != i]
        den = sum(math.exp(o[j]) for j in neg)
        s = {j: math.exp(o[j]) / den for j in neg}
        expected += -math.log(sum(s[j] * sig(o[i] - o[j]) for j in neg)) + bpreg * sum(s[j] * o[j] ** 2 for j in neg)
    loss, grad = bpr_max_loss_grad(torch.tensor(R), bpreg, alpha, 0.25)
    assert loss.item() == pytest.approx(0.25 * expected, rel=1e-6)
    Rt = torch.tensor(R, dtype=torch.float64, requires_grad=True)
    (0.25 * bpr_max_reference(Rt, bpreg, alpha)).backward()
    np.testing.assert_allclose(grad.numpy(), Rt.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("elu", [0.0, 0.5, 2.0])
def test_loss_gradients_match_autograd_on_random_scores(elu: float) -> None:
    g = torch.Generator().manual_seed(0)
    R = torch.randn(7, 20, generator=g, dtype=torch.float64) * 2
    lq = torch.randn(20, generator=g, dtype=torch.float64)
    for ours, ref in (
        (lambda r: xe_loss_grad(r, lq.clone(), 0.1), lambda r: 0.1 * xe_reference(r, lq)),
        (lambda r: bpr_max_loss_grad(r, 1.95, elu, 0.1), lambda r: 0.1 * bpr_max_reference(r, 1.95, elu)),
    ):
        loss, grad = ours(R.clone())
        Rt = R.clone().requires_grad_(True)
        ref_loss = ref(Rt)
        ref_loss.backward()
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-9)
        np.testing.assert_allclose(grad.numpy(), Rt.grad.numpy(), atol=1e-10)


@pytest.mark.parametrize("elu", [0.0, 0.5])
def test_bpr_max_float32_equals_float64_at_training_size(elu: float) -> None:
    # the compiled float32 loop (vectorised row sums) at a training step's size, with negatives'
    # weights, against the same function in float64 (itself checked against autograd above)
    g = torch.Generator().manual_seed(3)
    R = torch.randn(80, 1500, generator=g, dtype=torch.float64) * 3
    w = torch.cat((torch.ones(80, dtype=torch.float64), torch.randint(1, 5, (1420,), generator=g).double()))
    l64, g64 = bpr_max_loss_grad(R.clone(), 1.95, elu, 1 / 80, weights=w)
    l32, g32 = bpr_max_loss_grad(R.float(), 1.95, elu, 1 / 80, weights=w.float())
    assert l32.dtype == torch.float32 and g32.dtype == torch.float32
    assert l32.item() == pytest.approx(l64.item(), rel=1e-5)
    np.testing.assert_allclose(g32.numpy(), g64.numpy(), rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gap", [10.0, 95.0, 200.0])
def test_bpr_max_when_the_target_leads_every_negative_by_far(gap: float, dtype: torch.dtype) -> None:
    # the softmax over the negatives is normalised by their own maximum, so it stays exact however
    # far the target's score leads (normalised by the row's maximum, every negative's weight
    # underflowed to the same clamped value: a uniform softmax)
    R = torch.tensor([[gap, 0.0, -1.0, 0.5], [0.3, -gap, 2.0, 0.1]], dtype=torch.float64)
    loss, grad = bpr_max_loss_grad(R.to(dtype), 0.7, 0.5, 0.5)
    Rt = R.clone().requires_grad_(True)
    ref = 0.5 * bpr_max_reference(Rt, 0.7, 0.5)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(grad.double().numpy(), Rt.grad.numpy(), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------ negatives
def test_alias_table_is_exact() -> None:
    w = np.array([0.0, 5.0, 1.0, 0.5, 3.5, 0.0, 10.0])
    prob, alias = alias_table(w)
    n = w.size
    implied = prob / n
    np.add.at(implied, alias, (1.0 - prob) / n)
    np.testing.assert_allclose(implied, w / w.sum(), atol=1e-12)


def test_sampled_negatives_follow_popularity_power_alpha() -> None:
    counts = np.array([0, 1, 2, 5, 10, 50, 200, 1000], dtype=np.float64)
    alpha = 0.75
    store = SampleStore(counts**alpha, n_sample=1000, size=200_000, rng=np.random.default_rng(3))
    draws = torch.cat([store.next() for _ in range(400)]).numpy()  # refills the store twice
    assert store.refills == 2
    freq = np.bincount(draws, minlength=counts.size) / draws.size
    expected = counts**alpha / (counts**alpha).sum()
    assert freq[0] == 0.0  # the padding index is never drawn
    # binomial standard error is below 1.2e-3 for every item here
    np.testing.assert_allclose(freq, expected, atol=5e-3)


# ------------------------------------------------------------------------------ backward pass
def _reference_gradients(net: Net, cfg, x, y, neg, H, scale: float, m_e=None, masks=None):
    """Autograd through the GRU4Rec equations with the same weights (and the same dropout masks:
    ``m_e`` on the input rows, ``masks[l]`` on layer ``l``'s output, when given)."""
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in net.arrays().items()}
    inp = None
    if net.mode == "constrained":
        inp = P["item_out"][x]
    elif net.mode == "embedding":
        inp = P["item_in"][x]
    if m_e is not None and inp is not None:
        inp = inp * torch.from_numpy(m_e).double()
    for l, Dl in enumerate(cfg.layers):
        if inp is None:
            gx = P["gru0.w_item"][x] + P["gru0.b_ih"]
        else:
            gx = inp @ P[f"gru{l}.w_ih"].T + P[f"gru{l}.b_ih"]
        Hp = H[l].double()
        gh = Hp @ P[f"gru{l}.w_hh"].T + P[f"gru{l}.b_hh"]
        r = torch.sigmoid(gx[:, :Dl] + gh[:, :Dl])
        z = torch.sigmoid(gx[:, Dl : 2 * Dl] + gh[:, Dl : 2 * Dl])
        n = torch.tanh(gx[:, 2 * Dl :] + r * gh[:, 2 * Dl :])
        inp = (1 - z) * Hp + z * n
        if masks is not None and masks[l] is not None:
            inp = inp * torch.from_numpy(masks[l]).double()
    yy = torch.cat([y, neg])
    R = inp @ P["item_out"][yy].T + P["item_bias"][yy]
    if cfg.loss == "cross-entropy":
        lp = torch.log(torch.tensor(net_counts, dtype=torch.float64))
        lq = cfg.logq * torch.cat([lp[y], cfg.sample_alpha * lp[neg]])
        loss = scale * xe_reference(R, lq)
    else:
        loss = scale * bpr_max_reference(R, cfg.bpreg, cfg.elu_param)
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in P.items()}


net_counts = np.array([0.0] + [float(3 + (i * 7) % 11) for i in range(12)])  # popularity of items 1..12


@pytest.mark.parametrize("parts", [1, 3])  # the step's phases in one block of rows, or three (uneven)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("loss,logq", [("cross-entropy", 1.0), ("cross-entropy", 0.0), ("bpr-max", 0.0)])
def test_hand_written_backward_matches_autograd(mode: str, loss: str, logq: float, parts: int) -> None:
    # the negatives repeat an item (9) and hit a target (2): the reference scores every drawn
    # column, the model each distinct item once with its count folded into the softmax
    cfg = GRU4Rec.Config(
        layers=(6, 5), loss=loss, batch_size=4, logq=logq, sample_alpha=0.5, bpreg=0.7, elu_param=0.5, **MODES[mode]
    )
    if mode == "embedding":
        cfg.embedding = 3
    n_items = 12
    net = Net.create(cfg, n_items, np.random.default_rng(0))
    net.dense.add_(torch.randn(net.dense.shape, generator=torch.Generator().manual_seed(1)) * 0.3)  # non-zero biases
    trainer = Trainer(net, cfg, net_counts, parts=parts)
    x = torch.tensor([1, 5, 7, 5])
    y = torch.tensor([2, 7, 3, 12])
    neg = torch.tensor([4, 2, 9, 9, 11])
    H = [torch.randn(4, d, generator=torch.Generator().manual_seed(2)) * 0.5 for d in cfg.layers]
    ref_loss, ref = _reference_gradients(net, cfg, x, y, neg, [h.clone() for h in H], 1 / 4)
    loss, rows = trainer.gradients(x, y, neg, [h.clone() for h in H])
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    for name, vs in net.grads.items():
        for l, g in enumerate(vs):
            if g is not None:
                np.testing.assert_allclose(g.numpy(), ref[f"gru{l}.{name}"], atol=1e-5, err_msg=f"gru{l}.{name}")
    dense = {id(net.out): torch.zeros_like(net.out)}
    for p in (net.emb, net.wx):
        if p is not None:
            dense[id(p)] = torch.zeros_like(p)
    for p, idx, g in rows:
        dense[id(p)].index_add_(0, idx, g)
    D = cfg.layers[-1]
    np.testing.assert_allclose(dense[id(net.out)][:, :D].numpy(), ref["item_out"], atol=1e-5)
    np.testing.assert_allclose(dense[id(net.out)][:, D].numpy(), ref["item_bias"], atol=1e-5)
    if net.emb is not None:
        np.testing.assert_allclose(dense[id(net.emb)].numpy(), ref["item_in"], atol=1e-5)
    if net.wx is not None:
        np.testing.assert_allclose(dense[id(net.wx)].numpy(), ref["gru0.w_item"], atol=1e-5)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("parts", [1, 2])
def test_backward_with_dropout_matches_autograd(mode: str, parts: int) -> None:
    # dropout on the input rows (or the one-hot layer's output) and on every layer's output, the
    # masks drawn by the trainer; the step's phases in one block or split in two
    cfg = GRU4Rec.Config(
        layers=(6, 5), loss="bpr-max", batch_size=5, dropout_p_embed=0.4, dropout_p_hidden=0.3, bpreg=0.7, **MODES[mode]
    )
    if mode == "embedding":
        cfg.embedding = 3
    net = Net.create(cfg, 12, np.random.default_rng(0))
    net.dense.add_(torch.randn(net.dense.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    trainer = Trainer(net, cfg, net_counts, parts=parts)
    x, y, neg = torch.tensor([1, 5, 7, 5, 3]), torch.tensor([2, 7, 3, 12, 1]), torch.tensor([4, 2, 9, 9, 11])
    H = [torch.randn(5, d, generator=torch.Generator().manual_seed(2)) * 0.5 for d in cfg.layers]
    f = trainer.forward(x, y, neg, [h.clone() for h in H])
    masks = [c.mask if c.mask.size else None for c in f.cache]
    assert all(m is not None for m in masks) and ((masks[0] == 0).any() or (masks[1] == 0).any())
    if mode != "onehot":
        assert f.m_e is not None and set(np.unique(f.m_e)) <= {0.0, np.float32(1 / 0.6)}
    dR, dh = np.empty((5, f.y_all.numel()), np.float32), np.empty((5, 6), np.float32)
    loss = trainer.loss(f, dR, dh)
    g_out, rows, d_in = trainer.backward(f)
    ref_loss, ref = _reference_gradients(net, cfg, x, y, neg, [h.clone() for h in H], 1 / 5, f.m_e, masks)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name, vs in net.grads.items():
        for l, g in enumerate(vs):
            if g is not None:
                np.testing.assert_allclose(g.numpy(), ref[f"gru{l}.{name}"], atol=1e-5, err_msg=f"gru{l}.{name}")
    out = np.zeros_like(ref["item_out"])
    np.add.at(out, f.y_all.numpy(), g_out[:, :5])
    if d_in is not None:
        np.add.at(out, x.numpy(), d_in)
    np.testing.assert_allclose(out, ref["item_out"], atol=1e-5)
    for p, idx, g in rows:
        want = ref["item_in"] if p is net.emb else ref["gru0.w_item"]
        got = np.zeros_like(want)
        np.add.at(got, idx.numpy(), g)
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("loss,logq", [("cross-entropy", 1.0), ("cross-entropy", 0.0), ("bpr-max", 0.0)])
@pytest.mark.parametrize("n_draws", [5, 40])  # 200 items: a sort of the draws (5) or a pass over the counters (40)
def test_output_columns_fold_repeated_negatives(loss: str, logq: float, n_draws: int) -> None:
    counts = np.arange(201, dtype=np.float64)
    cfg = GRU4Rec.Config(layers=(4,), loss=loss, logq=logq, sample_alpha=0.5)
    trainer = Trainer(Net.create(cfg, 200, np.random.default_rng(0)), cfg, counts)
    y = torch.tensor([7, 3, 7])
    neg = torch.from_numpy(np.random.default_rng(1).integers(1, 12, n_draws).astype(np.int32))
    y_all, lq, w = trainer._columns(y, neg)
    u, c = np.unique(neg.numpy(), return_counts=True)
    assert y_all.tolist() == [7, 3, 7] + u.tolist()
    if loss == "bpr-max":
        assert lq is None and w.tolist() == [1.0, 1.0, 1.0] + c.astype(float).tolist()
    else:
        want = np.concatenate([logq * np.log(counts[[7, 3, 7]]), logq * 0.5 * np.log(counts[u]) - np.log(c)])
        assert w is None
        np.testing.assert_allclose(lq.numpy(), want, rtol=1e-6, atol=1e-6)
    assert not trainer._counts.any() if trainer._counts is not None else True  # the counters are left zero


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_one_training_step_lowers_the_loss(loss: str) -> None:
    cfg = GRU4Rec.Config(layers=(8,), loss=loss, batch_size=3, learning_rate=0.1, n_sample=4)
    net = Net.create(cfg, 10, np.random.default_rng(0))
    trainer = Trainer(net, cfg, np.array([0.0] + [1.0] * 10))
    x, y, neg = torch.tensor([1, 4, 7]), torch.tensor([2, 5, 8]), torch.tensor([3, 6, 9, 10])
    H0 = [torch.zeros(3, 8)]
    before = trainer.step(x, y, neg, [h.clone() for h in H0])  # loss before its update
    after = trainer.gradients(x, y, neg, [h.clone() for h in H0])[0].item()
    assert after < before


# ------------------------------------------------------------------------------ learning
def _small(**kw) -> GRU4Rec:
    base = dict(layers=(32,), batch_size=8, n_sample=8, learning_rate=0.1, n_epochs=25, sample_alpha=0.5, seed=1)
    base.update(kw)
    return GRU4Rec(GRU4Rec.Config(**base))


@pytest.mark.parametrize(
    "kw",
    [
        dict(loss="cross-entropy", logq=1.0, **MODES["constrained"]),
        dict(loss="cross-entropy", **MODES["embedding"]),
        dict(loss="cross-entropy", **MODES["onehot"]),
        dict(loss="bpr-max", bpreg=1.0, elu_param=0.5, momentum=0.3, **MODES["constrained"]),
        dict(loss="bpr-max", layers=(32, 24), dropout_p_hidden=0.1, dropout_p_embed=0.1, **MODES["embedding"]),
    ],
    ids=["xe-constrained", "xe-embedding", "xe-onehot", "bprmax-constrained", "bprmax-2layers"],
)
def test_learns_a_deterministic_transition_pattern(chain_data, kw) -> None:
    model = _small(**kw).fit(chain_data.train)
    res = evaluate(model, chain_data.test)
    assert res.metrics["recall@1"] >= 0.95, res.metrics
    # the same through the public API, in shop ids
    prefixes, targets = chain_data.test_prefixes()
    items, _ = model.recommend_batch(prefixes, k=1)
    assert np.mean(items[:, 0] == np.array(targets)) >= 0.95


def _fit_loss(train) -> float:  # a module-level function: multiprocessing pickles it by name
    return _small(n_epochs=1, loss="bpr-max").fit(train).epoch_losses_[-1]


def test_two_threads_train_as_one(chain_data) -> None:
    # the phases split in two row blocks and two tasks give the one-block result up to rounding
    one = _small(n_epochs=2, dropout_p_hidden=0.2, n_threads=1).fit(chain_data.train)
    two = _small(n_epochs=2, dropout_p_hidden=0.2, n_threads=2).fit(chain_data.train)
    np.testing.assert_allclose(two.epoch_losses_, one.epoch_losses_, rtol=1e-4)


def test_one_thread_fits_are_fork_and_thread_safe(chain_data) -> None:
    # with n_threads=1 the serial phases never start numba's thread pool: a process that trained
    # can fork a child that trains (GNU OpenMP aborts such a child), and two Python threads can
    # fit at once (numba's workqueue pool aborts on concurrent use)
    import multiprocessing
    from concurrent.futures import ThreadPoolExecutor

    want = _fit_loss(chain_data.train)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_fit_loss, (chain_data.train,)).get(timeout=120)
    assert got == pytest.approx(want, rel=1e-6)
    with ThreadPoolExecutor(2) as ex:
        both = list(ex.map(_fit_loss, [chain_data.train] * 2))
    assert both == pytest.approx([want, want], rel=1e-6)


@pytest.fixture(scope="module")
def fitted(chain_data) -> GRU4Rec:
    return _small(layers=(16, 12), n_epochs=3, dropout_p_hidden=0.2, **MODES["constrained"]).fit(chain_data.train)


def test_live_steps_equal_whole_session_inference(fitted: GRU4Rec, chain_data) -> None:
    live = fitted.live()
    sessions = chain_data.test
    got, want = [], []
    for s in range(sessions.n_sessions):
        items = sessions.session(s)
        state = live.start(1)
        for t, item in enumerate(items):
            state = live.advance(state, np.array([item]))
            got.append(live.scores(state, [items[: t + 1]])[0])
            want.append(fitted.score_batch([items[: t + 1]])[0])
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-5)
    # several live sessions at once (the torch step), and the query of the output layer
    first = np.array([sessions.session(s)[0] for s in range(sessions.n_sessions)])
    st = live.advance(None, first)
    clicks = [[i] for i in first]
    np.testing.assert_allclose(live.scores(st, clicks), fitted.score_batch(clicks), rtol=1e-5, atol=1e-5)
    W, b = live.output_layer()
    np.testing.assert_allclose((live.queries(st, clicks) @ W.T + b).numpy()[:, 1:], fitted.score_batch(clicks)[:, 1:], rtol=1e-5, atol=1e-5)
    # an unknown item (index 0) leaves the state unchanged
    np.testing.assert_array_equal(live.advance(st, np.zeros(first.size, dtype=np.int64)), st)
    with pytest.raises(NextclickError, match="item indices"):
        live.advance(st[:1], np.array([fitted.n_items_ + 1]))


def test_iter_scores_equals_prefix_scoring(fitted: GRU4Rec, chain_data) -> None:
    sessions = chain_data.test
    rows = list(fitted.iter_scores(sessions, batch_size=3))
    scores = np.concatenate([r[0] for r in rows])
    sess = np.concatenate([r[2] for r in rows])
    plen = np.concatenate([r[3] for r in rows])
    ref = np.concatenate([s for s, *_ in Recommender.iter_scores(fitted, sessions, batch_size=5)])
    ref_sess, ref_plen, _ = sessions.prefixes()
    np.testing.assert_array_equal(sess, ref_sess)
    np.testing.assert_array_equal(plen, ref_plen)
    np.testing.assert_allclose(scores, ref, rtol=1e-5, atol=1e-5)
    # leave-one-out data: only the last position of each sequence
    loo = Sessions(sessions.items, sessions.offsets, sessions.n_items, last_only=True)
    last = np.concatenate([r[0] for r in fitted.iter_scores(loo)])
    np.testing.assert_allclose(last, ref[np.r_[ref_plen[1:] <= ref_plen[:-1], True]], rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_gives_identical_scores(fitted: GRU4Rec, chain_data, tmp_path) -> None:
    fitted.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, GRU4Rec) and loaded.config == fitted.config
    a = np.concatenate([s for s, *_ in fitted.iter_scores(chain_data.test)])
    b = np.concatenate([s for s, *_ in loaded.iter_scores(chain_data.test)])
    np.testing.assert_array_equal(a, b)
    assert (
        fitted.recommend(chain_data.test_prefixes()[0][0], k=5)[0].tolist()
        == loaded.recommend(chain_data.test_prefixes()[0][0], k=5)[0].tolist()
    )


def test_training_is_deterministic_given_the_seed(chain_data) -> None:
    kw = dict(n_epochs=2, dropout_p_embed=0.2, momentum=0.2, session_order="random")
    a = _small(**kw).fit(chain_data.train)._state()
    b = _small(**kw).fit(chain_data.train)._state()
    c = _small(seed=7, **kw).fit(chain_data.train)._state()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["item_out"], c["item_out"])


def test_validating_during_training_changes_neither_weights_nor_scores(chain_data) -> None:
    """Each epoch's validation scores with a copy of the output weights; the trained model must
    score with its final weights, as the same fit without validation does."""
    kw = dict(n_epochs=3, momentum=0.2)
    plain = _small(**kw).fit(chain_data.train)
    validated = _small(**kw).fit(chain_data.train, chain_data.test)
    assert len(validated.training_["curve"]) == 3 and "valid_mrr@20" in validated.training_["curve"][-1]
    a, b = plain._state(), validated._state()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    for (sa, *_), (sb, *_) in zip(plain.iter_scores(chain_data.test), validated.iter_scores(chain_data.test)):
        np.testing.assert_array_equal(sa, sb)


def test_nan_loss_raises(chain_data) -> None:
    with pytest.raises(NextclickError, match="loss is nan"):
        _small(learning_rate=1e30, n_epochs=3).fit(chain_data.train)


def test_registry_presets_and_bad_config() -> None:
    m = create_model("gru4rec", "spec_rsc15")
    assert m.config.layers == (100,) and m.config.batch_size == 32 and m.config.logq == 1.0
    r = create_model("gru4rec", "official_retailrocket")
    assert r.config.loss == "bpr-max" and r.config.bpreg == 1.95 and r.config.momentum == 0.4
    with pytest.raises(NextclickError, match="dropout_p_embed"):
        GRU4Rec(dropout_p_embed=1.0).fit(Sessions.from_lists([[1, 2], [2, 1]]))


@pytest.mark.parametrize("scratch", [False, True])
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.4, False), (0.4, True)])
def test_row_sparse_update_equals_the_dense_formula(momentum: float, nesterov: bool, scratch: bool) -> None:
    # the compiled row update (repeated rows summed first, untouched rows left alone) against the
    # update written densely over the whole matrix: acc += g^2; v = m v - lr g / sqrt(acc); w += v;
    # scratch: the repeated rows summed into the first part's gradient in place (training's path)
    from nextclick.models.gru4rec.train import AdagradM

    cfg = GRU4Rec.Config(layers=(4,))
    net = Net.create(cfg, 30, np.random.default_rng(0))
    opt = AdagradM(net, 0.1, momentum, nesterov, 1e-6)
    w = net.out.numpy().astype(np.float64)
    acc, v = np.full_like(w, 1e-6), np.zeros_like(w)
    rng = np.random.default_rng(1)
    for _ in range(4):
        idx = rng.integers(1, 31, 12)  # repeats
        idx2 = rng.integers(1, 31, 3)  # a second part, narrower (no bias column), as the input rows
        idx2[2] = idx2[1]  # repeated within the second part too
        g, g2 = rng.normal(size=(12, 5)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
        parts = [(torch.from_numpy(idx), torch.from_numpy(g.copy())), (torch.from_numpy(idx2), torch.from_numpy(g2.copy()))]
        opt.rows(net.out, parts, scratch=scratch)
        G = np.zeros_like(w)
        np.add.at(G, idx, g)
        np.add.at(G[:, :4], idx2, g2)
        touched = np.zeros(len(w), bool)
        touched[idx] = touched[idx2] = True
        acc += G**2
        step = G / np.sqrt(acc)
        v_new = momentum * v - 0.1 * step
        upd = (momentum * v_new - 0.1 * step) if nesterov else v_new
        v[touched] = v_new[touched]
        w[touched] += upd[touched]
    np.testing.assert_allclose(net.out.numpy(), w, rtol=1e-5, atol=1e-6)
    assert not np.allclose(w, Net.create(cfg, 30, np.random.default_rng(0)).out.numpy())


@pytest.mark.parametrize("mode", list(MODES))
def test_training_forward_equals_inference_forward(mode: str) -> None:
    cfg = GRU4Rec.Config(layers=(6, 5), batch_size=3, **MODES[mode])
    net = Net.create(cfg, 12, np.random.default_rng(0))
    net.dense.add_(torch.randn(net.dense.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    trainer = Trainer(net, cfg, net_counts)
    x, y = torch.tensor([3, 1, 12]), torch.tensor([4, 2, 11])
    H = [torch.randn(3, d, generator=torch.Generator().manual_seed(2)) for d in cfg.layers]
    want = net.forward(x, [h.clone() for h in H])
    got = [h.clone() for h in H]
    trainer.forward(x, y, torch.tensor([5, 6]), got)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("mode", list(MODES))
def test_numpy_live_step_equals_the_torch_step(mode: str) -> None:
    # the service advances sessions with the numpy GRU step: same states as the torch forward
    cfg = GRU4RecConfig(layers=(12, 8), **MODES[mode])
    net = Net.create(cfg, 30, np.random.default_rng(0))
    with torch.no_grad():
        for v in net.views["b_ih"] + net.views["b_hh"]:
            v.uniform_(-0.3, 0.3)  # non-zero biases
    rng = np.random.default_rng(1)
    H = rng.normal(size=(5, 20)).astype(np.float32)
    x = rng.integers(1, 31, size=5)
    want = torch.cat(net.forward(torch.from_numpy(x), [torch.from_numpy(H[:, :12].copy()), torch.from_numpy(H[:, 12:].copy())]), 1)
    np.testing.assert_allclose(net.forward_np(x, H), want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_a_batch_of_one_without_negatives_in_more_blocks_than_rows(parts: int) -> None:
    # one slot and no sampled negatives: one output column, so blocks of rows and of columns are empty
    cfg = GRU4Rec.Config(layers=(6,), loss="cross-entropy", batch_size=1, n_sample=0, logq=0.0, **MODES["constrained"])
    net = Net.create(cfg, 12, np.random.default_rng(0))
    trainer = Trainer(net, cfg, net_counts, parts=parts)
    x, y = torch.tensor([4]), torch.tensor([9])
    H = [torch.randn(1, 6, generator=torch.Generator().manual_seed(2)) * 0.5]
    ref_loss, ref = _reference_gradients(net, cfg, x, y, torch.zeros(0, dtype=torch.long), [h.clone() for h in H], 1.0)
    loss, rows = trainer.gradients(x, y, None, [h.clone() for h in H])
    assert loss.item() == pytest.approx(ref_loss, abs=1e-6)
    for name, vs in net.grads.items():
        np.testing.assert_allclose(vs[0].numpy(), ref[f"gru0.{name}"], atol=1e-5, err_msg=name)
    out = torch.zeros_like(net.out)
    for _p, idx, g in rows:
        out.index_add_(0, idx, g)
    np.testing.assert_allclose(out[:, :6].numpy(), ref["item_out"], atol=1e-5)


@pytest.mark.parametrize("engine", ["compiled", "torch"])
def test_a_time_budget_stops_training_and_is_recorded(chain_data, engine, tmp_path) -> None:
    # a budget that has run out at the first check: one epoch's first 64 steps, then the fit stops
    model = _small(n_epochs=25, batch_size=1, engine=engine, time_budget=1e-9).fit(chain_data.train)
    assert len(model.epoch_losses_) == 1
    assert model.training_["out_of_time"] == {"epoch": 1, "events": 64}
    model.save(tmp_path / "m")
    assert Recommender.load(tmp_path / "m").training_["out_of_time"]["events"] == 64
    # without a budget every epoch runs on every event
    full = _small(n_epochs=2, batch_size=1, engine=engine).fit(chain_data.train)
    assert len(full.epoch_losses_) == 2 and "out_of_time" not in full.training_
    with pytest.raises(NextclickError, match="time_budget"):
        _small(time_budget=-1.0).fit(chain_data.train)
