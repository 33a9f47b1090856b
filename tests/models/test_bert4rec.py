"""BERT4Rec: its Cloze masking, the prediction at an appended [mask] slot, bidirectional attention
that never reads padding, evaluation prefixes that never see later clicks, and the trainer's hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

from nextclick.data.batching import pad_prefixes  # noqa: E402
from nextclick.data.sessions import Sessions  # noqa: E402
from nextclick.errors import NextclickError  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.bert4rec import BERT4RecConfig, BERT4RecNet, cloze_mask  # noqa: E402
from nextclick.models.sasrec.train import BatchLoss, sequence_batch  # noqa: E402
from nextclick.tune.space import parse_space  # noqa: E402

V = 9  # items 1..9; the [mask] token is 10
MASK = V + 1
SEQ = np.array([[0, 0, 0, 3, 5],  # left-padded windows of 2, 5, 4 and 1 clicks
                [4, 1, 1, 7, 8],
                [0, 2, 9, 6, 3],
                [0, 0, 0, 0, 7]])


def net(max_len: int = 6, n_items: int = V, **kw) -> BERT4RecNet:
    torch.manual_seed(0)
    m = BERT4RecNet(n_items, BERT4RecConfig(hidden=8, n_heads=2, dropout=0.0, max_len=max_len, **kw))
    m.reset_parameters()
    with torch.no_grad():  # larger weights than the initialisation, so every term matters
        for name, p in m.named_parameters():
            if "ln" not in name:
                p.mul_(20.0)
    return m.eval()


# ---------------------------------------------------------------------------- the Cloze task
def test_cloze_mask_hides_a_share_of_the_real_clicks_and_targets_only_those() -> None:
    inputs, targets = cloze_mask(SEQ, np.random.default_rng(0), mask_prob=0.4, mask_last=0.0, mask_id=MASK)
    masked = inputs == MASK
    real = SEQ > 0
    # round(0.4 n), at least one: 2 clicks -> 1, 5 -> 2, 4 -> 2 (1.6), 1 -> 1
    np.testing.assert_array_equal(masked.sum(1), [1, 2, 2, 1])
    assert not (masked & ~real).any()  # never a padding slot
    np.testing.assert_array_equal(inputs[~masked], SEQ[~masked])  # the other clicks are untouched
    np.testing.assert_array_equal(targets[masked], SEQ[masked])  # the original item where masked ...
    assert (targets[~masked] == 0).all()  # ... and no target anywhere else
    again = cloze_mask(SEQ, np.random.default_rng(0), mask_prob=0.4, mask_last=0.0, mask_id=MASK)
    np.testing.assert_array_equal(again[0], inputs)  # seeded: the same mask


def test_cloze_mask_picks_every_real_click_alike() -> None:
    rng = np.random.default_rng(1)
    seq = np.tile(SEQ[1:2], (4000, 1))  # five real clicks, two masked per row
    masked = cloze_mask(seq, rng, mask_prob=0.4, mask_last=0.0, mask_id=MASK)[0] == MASK
    np.testing.assert_allclose(masked.mean(0), 0.4, atol=0.03)


def test_mask_last_masks_the_last_click_only() -> None:
    inputs, targets = cloze_mask(SEQ, np.random.default_rng(0), mask_prob=0.4, mask_last=1.0, mask_id=MASK)
    want = np.zeros_like(SEQ, dtype=bool)
    want[:, -1] = True
    np.testing.assert_array_equal(inputs == MASK, want)
    np.testing.assert_array_equal(targets[:, -1], SEQ[:, -1])
    seq = np.tile(SEQ[1:2], (4000, 1))
    inputs, _ = cloze_mask(seq, np.random.default_rng(2), mask_prob=0.4, mask_last=0.25, mask_id=MASK)
    last_only = (inputs == MASK).sum(1) == 1  # Cloze rows mask two of five
    assert (inputs[last_only, -1] == MASK).all()
    assert abs(last_only.mean() - 0.25) < 0.03


def test_loss_batch_masks_each_sequences_last_window() -> None:
    """The trainer's next-click batch (x, y) becomes the Cloze task over each sequence's last T
    clicks, its last click included."""
    lists = [[1, 2], [3, 4, 5, 6, 7, 8, 9, 1], [5, 6, 7]]
    train = Sessions.from_lists(lists, n_items=V)
    m = net(max_len=6, mask_prob=0.5, mask_last=0.0)
    x, y = sequence_batch(train, np.arange(3), 6)
    inputs, targets = m.loss_batch(x, y, np.random.default_rng(0))
    window, _ = pad_prefixes(train.items, train.offsets[:3], train.lengths[:3], 6)  # (3, 6) the last 6 clicks
    np.testing.assert_array_equal(np.where(inputs == MASK, targets, inputs), window)
    np.testing.assert_array_equal((inputs == MASK).sum(1), [1, 3, 2])  # 0.5 * (2, 6, 3) rounded, halves up


def test_batch_loss_is_cross_entropy_at_the_masked_slots_only(chain_data) -> None:
    n_items = chain_data.vocab.n_items
    m = net(max_len=4, n_items=n_items)
    c = m.cfg
    x, y = sequence_batch(chain_data.train, np.arange(8), c.max_len)
    loss_fn = BatchLoss(m, c, torch.device("cpu"), n_items, chain_data.train, np.random.default_rng(3))
    loss, n = loss_fn(x, y)
    inputs, targets = m.loss_batch(x, y, np.random.default_rng(3))  # the same draws
    logits = m(inputs) @ m.item_emb.weight[1:].T  # (M, V): the queries at the masked slots
    assert n == int((targets > 0).sum()) == logits.shape[0]
    want = F.cross_entropy(logits, torch.from_numpy(targets[targets > 0] - 1))
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- the network
def test_attention_is_bidirectional_and_never_reads_padding() -> None:
    m = net()
    x = SEQ.copy()
    x[:, 2] = np.where(x[:, 2] > 0, MASK, 0)  # a masked slot in the middle of three rows
    weights: list[torch.Tensor] = []
    with torch.no_grad():
        m.encode(x, weights)
    real = torch.from_numpy(SEQ > 0)[:, None, None, :].expand(-1, 2, 5, -1)  # (B, H, query, key)
    assert len(weights) == 2
    for p in weights:  # every real query reads every real key, earlier and later; no query reads padding
        rows = torch.from_numpy(SEQ > 0)[:, None, :, None].expand(-1, 2, -1, 5)
        assert torch.all(p[rows & real] > 0) and torch.all(p[~real] == 0)
    with torch.no_grad():  # so a LATER click changes the prediction at the masked slot
        a = m(np.array([[3, 5, MASK, 2]]))
        b = m(np.array([[3, 5, MASK, 6]]))
    assert not torch.allclose(a, b)


def test_padding_changes_nothing() -> None:
    m = net()
    with torch.no_grad():
        a = m(np.array([[3, MASK, 2]]))
        b = m(np.array([[0, 0, 3, MASK, 2], [4, 1, MASK, 7, 8]]))[:1]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_rows_of_every_length_give_the_outputs_they_give_alone() -> None:
    """Rows run in groups of similar length (widths 4, 8, 12 here); each row's outputs are its own,
    in row-major order."""
    m = net(max_len=12)
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, V + 1, n) for n in (7, 1, 12, 3, 5, 2, 9)]
    clicks = np.zeros((len(rows), 12), dtype=np.int64)
    for b, r in enumerate(rows):
        clicks[b, 12 - r.size :] = r
    x = np.where((rng.random(clicks.shape) < 0.4) & (clicks > 0), MASK, clicks)
    x[:, -1] = MASK  # at least one mask per row
    with torch.no_grad():
        alone = [m.head(m.encode(row[row > 0][None])[0][torch.from_numpy(row[row > 0] == MASK)]) for row in x]
        torch.testing.assert_close(m(x), torch.cat(alone), rtol=1e-5, atol=1e-6)
        last_alone = torch.cat([m.forward_last(r[None]) for r in rows])
        torch.testing.assert_close(m.forward_last(clicks), last_alone, rtol=1e-5, atol=1e-6)


def test_prediction_is_the_output_at_an_appended_mask_slot() -> None:
    m = net(max_len=5)
    with torch.no_grad():
        got = m.forward_last(SEQ[:, 1:])  # rows of 1..4 clicks: the mask fits beside them
        appended = m(np.concatenate([SEQ[:, 1:], np.full((4, 1), MASK)], axis=1))  # one mask per row
        torch.testing.assert_close(got, appended, rtol=1e-5, atol=1e-6)
        full = m.forward_last(SEQ[1:2])  # five clicks and T = 5: the oldest makes room for the mask
        torch.testing.assert_close(full, m(np.array([[1, 1, 7, 8, MASK]])), rtol=1e-5, atol=1e-6)
    assert got.shape == (4, 9) and torch.all(got[:, -1] == 1)  # [q, 1]: the last column meets b^O


@pytest.fixture(scope="module")
def fitted(chain_data):
    """A briefly trained model with a window of T = 4 slots (three clicks and the [mask])."""
    return create_model("bert4rec", n_epochs=1, hidden=16, max_len=4, batch_size=16, progress=False,
                        patience=0).fit(chain_data.train)


def test_scores_are_the_query_against_items_and_output_bias(chain_data, fitted) -> None:
    model = fitted
    idx = chain_data.vocab.encode(np.asarray(chain_data.chains[1][:3]))
    net_ = model.net_
    with torch.no_grad():
        h = net_.encode(np.array([[*idx, net_.mask_id]]))
        q = net_.ln_out(F.gelu(net_.proj(h[0, -1])))
        E, b = net_.item_emb.weight[:, :-1], net_.item_emb.weight[:, -1]
        want = (E @ q + b).numpy()
    got = model.score_batch([idx])[0]
    np.testing.assert_allclose(got[1:], want[1:], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- evaluation
def test_scores_for_a_prefix_do_not_depend_on_later_clicks(chain_data, fitted) -> None:
    model = fitted
    n = chain_data.vocab.n_items
    a = Sessions.from_lists([[1, 2, 3, 4, 5, 6], [7, 8]], n_items=n)
    b = Sessions.from_lists([[1, 2, 3, 9, 9, 9], [7, 8]], n_items=n)  # the same first three clicks
    out = {}
    for name, data in (("a", a), ("b", b)):
        for scores, _, sess, plen in model.iter_scores(data, batch_size=3):
            out.update({(name, int(s), int(p)): row for s, p, row in zip(sess, plen, scores)})
        for queries, _, sess, plen in model.iter_queries(data, batch_size=2):
            out.update({(name + "q", int(s), int(p)): row.numpy() for s, p, row in zip(sess, plen, queries)})
    for p in (1, 2, 3):
        np.testing.assert_array_equal(out["a", 0, p], out["b", 0, p])
        np.testing.assert_array_equal(out["aq", 0, p], out["bq", 0, p])
        np.testing.assert_allclose(out["a", 0, p][1:], model.score_batch([[1, 2, 3, 4, 5, 6][:p]])[0][1:], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out["a", 0, 4], out["b", 0, 4])  # the fourth click differs


def test_live_queries_score_as_the_model_does(fitted) -> None:
    """The service's path (queries against the output layer) equals score_batch, for sessions
    shorter and longer than the window."""
    live = fitted.live()
    sessions = [np.array([3]), np.array([1, 2]), np.array([5, 6, 7, 8, 9, 10, 4])]
    W, b = live.output_layer()
    got = (live.queries(None, sessions) @ W.T).numpy()
    assert b is None  # the output bias is item_emb's last column, met by the query's constant 1
    np.testing.assert_allclose(got[:, 1:], fitted.score_batch(sessions)[:, 1:], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- settings
def test_bad_settings_are_named(chain_data) -> None:
    for key, value in (("mask_prob", 0.0), ("mask_last", 1.5), ("max_len", 1), ("hidden", 6)):
        with pytest.raises(NextclickError, match=key if key != "hidden" else "n_heads"):
            create_model("bert4rec", **{key: value}, n_heads=4 if key == "hidden" else 2).fit(chain_data.train)
    m = create_model("bert4rec", n_epochs=1, hidden=8, batch_size=16, progress=False, patience=0).fit(chain_data.train)
    with pytest.raises(NextclickError, match="bert4rec"):
        m.attention([1, 2])


def test_tune_space_fits_the_config() -> None:
    space = parse_space(Path(__file__).resolve().parents[2] / "benchmarks" / "spaces" / "bert4rec.json", BERT4RecConfig)
    assert {"mask_prob", "mask_last", "hidden", "dropout", "lr"} <= set(space)
