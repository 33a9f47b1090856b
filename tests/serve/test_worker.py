"""The thread model worker: batches, and the release of a model generation after its jobs."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

import nextclick.serve.worker as w
from nextclick.serve.artifacts import Loaded
from nextclick.serve.jobs import Job
from nextclick.serve.metrics import Stats
from nextclick.serve.worker import ThreadWorker


def test_thread_worker_drops_a_generation_after_the_jobs_queued_before_it(monkeypatch) -> None:
    seen: list[tuple[int, bool]] = []
    gate = threading.Event()

    def fake_run(models, jobs):  # records which generations were still loaded when jobs ran
        gate.wait(5)
        seen.extend((j.gen, j.gen in models) for j in jobs)
        return [(None, np.zeros(0, np.int64), np.zeros(0, np.float32)) for _ in jobs]

    monkeypatch.setattr(w, "run_mixed", fake_run)

    class Hist:
        def observe(self, _):
            pass

    stats = Stats(type("M", (), {"model_seconds": Hist(), "batch_size": Hist()})())
    tw = ThreadWorker(max_batch=64, stats=stats)
    old = Loaded(model=None, model_id="a", model_dir="", state_size=0, popularity=None, popular_order=None, gen=0)
    new = Loaded(model=None, model_id="b", model_dir="", state_size=0, popularity=None, popular_order=None, gen=1)

    async def main() -> None:
        await tw.start(old)
        job = lambda g: Job(np.array([1]), 1, None, False, 5, None, None, None, gen=g)  # noqa: E731
        first = asyncio.ensure_future(tw.submit(job(0)))
        await asyncio.sleep(0.05)
        await tw.adopt(new)
        queued = asyncio.ensure_future(tw.submit(job(0)))  # encoded before the swap
        await asyncio.sleep(0.05)
        tw.release(0)
        gate.set()
        await asyncio.gather(first, queued)
        await tw.submit(job(1))
        tw.close()

    asyncio.run(main())
    assert seen == [(0, True), (0, True), (1, True)] and set(tw.models) == {1}
