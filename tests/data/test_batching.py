"""Left padding to (B, T) and GRU4Rec's session-parallel mini-batches, on edge cases."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from nextclick.data.batching import (
    SessionParallelBatches,
    pad_arrays,
    pad_prefixes,
    pad_sessions,
    padding_mask,
    trim_padding,
)
from nextclick.data.sessions import Sessions


# ---------------------------------------------------------------------------- padding
def test_pad_sessions_left_pads_and_truncates_to_most_recent() -> None:
    x, kept = pad_sessions([[1, 2, 3], [4], [], [5, 6, 7, 8, 9], [1, 2, 3, 4]], max_len=4)
    assert x.shape == (5, 4) and x.dtype == np.int64
    assert x.tolist() == [
        [0, 1, 2, 3],  # shorter: padding on the LEFT
        [0, 0, 0, 4],
        [0, 0, 0, 0],  # empty session: all padding
        [6, 7, 8, 9],  # longer than T: the most recent T clicks
        [1, 2, 3, 4],  # exactly T
    ]
    assert kept.tolist() == [3, 1, 0, 4, 4]
    assert padding_mask(x).sum(axis=1).tolist() == kept.tolist()


def test_pad_sessions_t_equals_one_keeps_last_click() -> None:
    x, kept = pad_sessions([[1, 2, 3], [4], []], max_len=1)
    assert x.tolist() == [[3], [4], [0]] and kept.tolist() == [1, 1, 0]


def test_pad_sessions_accepts_sessions_object(tiny_sessions: Sessions) -> None:
    x, kept = pad_sessions(tiny_sessions, max_len=3)
    assert x.tolist() == [[1, 2, 3], [0, 0, 4], [6, 7, 8], [0, 9, 10]]
    assert kept.tolist() == [3, 1, 3, 2]


def test_pad_sessions_all_empty_and_no_sessions() -> None:
    x, kept = pad_sessions([[], []], max_len=3)
    assert x.tolist() == [[0, 0, 0], [0, 0, 0]] and kept.tolist() == [0, 0]
    x, kept = pad_sessions([], max_len=3)
    assert x.shape == (0, 3) and kept.shape == (0,)


def test_pad_prefixes_of_concatenated_sessions(tiny_sessions: Sessions) -> None:
    """Prefixes of session 2 ([5, 6, 7, 8]) never read clicks of the neighbouring sessions."""
    start = tiny_sessions.offsets[2]
    x, kept = pad_prefixes(tiny_sessions.items, np.array([start] * 4), np.array([1, 2, 3, 4]), max_len=3)
    assert x.tolist() == [[0, 0, 5], [0, 5, 6], [5, 6, 7], [6, 7, 8]]
    assert kept.tolist() == [1, 2, 3, 3]


@pytest.mark.parametrize("t", [0, -1])
def test_pad_rejects_non_positive_length(t: int) -> None:
    with pytest.raises(ValueError, match="max_len"):
        pad_sessions([[1, 2]], max_len=t)


# ---------------------------------------------------------------------------- session-parallel
def unique_click_sessions(lengths: list[int]) -> Sessions:
    """Sessions whose every click is a distinct item, so an (input, target) pair identifies itself."""
    items, n = [], 0
    for length in lengths:
        items.append(list(range(n + 1, n + length + 1)))
        n += length
    return Sessions.from_lists(items, n_items=max(n, 1))


def expected_pairs(s: Sessions) -> Counter:
    return Counter((int(a), int(b)) for sess in s.to_lists() for a, b in zip(sess[:-1], sess[1:]))


def run_epoch(s: Sessions, batches: SessionParallelBatches) -> tuple[Counter, list]:
    """Iterate one epoch, checking the invariants a GRU relies on; return the pairs and steps seen."""
    first = {int(s.session(i)[0]) for i in range(s.n_sessions) if s.lengths[i]}
    pairs: Counter = Counter()
    steps = list(batches)
    prev_targets = None
    for k, st in enumerate(steps):
        assert st.inputs.shape == st.targets.shape == st.reset.shape
        assert st.inputs.dtype == np.int64 and st.reset.dtype == bool
        if k == 0:
            assert st.keep is None and st.reset.all()
        else:
            if st.keep is not None:
                assert st.keep.ndim == 1 and np.all(np.diff(st.keep) > 0)
                prev_targets = prev_targets[st.keep]
            assert prev_targets.shape == st.inputs.shape
            # a slot continuing its session feeds the previous target; a reset slot starts a session
            cont = ~st.reset
            assert np.array_equal(st.inputs[cont], prev_targets[cont])
        # reset flags exactly at session starts
        assert [int(i) in first for i in st.inputs] == st.reset.tolist()
        assert np.all(st.targets == st.inputs + 1)  # same session: unique items are consecutive
        pairs.update(zip(st.inputs.tolist(), st.targets.tolist()))
        prev_targets = st.targets
    return pairs, steps


@pytest.mark.parametrize("order", ["given", "random"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 7])
def test_every_pair_exactly_once_per_epoch(order: str, batch_size: int) -> None:
    s = unique_click_sessions([3, 1, 5, 2, 2, 4, 1, 6, 2, 3])
    it = SessionParallelBatches(s, batch_size=batch_size, order=order, seed=1)
    want = expected_pairs(s)
    assert it.n_events == sum(want.values())
    for _ in range(2):  # every epoch
        pairs, steps = run_epoch(s, it)
        assert pairs == want
        assert max(st.inputs.size for st in steps) == min(batch_size, 8)  # 8 sessions of length >= 2


def test_tail_shrinks_with_keep() -> None:
    """Two slots; when the data runs out the batch shrinks and ``keep`` names the surviving rows."""
    s = unique_click_sessions([2, 4, 2])
    steps = list(SessionParallelBatches(s, batch_size=2, order="given"))
    assert [st.inputs.tolist() for st in steps] == [[1, 3], [7, 4], [5]]
    assert [st.reset.tolist() for st in steps] == [[True, True], [True, False], [False]]
    assert steps[1].keep is None
    assert steps[2].keep.tolist() == [1]  # slot 0's session ended, nothing left to refill it
    run_epoch(s, SessionParallelBatches(s, batch_size=2, order="given"))


def test_drop_tail_stops_when_a_slot_cannot_be_refilled() -> None:
    s = unique_click_sessions([2, 4, 2])
    steps = list(SessionParallelBatches(s, batch_size=2, order="given", drop_tail=True))
    assert [st.inputs.tolist() for st in steps] == [[1, 3], [7, 4]]
    assert all(st.keep is None and st.inputs.size == 2 for st in steps)
    pairs, _ = run_epoch(s, SessionParallelBatches(s, batch_size=2, order="given", drop_tail=True))
    assert not pairs - expected_pairs(s) and max(pairs.values()) == 1  # a subset, no duplicates


def test_sessions_shorter_than_two_are_skipped() -> None:
    s = Sessions.from_lists([[1], [], [2, 3], [4]], n_items=4)
    it = SessionParallelBatches(s, batch_size=3, order="given")
    steps = list(it)
    assert it.n_events == 1 and len(steps) == 1
    assert steps[0].inputs.tolist() == [2] and steps[0].targets.tolist() == [3]


def test_no_usable_sessions_yields_nothing() -> None:
    assert list(SessionParallelBatches(Sessions.from_lists([[1], [2]], n_items=2), batch_size=4)) == []


def test_batch_size_larger_than_number_of_sessions() -> None:
    s = unique_click_sessions([3, 2])
    steps = list(SessionParallelBatches(s, batch_size=64, order="given"))
    assert steps[0].inputs.size == 2 and steps[0].reset.all()
    pairs, _ = run_epoch(s, SessionParallelBatches(s, batch_size=64, order="given"))
    assert pairs == expected_pairs(s)


def test_random_order_is_seeded_and_changes_between_epochs() -> None:
    s = unique_click_sessions([2] * 30)
    first_inputs = lambda it: [list(st.inputs) for st in it]  # noqa: E731
    a, b = SessionParallelBatches(s, 4, seed=7), SessionParallelBatches(s, 4, seed=7)
    epoch1 = first_inputs(a)
    assert epoch1 == first_inputs(b)  # same seed, same order
    assert first_inputs(a) != epoch1  # a new permutation every epoch
    assert first_inputs(SessionParallelBatches(s, 4, order="given"))[0] == [1, 3, 5, 7]


def test_rejects_bad_arguments(tiny_sessions: Sessions) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        SessionParallelBatches(tiny_sessions, batch_size=0)
    with pytest.raises(ValueError, match="order"):
        SessionParallelBatches(tiny_sessions, batch_size=2, order="time")


def test_pad_arrays_equals_pad_sessions() -> None:
    seqs = [[1, 2, 3], [4], [], [5, 6, 7, 8, 9]]
    x, kept = pad_arrays([np.array(s, dtype=np.int64) for s in seqs], max_len=4)
    want_x, want_kept = pad_sessions(seqs, max_len=4)
    assert np.array_equal(x, want_x) and np.array_equal(kept, want_kept)
    x, kept = pad_arrays([], max_len=3)
    assert x.shape == (0, 3) and kept.shape == (0,)


def test_trim_padding_drops_columns_that_are_padding_in_every_row() -> None:
    x, _ = pad_sessions([[1, 2], [3]], max_len=5)
    assert trim_padding(x).tolist() == [[1, 2], [0, 3]]
    assert trim_padding(x, 3).tolist() == [[0, 1, 2], [0, 0, 3]]
    assert trim_padding(np.zeros((2, 4), np.int64)).shape == (2, 1)  # at least one column
