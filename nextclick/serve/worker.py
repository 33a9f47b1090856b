"""The service's model side: loading an artifact, scoring batches of jobs, and the two ways of
running that next to the event loop (:class:`ProcessWorker`, the default, and
:class:`ThreadWorker`).

Why a process: profiled under load, the service was bound by Python's global interpreter lock,
not by the cores. A model call holds the GIL for its glue (tensor dispatch, numpy bookkeeping, the
top-k's candidate handling) about as long as the event loop holds it for a request's HTTP and
JSON work, and the two threads took turns on it: one process used about one of the two cores
(GRU4Rec at 105k items: 790 requests/s at 6 connections with the model on a thread, 1,124 with the
model in its own process, same run; docs/benchmarks.md). In its own process the model has its own
interpreter and a core of its own, and the event loop only writes and reads a few hundred bytes
per job on a pipe.

Wire format (no pickle anywhere; both ends are this module): length-prefixed frames of raw bytes
that start with an int64 message type; jobs and results are int64 headers followed by the raw
bytes of their int64 / float32 arrays. Jobs carry the generation number of the model they were encoded for
(its vocabulary), so a hot reload never scores a job with the wrong model.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.models.base import Recommender
from nextclick.ranking.bounded import TopK

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- artifacts
def artifact_id(model_dir: str | Path) -> str:
    """Content hash of an artifact (config + weights), tagging stored model states."""
    h = hashlib.sha256()
    for name in ("config.json", "vocab.json", "weights.safetensors"):
        p = Path(model_dir) / name
        if p.exists():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Loaded:
    model: Recommender
    model_id: str
    model_dir: str
    state_size: int
    pop_top: tuple[np.ndarray, np.ndarray]  # popularity ranking, for sessions with no known click
    scorer: TopK | None = None  # dot-product models: exact top-k without full score rows
    gen: int = 0  # generation number in this service (jobs name the model they were encoded for)


def load_artifact(model_dir: str, scoring: str = "auto", with_scorer: bool = True) -> Loaded:
    """Load an artifact; ``with_scorer=False`` skips the top-k structures (the event loop's copy
    of a model that a worker process scores)."""
    model = Recommender.load(model_dir)
    pop = model.popularity_.astype(np.float32).copy()
    pop[0] = -np.inf
    order = np.argsort(-pop[1:], kind="stable")[:1000] + 1
    scorer = None
    if with_scorer:
        layer = model.output_layer()
        scorer = TopK(layer[0], layer[1], mode=scoring) if layer is not None else None  # type: ignore[arg-type]
        if scorer is not None:
            log.info("top-k scoring: %s", scorer.mode)
    return Loaded(model, artifact_id(model_dir), str(model_dir), model.live_state_size(), (order, pop[order]), scorer)


# ---------------------------------------------------------------------- jobs and batches
@dataclass
class Job:
    clicks: np.ndarray  # known clicks (internal indices), most recent last
    new_item: int | None  # index of the new click (0 unknown), None: no new click
    state: np.ndarray | None  # float32 state before the click (None: zero / none)
    replay: bool  # state must be rebuilt from clicks first (new model or lost state)
    k: int
    exclude: np.ndarray | None
    allow: np.ndarray | None
    deny: np.ndarray | None
    gen: int = 0  # the model generation the indices belong to
    future: asyncio.Future = field(default=None, repr=False)  # type: ignore[assignment]
    loop: asyncio.AbstractEventLoop = field(default=None, repr=False)  # type: ignore[assignment]


Result = tuple[np.ndarray | None, np.ndarray, np.ndarray]  # new state, item indices, scores


def _by_group(loaded: Loaded, jobs: Sequence[Job], call: Any) -> tuple[list[np.ndarray | None], list[Any]]:
    """Run ``call(states, clicks, new_items)`` once for the jobs with a new click and once for the
    others (``new_items`` None); ``call`` returns (new states, one output row per job). Returns each
    job's new state (None for models without one) and its output row, in job order."""
    size = loaded.state_size
    states_out: list[np.ndarray | None] = [None] * len(jobs)
    rows: list[Any] = [None] * len(jobs)
    for has_click in (True, False):
        idx = [i for i, j in enumerate(jobs) if (j.new_item is not None) == has_click]
        if not idx:
            continue
        st = None
        if size:
            st = np.stack([jobs[i].state if jobs[i].state is not None else np.zeros(size, np.float32) for i in idx])
        new_items = np.array([jobs[i].new_item for i in idx], dtype=np.int64) if has_click else None
        st_new, out = call(st, [jobs[i].clicks for i in idx], new_items)
        for r, i in enumerate(idx):
            rows[i] = out[r]
            if size and st_new is not None:
                states_out[i] = np.asarray(st_new[r], dtype=np.float32)
    return states_out, rows


def run_jobs(loaded: Loaded, jobs: Sequence[Job]) -> list[Result]:
    """Score a batch of jobs: model step or query, then top-k per job."""
    model, size = loaded.model, loaded.state_size
    for j in jobs:  # rebuild a state from the clicks (stateless calls, a reload or a lost state)
        if size and j.replay:
            st = np.zeros((1, size), np.float32)
            prior = j.clicks[:-1] if j.new_item else j.clicks
            for i in range(prior.size):  # state updates only: no catalogue scoring per click
                if loaded.scorer is not None:
                    st, _ = model.live_query(st, [prior[: i + 1]], prior[i : i + 1])
                else:
                    st, _ = model.live_step(st, [prior[: i + 1]], prior[i : i + 1])
            j.state = np.asarray(st, dtype=np.float32).reshape(-1)
    if loaded.scorer is not None:  # dot-product models: query vectors, exact top-k from TopK
        states_out, queries = _by_group(loaded, jobs, model.live_query)
        ids, sc = loaded.scorer.topk(
            torch.stack(queries), max(j.k for j in jobs),
            [j.exclude for j in jobs], [j.allow for j in jobs], [j.deny for j in jobs],
        )
        out = []
        for r, j in enumerate(jobs):
            keep = np.isfinite(sc[r, : j.k])
            out.append((states_out[r], ids[r, : j.k][keep], sc[r, : j.k][keep]))
        return out

    def step_or_scores(st: np.ndarray | None, clicks: list, new_items: np.ndarray | None) -> tuple:
        if new_items is None:
            return st, model.live_scores(st, clicks)
        return model.live_step(st, clicks, new_items)

    states_out, rows = _by_group(loaded, jobs, step_or_scores)
    scores = np.stack(rows).astype(np.float32, copy=False)
    out: list[Result] = []
    simple = [i for i, j in enumerate(jobs) if j.allow is None and j.deny is None]
    top_all: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if simple:
        kmax = max(jobs[i].k for i in simple)
        excl = [jobs[i].exclude if jobs[i].exclude is not None else np.zeros(0, np.int64) for i in simple]
        ids, sc = model.topk(scores[simple], kmax, excl)
        for r, i in enumerate(simple):
            top_all[i] = (ids[r, : jobs[i].k], sc[r, : jobs[i].k])
    for i, j in enumerate(jobs):
        if i not in top_all:
            excl = [j.exclude] if j.exclude is not None else None
            ids, sc = model.topk(scores[i : i + 1], j.k, excl, j.allow, j.deny)
            top_all[i] = (ids[0], sc[0])
        ids, sc = top_all[i]
        keep = np.isfinite(sc)
        out.append((states_out[i], ids[keep], sc[keep]))
    return out


def run_mixed(models: dict[int, Loaded], jobs: Sequence[Job]) -> list[Result]:
    """``run_jobs`` per model generation (a batch straddling a hot reload), results in job order."""
    gens = {j.gen for j in jobs}
    if len(gens) == 1:
        return run_jobs(models[jobs[0].gen], jobs)
    out: list[Any] = [None] * len(jobs)
    for g in gens:
        idx = [i for i, j in enumerate(jobs) if j.gen == g]
        for i, r in zip(idx, run_jobs(models[g], [jobs[i] for i in idx])):
            out[i] = r
    return out


class Stats:
    """What the model side reports to /metrics (written by one thread, read by the event loop)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.topk_rows = 0
        self.topk_fallbacks = 0

    def batch(self, seconds: float, n: int) -> None:
        self.metrics.model_seconds.observe(seconds)
        self.metrics.batch_size.observe(n)


# ---------------------------------------------------------------------- the thread worker
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


# ---------------------------------------------------------------------- wire format
MSG_JOBS, MSG_LOAD, MSG_DROP = 1, 2, 3  # event loop -> worker
MSG_RESULTS, MSG_LOADED, MSG_FAILED = 1, 2, 3  # worker -> event loop
_I8, _F4 = np.dtype(np.int64), np.dtype(np.float32)


def encode_job(tag: int, job: Job) -> bytes:
    lists = (job.exclude, job.allow, job.deny)
    head = np.array(
        [0, tag, job.gen, job.clicks.size, -1 if job.new_item is None else job.new_item,
         -1 if job.state is None else job.state.size, int(job.replay), job.k,
         *(-1 if a is None else len(a) for a in lists)],
        np.int64,
    )
    parts = [head.tobytes(), np.ascontiguousarray(job.clicks, np.int64).tobytes()]
    parts += [np.ascontiguousarray(a, np.int64).tobytes() for a in lists if a is not None]
    if job.state is not None:
        parts.append(np.ascontiguousarray(job.state, np.float32).tobytes())
    return b"".join(parts)


def encode_jobs(encoded: Sequence[bytes]) -> bytes:
    """Several encoded jobs as one message (one write, one wake-up of the model process)."""
    head = np.array([MSG_JOBS, len(encoded), *(len(e) for e in encoded)], np.int64)
    return head.tobytes() + b"".join(encoded)


def decode_jobs(buf: bytes) -> list[tuple[int, Job]]:
    n = int(np.frombuffer(buf, np.int64, 1, 8)[0])
    sizes = np.frombuffer(buf, np.int64, n, 16).tolist()
    off, out = 16 + 8 * n, []
    for size in sizes:
        out.append(decode_job(buf[off : off + size]))
        off += size
    return out


def decode_job(buf: bytes) -> tuple[int, Job]:
    h = np.frombuffer(buf, np.int64, 11).tolist()
    off = 11 * 8

    def take(n: int, dt: np.dtype) -> np.ndarray:
        nonlocal off
        a = np.frombuffer(buf, dt, n, off).copy()
        off += n * dt.itemsize
        return a

    clicks = take(h[3], _I8)
    lists = [None if n < 0 else take(n, _I8) for n in h[8:11]]
    state = None if h[5] < 0 else take(h[5], _F4)
    job = Job(clicks, None if h[4] < 0 else h[4], state, bool(h[6]), h[7], lists[0], lists[1], lists[2], gen=h[2])
    return h[1], job


def encode_results(tags: Sequence[int], results: Sequence[Result], seconds: float, rows: int, fallbacks: int) -> bytes:
    parts = [np.array([MSG_RESULTS, len(tags), rows, fallbacks, int(seconds * 1e9)], np.int64).tobytes()]
    for t, (st, ids, sc) in zip(tags, results):
        parts.append(np.array([t, ids.size, -1 if st is None else st.size], np.int64).tobytes())
        parts.append(np.ascontiguousarray(ids, np.int64).tobytes())
        parts.append(np.ascontiguousarray(sc, np.float32).tobytes())
        if st is not None:
            parts.append(np.ascontiguousarray(st, np.float32).tobytes())
    return b"".join(parts)


def decode_results(buf: bytes) -> tuple[list[tuple[int, Result]], float, int, int]:
    _, n, rows, fallbacks, ns = np.frombuffer(buf, np.int64, 5).tolist()
    off, out = 40, []
    for _ in range(n):
        t, m, s = np.frombuffer(buf, np.int64, 3, off).tolist()
        off += 24
        ids = np.frombuffer(buf, np.int64, m, off).copy()
        off += 8 * m
        sc = np.frombuffer(buf, np.float32, m, off).copy()
        off += 4 * m
        st = None
        if s >= 0:
            st = np.frombuffer(buf, np.float32, s, off).copy()
            off += 4 * s
        out.append((t, (st, ids, sc)))
    return out, ns / 1e9, rows, fallbacks


def _int_msg(*values: int, text: str = "") -> bytes:
    return np.array(values, np.int64).tobytes() + text.encode()


# Frames on the pipes: an 8-byte little-endian length, then the message. (Not multiprocessing's
# Connection: the event loop's end is non-blocking once registered with the loop, and a message
# may arrive in pieces.)
def write_frame(fd: int, msg: bytes) -> None:
    """Write one frame to a blocking fd (all of it)."""
    view = memoryview(len(msg).to_bytes(8, "little") + msg)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, n: int) -> bytes:
    parts, left = [], n
    while left:
        b = os.read(fd, left)
        if not b:
            raise EOFError
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


def read_frame(fd: int) -> bytes:
    """Read one frame from a blocking fd (EOFError when the writer is gone)."""
    return _read_exact(fd, int.from_bytes(_read_exact(fd, 8), "little"))


class FrameReader:
    """Frames from a non-blocking fd, as they complete."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()

    def read(self) -> tuple[list[bytes], bool]:
        """Every frame completed by what can be read now, and whether the writer is gone."""
        eof = False
        while True:
            try:
                b = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not b:
                eof = True
                break
            self.buf += b
        out, off, buf = [], 0, self.buf
        while len(buf) - off >= 8:
            n = int.from_bytes(buf[off : off + 8], "little")
            if len(buf) - off - 8 < n:
                break
            out.append(bytes(buf[off + 8 : off + 8 + n]))
            off += 8 + n
        del buf[:off]
        return out, eof


# ---------------------------------------------------------------------- the worker process
def worker_main(rx: int, tx: int, model_dir: str, gen: int, scoring: str, threads: int, max_batch: int) -> None:
    """Entry point of the model process: load the artifact, then serve batches until the pipe
    closes. A reader thread drains the incoming pipe at all times (so the service never waits to
    write), and every job that arrived while a batch ran joins the next one."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[model]: %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the service stops us by closing the pipe
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(max(threads, 1))
    send_lock = threading.Lock()
    alive = [True]

    def send(data: bytes) -> None:
        with send_lock:
            try:
                write_frame(tx, data)
            except OSError:  # the service is gone
                alive[0] = False

    def loaded_msg(g: int, loaded: Loaded | None, error: str = "") -> bytes:
        return _int_msg(MSG_LOADED, g, int(loaded is not None), text=loaded.model_id if loaded is not None else error)

    models: dict[int, Loaded] = {}
    try:
        models[gen] = load_artifact(model_dir, scoring)
    except Exception as e:
        send(loaded_msg(gen, None, f"{type(e).__name__}: {e}"))
        return
    models[gen].gen = gen
    send(loaded_msg(gen, models[gen]))
    pending: collections.deque[tuple[int, Job]] = collections.deque()
    dropping: set[int] = set()
    cond = threading.Condition()

    def load(g: int, path: str) -> None:  # a reload, in a thread: batches go on meanwhile
        try:
            loaded = load_artifact(path, scoring)
        except Exception as e:
            send(loaded_msg(g, None, f"{type(e).__name__}: {e}"))
            return
        loaded.gen = g
        models[g] = loaded
        send(loaded_msg(g, loaded))

    def reader() -> None:
        while True:
            try:
                msg = read_frame(rx)
            except (EOFError, OSError):
                break
            kind, a = np.frombuffer(msg, np.int64, 2).tolist()
            if kind == MSG_LOAD:
                threading.Thread(target=load, args=(a, msg[16:].decode()), daemon=True).start()
                continue
            with cond:
                if kind == MSG_JOBS:
                    pending.extend(decode_jobs(msg))
                elif kind == MSG_DROP:
                    dropping.add(a)
                cond.notify()
        with cond:
            alive[0] = False
            cond.notify()

    threading.Thread(target=reader, name="nextclick-model-reader", daemon=True).start()
    while True:
        with cond:
            while alive[0] and not pending:
                cond.wait()
            if not alive[0]:
                return
            batch = [pending.popleft() for _ in range(min(max_batch, len(pending)))]
        tags, jobs = [t for t, _ in batch], [j for _, j in batch]
        t0 = time.perf_counter()
        try:
            results = run_mixed(models, jobs)
        except Exception as e:
            log.exception("model call failed")
            send(_int_msg(MSG_FAILED, len(tags), *tags, text=f"{type(e).__name__}: {e}"))
        else:
            sc = models[jobs[-1].gen].scorer
            rows, fb = (sc.rows, sc.fallbacks) if sc is not None else (0, 0)
            send(encode_results(tags, results, time.perf_counter() - t0, rows, fb))
        with cond:
            for g in list(dropping):
                if all(j.gen != g for _, j in pending):
                    models.pop(g, None)
                    dropping.discard(g)


class WorkerDied(RuntimeError):
    pass


class ProcessWorker:
    """The event loop's handle on the model process (``--model-worker process``, the default).

    Jobs go out on a non-blocking pipe (what the pipe cannot take at once waits in a buffer that
    ``add_writer`` drains), results come back through ``add_reader``: the event loop never blocks
    on the model, and no thread of this process touches it. At most ``max_inflight`` jobs are
    outstanding (the rest wait here). The process answers a load with its artifact's content id,
    which must be the one this side loaded (an artifact rewritten on disk is refused). If the
    process dies, the requests waiting on it fail (503), /readyz says not ready, and a new one is
    started, with growing pauses while it keeps failing."""

    def __init__(self, settings: Any, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats
        self.max_inflight = 4 * max(int(settings.max_batch), 1)
        self.waiting: dict[int, Job] = {}  # tag -> job sent to the process
        self.backlog: collections.deque[tuple[int, bytes, Job | None]] = collections.deque()  # None: control
        self.loading: dict[int, tuple[str, asyncio.Future]] = {}  # gen -> (expected artifact id, done)
        self.tag = 0
        self.proc: subprocess.Popen | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self.dead = True  # no process, or one not yet ready
        self.flush_scheduled = False
        self.rx: int | None = None
        self.tx: int | None = None
        self.out = bytearray()  # frames the pipe has not taken yet
        self.writing = False
        self.failures = 0

    async def start(self, loaded: Loaded) -> None:
        self.loop = asyncio.get_running_loop()
        self.current = (loaded.model_dir, loaded.gen, loaded.model_id)
        try:
            await self._spawn()
        except BaseException:
            self.close()
            raise

    def ready(self) -> bool:
        return not self.dead

    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def _spawn(self) -> None:
        model_dir, gen, model_id = self.current
        s = self.settings
        # a plain child interpreter (``python -m nextclick.serve.worker``) with two pipes: unlike
        # multiprocessing's spawn it never re-imports the caller's __main__
        down_r, down_w = os.pipe()  # event loop -> model
        up_r, up_w = os.pipe()  # model -> event loop
        root = str(Path(__file__).resolve().parent.parent)  # this nextclick, however it was imported
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               "OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS threads would spin beside the event loop
        cmd = [sys.executable, "-m", "nextclick.serve.worker", str(down_r), str(up_w), model_dir, str(gen), s.scoring,
               str(s.torch_threads), str(s.max_batch)]
        try:
            self.proc = subprocess.Popen(cmd, pass_fds=(down_r, up_w), close_fds=True, env=env)
        except BaseException:
            for fd in (down_w, up_r):
                os.close(fd)
            raise
        finally:
            os.close(down_r)
            os.close(up_w)
        self.rx, self.tx = up_r, down_w
        os.set_blocking(up_r, False)
        os.set_blocking(down_w, False)
        self.reader = FrameReader(up_r)
        self.out.clear()
        fut = self.loop.create_future()  # type: ignore[union-attr]
        self.loading[gen] = (model_id, fut)
        self.loop.add_reader(up_r, self._readable)  # type: ignore[union-attr]
        await fut
        self.dead = False
        self.failures = 0
        log.info("model process %d serves %s", self.proc.pid, model_dir)

    async def adopt(self, loaded: Loaded) -> None:
        """Have the process load ``loaded``'s artifact as generation ``loaded.gen``."""
        if self.dead:
            raise WorkerDied("the model process is not running")
        fut = self.loop.create_future()  # type: ignore[union-attr]
        self.loading[loaded.gen] = (loaded.model_id, fut)
        self._write(_int_msg(MSG_LOAD, loaded.gen, text=loaded.model_dir))
        await fut
        self.current = (loaded.model_dir, loaded.gen, loaded.model_id)

    def release(self, gen: int) -> None:
        self.backlog.append((0, _int_msg(MSG_DROP, gen), None))  # after every job queued for it
        self._flush()

    async def submit(self, job: Job) -> Result:
        if self.dead:
            raise WorkerDied("the model process is not running")
        job.future = self.loop.create_future()  # type: ignore[union-attr]
        self.tag += 1
        self.backlog.append((self.tag, encode_job(self.tag, job), job))
        if not self.flush_scheduled:  # one frame for every job submitted in this loop iteration
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)  # type: ignore[union-attr]
        return await job.future

    def _flush(self) -> None:
        self.flush_scheduled = False
        batch: list[bytes] = []
        while self.backlog and not self.dead:
            tag, msg, job = self.backlog[0]
            if job is None:  # a control message goes after the jobs queued before it
                self.backlog.popleft()
                if batch:
                    self._write(encode_jobs(batch))
                    batch = []
                self._write(msg)
                continue
            if len(self.waiting) >= self.max_inflight:
                break
            self.backlog.popleft()
            self.waiting[tag] = job
            batch.append(msg)
        if batch:
            self._write(encode_jobs(batch))

    def _write(self, msg: bytes) -> None:
        """Queue one frame and write what the pipe takes now; the rest when it is writable."""
        if self.tx is None:
            return
        self.out += len(msg).to_bytes(8, "little") + msg
        self._drain()

    def _drain(self) -> None:
        try:
            while self.out:
                n = os.write(self.tx, self.out)  # type: ignore[arg-type]
                del self.out[:n]
        except BlockingIOError:
            if not self.writing:
                self.writing = True
                self.loop.add_writer(self.tx, self._drain)  # type: ignore[union-attr, arg-type]
            return
        except OSError as e:
            log.error("writing to the model process: %r", e)
            self._died()
            return
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.tx)  # type: ignore[union-attr, arg-type]

    def _readable(self) -> None:
        try:
            frames, eof = self.reader.read()
            for msg in frames:
                self._handle(msg)
        except Exception:
            log.exception("reading from the model process")
            eof = True
        if eof:
            self._died()
            return
        if self.backlog and len(self.waiting) < self.max_inflight:
            self._flush()

    def _handle(self, msg: bytes) -> None:
        kind = int(np.frombuffer(msg, np.int64, 1)[0])
        if kind == MSG_RESULTS:
            results, seconds, rows, fallbacks = decode_results(msg)
            self.stats.batch(seconds, len(results))
            self.stats.topk_rows, self.stats.topk_fallbacks = rows, fallbacks
            for tag, r in results:
                job = self.waiting.pop(tag, None)
                if job is not None and not job.future.done():
                    job.future.set_result(r)
        elif kind == MSG_LOADED:
            _, gen, ok = np.frombuffer(msg, np.int64, 3).tolist()
            want, fut = self.loading.pop(gen, (None, None))
            text = msg[24:].decode()
            if fut is None or fut.done():
                return
            if not ok:
                fut.set_exception(RuntimeError(text))
            elif text != want:
                fut.set_exception(RuntimeError(
                    f"the model process loaded artifact {text}, this process {want}: "
                    "was the artifact rewritten on disk? reload it"))
            else:
                fut.set_result(None)
        elif kind == MSG_FAILED:
            n = int(np.frombuffer(msg, np.int64, 2)[1])
            tags = np.frombuffer(msg, np.int64, n, 16).tolist()
            err = RuntimeError(f"model call failed: {msg[16 + 8 * n:].decode()}")
            for tag in tags:
                job = self.waiting.pop(tag, None)
                if job is not None and not job.future.done():
                    job.future.set_exception(err)

    def _close_pipes(self) -> None:
        if self.loop is not None:
            for fd, remove in ((self.rx, self.loop.remove_reader), (self.tx, self.loop.remove_writer)):
                if fd is not None:
                    with contextlib.suppress(Exception):
                        remove(fd)
        for fd in (self.tx, self.rx):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.rx = self.tx = None
        self.writing = False
        self.out.clear()

    def _fail_all(self, err: BaseException) -> None:
        for job in [*self.waiting.values(), *(j for _, _, j in self.backlog if j is not None)]:
            if not job.future.done():
                job.future.set_exception(err)
        for _, fut in self.loading.values():
            if not fut.done():
                fut.set_exception(err)
        self.waiting.clear()
        self.backlog.clear()
        self.loading.clear()

    def _died(self) -> None:
        if self.rx is None and self.dead:
            return
        self.dead = True
        self._close_pipes()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # alive but unreadable: start afresh
        self._fail_all(WorkerDied("the model process stopped"))
        if not self.closed and self.loop is not None:
            log.error("the model process stopped (exit code %s); starting a new one",
                      self.proc.poll() if self.proc else None)
            self.loop.create_task(self._restart())

    async def _restart(self) -> None:
        self.failures += 1
        await asyncio.sleep(min(30.0, 0.5 * 2 ** min(self.failures, 6)))  # no tight loop while it keeps failing
        if self.closed:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        try:
            await self._spawn()
        except Exception as e:
            log.error("restarting the model process failed: %s", e)
            self._died()  # cleans up and schedules the next try

    def close(self) -> None:
        self.closed = True
        self.dead = True
        self._close_pipes()
        self._fail_all(WorkerDied("the service is stopping"))
        if self.proc is not None:  # its pipe closed: it exits by itself
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _main(argv: list[str]) -> None:
    rx, tx, model_dir, gen, scoring, threads, max_batch = argv
    worker_main(int(rx), int(tx), model_dir, int(gen), scoring, int(threads), int(max_batch))


if __name__ == "__main__":
    _main(sys.argv[1:])
