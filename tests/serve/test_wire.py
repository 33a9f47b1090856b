"""The model process's wire format: plain int64 / float32 bytes, no pickle, lossless both ways."""

from __future__ import annotations

import numpy as np

from nextclick.serve.jobs import Job
from nextclick.serve.wire import decode_jobs, decode_results, encode_job, encode_jobs, encode_results


def test_jobs_round_trip() -> None:
    jobs = [
        Job(np.array([3, 1, 4]), 4, np.arange(5, dtype=np.float32) / 3, False, 20, None, None, None, gen=0),
        Job(np.array([7], np.int64), None, None, True, 5, np.array([7]), np.array([1, 2, 9]), np.zeros(0, np.int64), gen=3),
    ]
    out = decode_jobs(encode_jobs([encode_job(10 + i, j) for i, j in enumerate(jobs)]))
    assert [t for t, _ in out] == [10, 11]
    for want, (_, got) in zip(jobs, out):
        assert got.new_item == want.new_item and got.replay == want.replay and got.k == want.k and got.gen == want.gen
        np.testing.assert_array_equal(got.clicks, want.clicks)
        for a, b in ((got.state, want.state), (got.exclude, want.exclude), (got.allow, want.allow), (got.deny, want.deny)):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
                assert a.dtype == (np.float32 if a is got.state else np.int64)


def test_results_round_trip() -> None:
    results = [
        (np.ones(4, np.float32), np.array([5, 2]), np.array([0.5, -1.25], np.float32)),
        (None, np.zeros(0, np.int64), np.zeros(0, np.float32)),
    ]
    out, seconds, rows, fallbacks = decode_results(encode_results([7, 9], results, 0.0025, 123, 4))
    assert [t for t, _ in out] == [7, 9] and abs(seconds - 0.0025) < 1e-9 and (rows, fallbacks) == (123, 4)
    for (st, ids, sc), (_, (st2, ids2, sc2)) in zip(results, out):
        assert (st is None) == (st2 is None)
        if st is not None:
            np.testing.assert_array_equal(st, st2)
        np.testing.assert_array_equal(ids, ids2)
        np.testing.assert_array_equal(sc, sc2)
