"""STAN and VSTAN: the decays on a hand-computed example, and the vectorised scores against a
plain transcription of the definitions (one loop per session and neighbour) on random logs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models import create_model
from nextclick.models.base import Recommender

DAY = 86_400.0


def sessions(seqs: list[list[int]], times: list[float] | None, n_items: int) -> Sessions:
    items = np.concatenate([np.asarray(s, np.int64) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    t = None if times is None else np.repeat(np.asarray(times, np.float64), [len(s) for s in seqs])
    return Sessions(items=items, offsets=offsets, n_items=n_items, times=t)


def scores_of(model: Recommender, seq: list[int], n_items: int) -> np.ndarray:
    q = sessions([seq], None, n_items)
    return model._score(q, np.array([0]), np.array([len(seq)]))[0].astype(np.float64)


# Three training sessions one day apart; the current session [4, 2, 7]. Every lambda is 1
# (lambda_snh: 1 day), so each decay is a power of e.
TRAIN = [[1, 2, 3], [2, 4, 2, 5], [6, 7]]
TIMES = [0.0, DAY, 2 * DAY]
CURRENT = [4, 2, 7]


def hand_computed(vstan: bool) -> np.ndarray:
    e = math.e
    norm = math.sqrt(e**-4 + e**-2 + 1)  # w(4) = e^-2, w(2) = e^-1, w(7) = 1
    sim = {  # cosine of the weighted current session and the binary neighbour, times its recency
        0: e**-1 / (norm * math.sqrt(3)) * e**-2,  # shares 2; 3 items; two days before the last
        1: (e**-1 + e**-2) / (norm * math.sqrt(3)) * e**-1,  # shares 2 and 4; 3 distinct items
        2: 1 / (norm * math.sqrt(2)),  # shares 7; the latest session
    }
    # each neighbour's items: exp(-|position - position of the last shared item|)
    adds = {0: {1: e**-1, 2: 1.0, 3: e**-1}, 1: {2: 1.0, 4: e**-1, 5: e**-1}, 2: {6: e**-1, 7: 1.0}}
    ipw = {0: e**-1, 1: e**-1, 2: 1.0}  # the last click of the current session each neighbour holds: 2, 2, 7
    clicks = {1: 1, 2: 3, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}
    out = np.zeros(8)
    for n, items in adds.items():
        for j, w in items.items():
            v = sim[n] * w
            if vstan:
                v *= ipw[n] * (1 + 1.0 * math.log(3 / clicks[j]))
            out[j] += v
    return out


@pytest.mark.parametrize("name", ["stan", "vstan"])
def test_the_decays_on_a_hand_computed_example(name: str, tmp_path) -> None:
    lambdas = dict(lambda_spw=1.0, lambda_snh=1.0, lambda_inh=1.0)
    if name == "vstan":
        lambdas.update(lambda_ipw=1.0, lambda_idf=1.0)
    m = create_model(name, k=100, sample_size=0, **lambdas).fit(sessions(TRAIN, TIMES, 7))
    want = hand_computed(name == "vstan")
    np.testing.assert_allclose(scores_of(m, CURRENT, 7)[1:], want[1:], rtol=1e-6)
    m.save(tmp_path / "m")
    np.testing.assert_allclose(scores_of(Recommender.load(tmp_path / "m"), CURRENT, 7), scores_of(m, CURRENT, 7), rtol=1e-7)


def test_stan_is_vstan_without_its_two_factors() -> None:
    train = sessions(TRAIN, TIMES, 7)
    a = create_model("stan").fit(train)
    b = create_model("vstan", lambda_ipw=0.0, lambda_idf=0.0).fit(train)
    np.testing.assert_array_equal(scores_of(a, CURRENT, 7), scores_of(b, CURRENT, 7))


def reference(train: list[list[int]], times: list[float], seq: list[int], n_items: int, c: dict) -> np.ndarray:
    """The definitions in plain Python (module docstring of nextclick.models.stan)."""
    L = len(seq)
    last_q = {it: p + 1 for p, it in enumerate(seq)}
    w = {it: math.exp((p - L) / c["lambda_spw"]) if c["lambda_spw"] else 1.0 for it, p in last_q.items()}
    qnorm = math.sqrt(sum(v * v for v in w.values()))
    cand = [n for n, s in enumerate(train) if set(s) & set(seq)]
    if c["sample_size"]:
        cand = sorted(cand, key=lambda n: -times[n])[: c["sample_size"]]
    t_ref = max(times)
    sims = []
    for n in cand:
        shared = set(train[n]) & set(seq)
        s = sum(w[i] for i in shared) / (qnorm * math.sqrt(len(set(train[n]))))
        if c["lambda_snh"]:
            s *= math.exp(-(t_ref - times[n]) / (c["lambda_snh"] * DAY))
        sims.append((s, times[n], n))
    sims.sort(key=lambda x: (-x[0], -x[1]))
    clicks = np.bincount(np.concatenate([np.asarray(s) for s in train]), minlength=n_items + 1)
    out = np.zeros(n_items + 1)
    for s, _, n in sims[: c["k"]]:
        last_n = {it: p + 1 for p, it in enumerate(train[n])}
        star = max(p + 1 for p, it in enumerate(train[n]) if it in last_q)
        q_n = max(p + 1 for p, it in enumerate(seq) if it in last_n)
        for j, pj in last_n.items():
            v = s
            if c["lambda_inh"]:
                v *= math.exp(-abs(pj - star) / c["lambda_inh"])
            if c["lambda_ipw"]:
                v *= math.exp((q_n - L) / c["lambda_ipw"])
            if c["lambda_idf"]:
                v *= 1 + c["lambda_idf"] * math.log(len(train) / clicks[j])
            out[j] += v
    return out


@pytest.mark.parametrize("case", [
    dict(k=100, sample_size=0, lambda_spw=1.02, lambda_snh=5.0, lambda_inh=2.05, lambda_ipw=1.02, lambda_idf=5.0),
    dict(k=3, sample_size=0, lambda_spw=0.5, lambda_snh=0.3, lambda_inh=1.0, lambda_ipw=0.0, lambda_idf=0.0),
    dict(k=4, sample_size=6, lambda_spw=2.0, lambda_snh=1.0, lambda_inh=0.0, lambda_ipw=3.0, lambda_idf=1.0),
    dict(k=5, sample_size=0, lambda_spw=0.0, lambda_snh=0.0, lambda_inh=0.7, lambda_ipw=0.5, lambda_idf=0.0),
], ids=["vstan-defaults", "stan-small-k", "recent-sample", "no-position-weights"])
def test_vectorised_scores_equal_the_definition(case: dict) -> None:
    rng = np.random.default_rng(7)
    n_items = 12
    train = [rng.integers(1, n_items + 1, size=rng.integers(2, 7)).tolist() for _ in range(40)]
    times = sorted(rng.uniform(0, 10 * DAY, size=40).tolist())  # distinct: no ties in recency
    model = create_model("vstan", **case).fit(sessions(train, times, n_items))
    for _ in range(25):
        seq = rng.integers(1, n_items + 1, size=rng.integers(1, 6)).tolist()
        want = reference(train, times, seq, n_items, case)
        np.testing.assert_allclose(scores_of(model, seq, n_items)[1:], want[1:], rtol=2e-6, atol=1e-12)


def test_bad_settings_are_named() -> None:
    train = sessions(TRAIN, TIMES, 7)
    with pytest.raises(NextclickError, match="lambda_inh"):
        create_model("stan", lambda_inh=-1.0).fit(train)
    with pytest.raises(NextclickError, match="k must be"):
        create_model("vstan", k=0).fit(train)
