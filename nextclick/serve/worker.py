"""Where the model runs next to the event loop: the :class:`ModelWorker` interface, shared by
:class:`ThreadWorker` (a model thread of the service process, ``--model-worker thread``) and
:class:`nextclick.serve.process.ProcessWorker` (a model process of its own, the default: there the
model and the event loop do not take turns on Python's GIL)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from nextclick.serve.artifacts import Loaded
from nextclick.serve.jobs import Job, Result, run_mixed
from nextclick.serve.metrics import Stats

log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
    """The model side is not running (requests waiting on it fail; the service answers 503)."""


class ModelWorker(Protocol):
    """What the service needs from the side that runs the model."""

    async def start(self, loaded: Loaded) -> None: ...  # serve ``loaded`` (generation ``loaded.gen``)
    def ready(self) -> bool: ...
    def pid(self) -> int | None: ...  # the process the model runs in
    async def adopt(self, loaded: Loaded) -> None: ...  # make a newly loaded generation available
    def release(self, gen: int) -> None: ...  # drop a generation once the jobs queued for it ran
    async def submit(self, job: Job) -> Result: ...
    def close(self) -> None: ...


class ThreadWorker:
    """Micro-batcher on a model thread of this process (``--model-worker thread``): the thread
    takes every job queued while it was busy (up to ``max_batch``) as one batch and pulls its
    next batch itself, so it never waits for the event loop; results go back with one
    ``call_soon_threadsafe`` per batch. Simple, but shares the GIL with the event loop."""

    def __init__(self, max_batch: int, stats: Stats) -> None:
        self.max_batch = max(int(max_batch), 1)
        self.stats = stats
        self.models: dict[int, Loaded] = {}
        # a Job, a model generation to drop once the jobs queued before it ran, or None: stop
        self.queue: queue.SimpleQueue[Job | int | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="nextclick-model", daemon=True)

    async def start(self, loaded: Loaded) -> None:
        self.models[loaded.gen] = loaded
        self.thread.start()

    def ready(self) -> bool:
        return self.thread.is_alive()

    def pid(self) -> int:
        return os.getpid()

    async def adopt(self, loaded: Loaded) -> None:
        """Make a newly loaded model (with its scorer) available to jobs of its generation."""
        self.models[loaded.gen] = loaded

    def release(self, gen: int) -> None:
        """The event loop no longer encodes jobs for ``gen``; queued ones still run on it."""
        self.queue.put(gen)

    async def submit(self, job: Job) -> Result:
        if not self.thread.is_alive():
            raise WorkerDied("the model thread is not running")
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self.queue.put(job)
        return await job.future

    def _run(self) -> None:
        q = self.queue
        while True:
            item = q.get()
            if item is None:
                return
            jobs: list[Job] = []
            drops: list[int] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                    break
                if isinstance(item, int):
                    drops.append(item)
                else:
                    jobs.append(item)
                if len(jobs) >= self.max_batch:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if jobs:
                self._batch(jobs)
            for g in drops:
                self.models.pop(g, None)
            if stop:
                return

    def _batch(self, jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            results: list | BaseException = run_mixed(self.models, jobs)
        except Exception as e:  # never leave a request hanging
            log.exception("model call failed")
            results = e
        else:
            self.stats.batch(time.perf_counter() - t0, len(jobs))
            sc = self.models[jobs[-1].gen].scorer
            if sc is not None:
                self.stats.topk_rows, self.stats.topk_fallbacks = sc.rows, sc.fallbacks
        loops: dict[asyncio.AbstractEventLoop, list[int]] = {}
        for i, j in enumerate(jobs):
            loops.setdefault(j.loop, []).append(i)
        for loop, idx in loops.items():
            part = results if isinstance(results, BaseException) else [results[i] for i in idx]
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_deliver, [jobs[i] for i in idx], part)

    def close(self) -> None:
        self.queue.put(None)


def _deliver(jobs: Sequence[Job], results: Sequence[Result] | BaseException) -> None:
    """Event-loop side of a finished batch (a request may have been cancelled meanwhile)."""
    for n, j in enumerate(jobs):
        if j.future is None or j.future.done():
            continue
        if isinstance(results, BaseException):
            j.future.set_exception(results)
        else:
            j.future.set_result(results[n])

