"""STAMP's network: its attention with padding and causality, and its query against a plain
transcription of the paper's equations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.errors import NextclickError  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.stamp import STAMPConfig, STAMPNet  # noqa: E402


def net(d: int = 6, n_items: int = 9) -> STAMPNet:
    torch.manual_seed(0)
    m = STAMPNet(n_items, STAMPConfig(hidden=d, dropout=0.0))
    m.reset_parameters()
    with torch.no_grad():  # larger weights than the initialisation, so every term matters
        for p in m.parameters():
            p.mul_(10.0)
    return m.eval()


def test_attention_is_zero_on_padding_and_on_later_clicks() -> None:
    m = net()
    x = np.array([[0, 0, 3, 5, 2], [4, 1, 1, 7, 8]])
    with torch.no_grad():
        a = m.attention(x)  # (B, query, click)
    real = torch.from_numpy(x > 0)
    t = x.shape[1]
    allowed = real[:, :, None] & real[:, None, :] & (torch.arange(t)[None, None, :] <= torch.arange(t)[None, :, None])
    assert torch.all(a[~allowed] == 0)
    assert torch.all(a[allowed] != 0)


def assert_positions_are_prefixes(m: torch.nn.Module, row: list[int], others: tuple[list[int], ...] = ()) -> None:
    """The query at each position of ``row`` (left-padded by two, in a batch with ``others`` of
    the same width) equals that of its prefix alone, and of the prefix left-padded by three."""
    with torch.no_grad():
        all_pos = m(np.array([[0, 0, *row], *others]))  # the first len(row) are row's queries
        for j in range(len(row)):
            prefix = row[: j + 1]
            alone = m.forward_last(np.array([prefix]))[0]
            padded = m.forward_last(np.array([[0] * 3 + prefix]))[0]
            torch.testing.assert_close(alone, all_pos[j], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-6)


def test_left_padding_and_later_clicks_change_nothing() -> None:
    assert_positions_are_prefixes(net(), [3, 5, 2, 6])


def test_query_follows_the_equations() -> None:
    m = net()
    session = [4, 2, 2, 7]
    W = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    x = W["item_emb.weight"][session]  # (t, d)
    m_s, m_t = x.mean(0), x[-1]
    a = np.array([W["w0.weight"][0] @ sig(W["w1.weight"] @ xi + W["w2.weight"] @ m_t + W["w3.weight"] @ m_s
                                          + W["w3.bias"]) for xi in x])
    m_a = (a[:, None] * x).sum(0)
    h_s = np.tanh(W["mlp_s.weight"] @ m_a + W["mlp_s.bias"])
    h_t = np.tanh(W["mlp_t.weight"] @ m_t + W["mlp_t.bias"])
    with torch.no_grad():
        got = m.forward_last(np.array([session]))[0].double().numpy()
    np.testing.assert_allclose(got, h_s * h_t, rtol=1e-5, atol=1e-6)
    # the scores are the trilinear product with every item
    scores = W["item_emb.weight"] @ (h_s * h_t)
    np.testing.assert_allclose((m.item_emb.weight.detach().double().numpy() @ got), scores, rtol=1e-5, atol=1e-5)


def test_sasrec_only_methods_say_so(chain_data) -> None:
    m = create_model("stamp", n_epochs=1, hidden=8, batch_size=16, progress=False, patience=0).fit(chain_data.train)
    with pytest.raises(NextclickError, match="stamp"):
        m.attention([1, 2])
    with pytest.raises(NextclickError, match="hidden"):
        create_model("stamp", hidden=0).fit(chain_data.train)
