"""SR-GNN: the session graph of a prefix (repeated items, self-loops, left padding), and the
network's query against a plain transcription of the paper's equations."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.errors import NextclickError  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.sasrec.train import decay_lr  # noqa: E402
from nextclick.models.srgnn import SRGNNConfig, SRGNNNet, session_graphs  # noqa: E402
from tests.models.test_stamp import assert_positions_are_prefixes  # noqa: E402


def graphs_of(rows: list[list[int]], row: list[int], pos: list[int]):
    return session_graphs(torch.tensor(rows), torch.tensor(row), torch.tensor(pos))


def test_graph_of_a_session_with_a_repeated_item() -> None:
    g = graphs_of([[5, 7, 5, 9]], [0], [3])
    # nodes 5, 7, 9 (ascending); edges 5 -> 7, 7 -> 5, 5 -> 9
    assert g.items.tolist() == [[5, 7, 9]]
    a_out = [[0, 1 / 2, 1 / 2],  # 5: out-degree 2
             [1, 0, 0],  # 7 -> 5
             [0, 0, 0]]  # 9: no out-edge
    a_in = [[0, 1, 0],  # 5: from 7
            [1, 0, 0],  # 7: from 5
            [1, 0, 0]]  # 9: from 5
    np.testing.assert_array_equal(g.a_out[0].numpy(), np.array(a_out, dtype=np.float32))
    np.testing.assert_array_equal(g.a_in[0].numpy(), np.array(a_in, dtype=np.float32))
    assert g.clicks.tolist() == [[2, 1, 1]] and g.last.tolist() == [2]


def test_the_node_vectors_computed_are_those_of_the_nodes_each_prefix_reached() -> None:
    g = graphs_of([[0, 5, 7, 5, 9]], [0, 0, 0, 0], [1, 2, 3, 4])  # prefixes [5], [5, 7], [5, 7, 5], [5, 7, 5, 9]
    assert list(zip(g.at.tolist(), g.node.tolist())) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert g.last.tolist() == [0, 1, 0, 2] and g.last_at.tolist() == [0, 2, 3, 7]


def test_graph_of_the_papers_example() -> None:
    """Sec. 3.2's example session v1, v2, v3, v2, v4: edge weights are shares of the degree."""
    g = graphs_of([[1, 2, 3, 2, 4]], [0], [4])
    a_out = [[0, 1, 0, 0], [0, 0, 1 / 2, 1 / 2], [0, 1, 0, 0], [0, 0, 0, 0]]
    a_in = [[0, 0, 0, 0], [1 / 2, 0, 1 / 2, 0], [0, 1, 0, 0], [0, 1, 0, 0]]
    np.testing.assert_array_equal(g.a_out[0].numpy(), np.array(a_out, dtype=np.float32))
    np.testing.assert_array_equal(g.a_in[0].numpy(), np.array(a_in, dtype=np.float32))


def test_repeated_edges_weigh_by_occurrence_and_a_repeated_click_is_a_self_loop() -> None:
    g = graphs_of([[3, 3, 4, 3, 4, 6]], [0], [5])  # 3->3, 3->4 twice, 4->3, 4->6
    assert g.items.tolist() == [[3, 4, 6]]
    np.testing.assert_allclose(g.a_out[0].numpy(), [[1 / 3, 2 / 3, 0], [1 / 2, 0, 1 / 2], [0, 0, 0]])
    np.testing.assert_allclose(g.a_in[0].numpy(), [[1 / 2, 1 / 2, 0], [1, 0, 0], [0, 1, 0]])  # 3 <- 3, 3 <- 4


def test_each_prefix_has_its_own_graph_and_left_padding_changes_nothing() -> None:
    session = [5, 7, 5, 9]
    # prefixes of the session in a batch with a longer row, the session left-padded by two
    batch = [[0, 0, *session], [1, 2, 3, 4, 5, 6]]
    g = graphs_of(batch, [0, 0, 0, 0], [2, 3, 4, 5])
    for j in range(len(session)):
        alone = graphs_of([session[: j + 1]], [0], [j])
        keep = torch.isin(g.items[0], alone.items[0])  # the prefix's nodes among the row's
        assert g.items[0][keep].tolist() == alone.items[0].tolist()
        for name in ("a_out", "a_in"):
            full = getattr(g, name)[j]
            torch.testing.assert_close(full[keep][:, keep], getattr(alone, name)[0], rtol=0, atol=0)
            assert full[~keep].abs().sum() == 0 and full[:, ~keep].abs().sum() == 0  # later nodes: no edge
        torch.testing.assert_close(g.clicks[j][keep], alone.clicks[0], rtol=0, atol=0)
        assert g.clicks[j][~keep].abs().sum() == 0
        assert g.items[0][g.last[j]] == session[j]


def net(d: int = 5, steps: int = 1, n_items: int = 9) -> SRGNNNet:
    torch.manual_seed(0)
    m = SRGNNNet(n_items, SRGNNConfig(hidden=d, steps=steps))
    m.reset_parameters()
    with torch.no_grad():  # larger weights than the initialisation, so every term matters
        for p in m.parameters():
            p.mul_(4.0)
    return m.eval()


@pytest.mark.parametrize("steps", [1, 2])
def test_left_padding_and_later_clicks_change_nothing(steps: int) -> None:
    assert_positions_are_prefixes(net(steps=steps), [3, 5, 3, 3, 6], others=([1, 2, 3, 4, 5, 6, 7],))


def numpy_query(W: dict[str, np.ndarray], session: list[int], steps: int) -> np.ndarray:
    """Eq. 1-7 for one session, written out with its nodes, edge list and click list."""
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    nodes = sorted(set(session))
    n, d = len(nodes), W["item_emb.weight"].shape[1]
    count = np.zeros((n, n))
    for a, b in zip(session[:-1], session[1:]):
        count[nodes.index(a), nodes.index(b)] += 1
    out_deg, in_deg = count.sum(1), count.sum(0)
    A_out = np.array([[count[i, j] / out_deg[i] if out_deg[i] else 0.0 for j in range(n)] for i in range(n)])
    A_in = np.array([[count[j, i] / in_deg[i] if in_deg[i] else 0.0 for j in range(n)] for i in range(n)])
    H_out, H_in = W["h_edge.weight"][:d].T, W["h_edge.weight"][d:].T
    W_z, W_r, W_o = np.split(W["w_gates.weight"], 3)
    U_z, U_r = np.split(W["u_zr.weight"], 2)
    V = W["item_emb.weight"][nodes]  # (n, d)
    for _ in range(steps):
        a = np.concatenate([A_out @ V @ H_out, A_in @ V @ H_in], axis=1) + W["b"]  # (n, 2d)
        z = sig(a @ W_z.T + V @ U_z.T)
        r = sig(a @ W_r.T + V @ U_r.T)
        cand = np.tanh(a @ W_o.T + (r * V) @ W["u_o.weight"].T)
        V = (1 - z) * V + z * cand
    v = V[[nodes.index(i) for i in session]]  # (t, d) the node vector of each click
    v_n = v[-1]
    alpha = np.array([W["q.weight"][0] @ sig(W["w1.weight"] @ v_n + W["w2.weight"] @ vi + W["w2.bias"]) for vi in v])
    s_g = (alpha[:, None] * v).sum(0)
    return W["w3.weight"] @ np.concatenate([v_n, s_g])


@pytest.mark.parametrize("steps", [1, 2])
def test_query_follows_the_equations(steps: int) -> None:
    m = net(steps=steps)
    W = {k: v.detach().double().numpy() for k, v in m.state_dict().items()}
    sessions = [[4, 2, 2, 7, 4, 9], [1, 8], [6]]
    with torch.no_grad():
        got = m.forward_last(np.array([[4, 2, 2, 7, 4, 9], [0, 0, 0, 0, 1, 8], [0, 0, 0, 0, 0, 6]])).double().numpy()
    for b, s in enumerate(sessions):
        np.testing.assert_allclose(got[b], numpy_query(W, s, steps), rtol=1e-5, atol=1e-6)


def test_the_papers_learning_rate_falls_tenfold_every_three_epochs() -> None:
    assert create_model("srgnn", "paper").config.lr_decay_every == 3
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    lrs = []
    for epoch in range(1, 8):
        decay_lr(opt, SRGNNConfig(lr_decay_every=3), epoch)  # the paper's schedule  # after each epoch, as the trainer calls it
        lrs.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    decay_lr(opt, SRGNNConfig(), 9)  # the default: constant
    assert opt.param_groups[0]["lr"] == lrs[-1]


def test_bad_settings_are_named(chain_data) -> None:
    with pytest.raises(NextclickError, match="steps"):
        create_model("srgnn", steps=0).fit(chain_data.train)
    with pytest.raises(NextclickError, match="lr_decay"):
        create_model("srgnn", lr_decay=0.0).fit(chain_data.train)
    m = create_model("srgnn", n_epochs=1, hidden=8, batch_size=16, progress=False, patience=0).fit(chain_data.train)
    with pytest.raises(NextclickError, match="srgnn"):
        m.attention([1, 2])
