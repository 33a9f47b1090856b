"""NARM's network: its attention with padding and causality, and its query against a plain
transcription of the paper's equations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.errors import NextclickError  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.narm import NARMConfig, NARMNet, right_align  # noqa: E402
from tests.models.test_stamp import assert_positions_are_prefixes  # noqa: E402


def net(d: int = 5, H: int = 6, n_items: int = 9) -> NARMNet:
    torch.manual_seed(0)
    m = NARMNet(n_items, NARMConfig(hidden=d, gru_hidden=H, dropout=0.0, dropout_context=0.0))
    m.reset_parameters()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.startswith("gru."):
                p.mul_(3.0)
    return m.eval()


def test_right_align_moves_the_clicks_to_the_start() -> None:
    xr, n = right_align(np.array([[0, 0, 3, 5], [4, 1, 1, 7], [0, 0, 0, 2]]))
    np.testing.assert_array_equal(xr, [[3, 5, 0, 0], [4, 1, 1, 7], [2, 0, 0, 0]])
    np.testing.assert_array_equal(n, [2, 4, 1])


def test_attention_is_zero_on_padding_and_on_later_clicks() -> None:
    m = net()
    x = np.array([[0, 0, 3, 5, 2], [4, 1, 1, 7, 8]])
    with torch.no_grad():
        a = m.attention(x)  # (B, query, click), left-padded as x
    real = torch.from_numpy(x > 0)
    j = torch.arange(x.shape[1])
    allowed = real[:, :, None] & real[:, None, :] & (j[None, None, :] <= j[None, :, None])
    assert torch.all(a[~allowed] == 0) and torch.all(a[allowed] != 0)


def test_left_padding_and_later_clicks_change_nothing() -> None:
    assert_positions_are_prefixes(net(), [3, 5, 2, 6], others=([1, 2, 3, 4, 5, 6],))


def test_query_follows_the_equations() -> None:
    m = net()
    session = [4, 2, 2, 7]
    W = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    H = W["gru.weight_hh_l0"].shape[1]
    h, states = np.zeros(H), []
    for e in W["item_emb.weight"][session]:  # torch's GRU: gates r, z, n
        gi, gh = W["gru.weight_ih_l0"] @ e + W["gru.bias_ih_l0"], W["gru.weight_hh_l0"] @ h + W["gru.bias_hh_l0"]
        r, z = sig(gi[:H] + gh[:H]), sig(gi[H:2 * H] + gh[H:2 * H])
        cand = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        h = (1 - z) * cand + z * h
        states.append(h)
    S = np.array(states)
    c_g = S[-1]
    a = np.array([W["v.weight"][0] @ sig(W["a1.weight"] @ c_g + W["a2.weight"] @ hj) for hj in S])
    c_l = (a[:, None] * S).sum(0)
    want = W["b.weight"] @ np.concatenate([c_g, c_l])
    with torch.no_grad():
        got = m.forward_last(np.array([session]))[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_bad_settings_are_named(chain_data) -> None:
    with pytest.raises(NextclickError, match="gru_hidden"):
        create_model("narm", gru_hidden=0).fit(chain_data.train)
    m = create_model("narm", n_epochs=1, hidden=8, gru_hidden=8, batch_size=16, progress=False, patience=0).fit(chain_data.train)
    with pytest.raises(NextclickError, match="narm"):
        m.attention([1, 2])
