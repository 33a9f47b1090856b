"""Validation data held out of training data (for early stopping without a validation set)."""

from __future__ import annotations

import numpy as np
import pytest

from nextclick.data.holdout import hold_out_last_clicks
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError


def sessions(n: int = 200, seed: int = 0) -> Sessions:
    rng = np.random.default_rng(seed)
    lists = [rng.integers(1, 50, size=int(rng.integers(1, 8))).tolist() for _ in range(n)]
    return Sessions.from_lists(lists, n_items=49, session_ids=np.arange(n) + 1000)


def test_the_last_click_of_a_share_of_sequences_is_held_out() -> None:
    train = sessions()
    fit, valid = hold_out_last_clicks(train, 0.1, seed=3)
    eligible = int((train.lengths >= 3).sum())
    assert valid.n_sessions == round(0.1 * eligible) and valid.last_only
    assert (valid.lengths >= 3).all()
    # fit: every click but the held-out targets, sessions in the same order
    assert fit.n_sessions == train.n_sessions and fit.n_events == train.n_events - valid.n_sessions
    pos = {sid: s for s, sid in enumerate(train.session_ids)}
    for v in range(valid.n_sessions):
        s = pos[valid.session_ids[v]]
        assert valid.session(v).tolist() == train.session(s).tolist()
        assert fit.session(s).tolist() == train.session(s)[:-1].tolist()
    held = {pos[sid] for sid in valid.session_ids}
    for s in set(range(train.n_sessions)) - held:
        assert fit.session(s).tolist() == train.session(s).tolist()
    # only the held-out clicks are targets
    assert valid.n_predictions() == valid.n_sessions
    # the same seed, the same sequences; another seed, others
    assert hold_out_last_clicks(train, 0.1, seed=3)[1].session_ids.tolist() == valid.session_ids.tolist()
    assert hold_out_last_clicks(train, 0.1, seed=4)[1].session_ids.tolist() != valid.session_ids.tolist()


def test_cap_and_errors() -> None:
    train = sessions(400)
    assert hold_out_last_clicks(train, 0.5, max_sequences=7)[1].n_sessions == 7
    with pytest.raises(NextclickError, match="in \\(0, 1\\)"):
        hold_out_last_clicks(train, 1.0)
    with pytest.raises(NextclickError, match="too few sequences of 3\\+ clicks"):
        hold_out_last_clicks(Sessions.from_lists([[1, 2], [2, 3]], n_items=3), 0.1)
