"""The model in a process of its own: the child's main loop (:func:`worker_main`, started as
``python -m nextclick.serve.process``) and the event loop's handle on it (:class:`ProcessWorker`).

Why a process: profiled under load, the service was bound by Python's global interpreter lock,
not by the cores. A model call holds the GIL for its glue (tensor dispatch, numpy bookkeeping, the
top-k's candidate handling) about as long as the event loop holds it for a request's HTTP and JSON
work, and in one process the two threads take turns on it. In its own process the model has its
own interpreter and a core of its own, and the event loop only writes and reads a few hundred
bytes per job on a pipe (:mod:`nextclick.serve.wire`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from nextclick.serve.artifacts import Loaded, load_artifact
from nextclick.serve.jobs import Job, Result, run_mixed
from nextclick.serve.metrics import Stats
from nextclick.serve.settings import Settings
from nextclick.serve.wire import (
    MSG_DROP,
    MSG_FAILED,
    MSG_JOBS,
    MSG_LOAD,
    MSG_LOADED,
    MSG_RESULTS,
    FrameReader,
    decode_jobs,
    decode_results,
    encode_job,
    encode_jobs,
    encode_results,
    int_message,
    read_frame,
    write_frame,
)
from nextclick.serve.worker import WorkerDied

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the child process
class _ModelProcess:
    """The child's state: its models by generation and the jobs that arrived. A reader thread
    drains the incoming pipe at all times (so the service never waits to write); the main thread
    scores every job that arrived while it ran the previous batch as the next one."""

    def __init__(self, rx: int, tx: int, scoring: str, max_batch: int) -> None:
        self.rx, self.tx = rx, tx
        self.scoring = scoring
        self.max_batch = max_batch
        self.models: dict[int, Loaded] = {}
        self.pending: collections.deque[tuple[int, Job]] = collections.deque()
        self.dropping: set[int] = set()
        self.cond = threading.Condition()
        self.send_lock = threading.Lock()
        self.alive = True

    def send(self, data: bytes) -> None:
        with self.send_lock:
            try:
                write_frame(self.tx, data)
            except OSError:  # the service is gone
                self.alive = False

    def load(self, gen: int, path: str) -> bool:
        """Load an artifact as generation ``gen`` and tell the service (its content id, or the error)."""
        try:
            loaded = load_artifact(path, self.scoring, copy=False)  # the service's private copy
        except Exception as e:
            self.send(int_message(MSG_LOADED, gen, 0, text=f"{type(e).__name__}: {e}"))
            return False
        loaded.gen = gen
        self.models[gen] = loaded
        self.send(int_message(MSG_LOADED, gen, 1, text=loaded.model_id))
        return True

    def read_loop(self) -> None:
        """The reader thread: jobs and drops join the queue; a load runs in a thread of its own
        (batches go on meanwhile)."""
        while True:
            try:
                msg = read_frame(self.rx)
            except (EOFError, OSError):
                break
            kind, a = np.frombuffer(msg, np.int64, 2).tolist()
            if kind == MSG_LOAD:
                threading.Thread(target=self.load, args=(a, msg[16:].decode()), daemon=True).start()
                continue
            with self.cond:
                if kind == MSG_JOBS:
                    self.pending.extend(decode_jobs(msg))
                elif kind == MSG_DROP:
                    self.dropping.add(a)
                self.cond.notify()
        with self.cond:
            self.alive = False
            self.cond.notify()

    def serve(self) -> None:
        """Score batches until the service closes the pipe."""
        while True:
            with self.cond:
                while self.alive and not self.pending:
                    self.cond.wait()
                if not self.alive:
                    return
                batch = [self.pending.popleft() for _ in range(min(self.max_batch, len(self.pending)))]
            self._score([t for t, _ in batch], [j for _, j in batch])
            with self.cond:  # a released generation goes once no queued job needs it
                for g in list(self.dropping):
                    if all(j.gen != g for _, j in self.pending):
                        self.models.pop(g, None)
                        self.dropping.discard(g)

    def _score(self, tags: list[int], jobs: list[Job]) -> None:
        t0 = time.perf_counter()
        try:
            results = run_mixed(self.models, jobs)
        except Exception as e:
            log.exception("model call failed")
            self.send(int_message(MSG_FAILED, len(tags), *tags, text=f"{type(e).__name__}: {e}"))
            return
        sc = self.models[jobs[-1].gen].scorer
        rows, fb = (sc.rows, sc.fallbacks) if sc is not None else (0, 0)
        self.send(encode_results(tags, results, time.perf_counter() - t0, rows, fb))


def worker_main(rx: int, tx: int, model_dir: str, gen: int, scoring: str, threads: int, max_batch: int) -> None:
    """Entry point of the model process: load the artifact, then serve batches until the pipe
    closes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[model]: %(message)s")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the service stops us by closing the pipe
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(max(threads, 1))
    proc = _ModelProcess(rx, tx, scoring, max_batch)
    if not proc.load(gen, model_dir):
        return
    threading.Thread(target=proc.read_loop, name="nextclick-model-reader", daemon=True).start()
    proc.serve()


# ---------------------------------------------------------------------- the event loop's side
class ProcessWorker:
    """The event loop's handle on the model process (``--model-worker process``, the default).

    Jobs go out on a non-blocking pipe (what the pipe cannot take at once waits in a buffer that
    ``add_writer`` drains), results come back through ``add_reader``: the event loop never blocks
    on the model, and no thread of this process touches it. At most ``max_inflight`` jobs are
    outstanding (the rest wait here). The process answers a load with its artifact's content id,
    which must be the one this side loaded (an artifact rewritten on disk is refused). If the
    process dies, the requests waiting on it fail (503), /readyz says not ready, and a new one is
    started, with growing pauses while it keeps failing."""

    def __init__(self, settings: Settings, stats: Stats) -> None:
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
        self.restart_task: asyncio.Task | None = None

    async def start(self, loaded: Loaded) -> None:
        self.loop = asyncio.get_running_loop()
        self.current = (loaded.serving_dir or loaded.model_dir, loaded.gen, loaded.model_id)
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
        # a plain child interpreter (``python -m nextclick.serve.process``) with two pipes: unlike
        # multiprocessing's spawn it never re-imports the caller's __main__
        down_r, down_w = os.pipe()  # event loop -> model
        up_r, up_w = os.pipe()  # model -> event loop
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this nextclick, however it was imported
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p),
               "OPENBLAS_NUM_THREADS": "1"}  # numpy's BLAS threads would spin beside the event loop
        cmd = [sys.executable, "-m", "nextclick.serve.process", str(down_r), str(up_w), model_dir, str(gen), s.scoring,
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
        """Have the process load ``loaded``'s artifact as generation ``loaded.gen``; when there is
        no process (it died and a restart has not succeeded), start one with this artifact."""
        where = loaded.serving_dir or loaded.model_dir
        if self.dead:
            await self._stop_restarting()
            self.current = (where, loaded.gen, loaded.model_id)
            try:
                await self._spawn()
            except BaseException:
                self._died()  # keeps trying, with the new artifact
                raise
            return
        fut = self.loop.create_future()  # type: ignore[union-attr]
        self.loading[loaded.gen] = (loaded.model_id, fut)
        self._write(int_message(MSG_LOAD, loaded.gen, text=where))
        await fut
        self.current = (where, loaded.gen, loaded.model_id)

    async def _stop_restarting(self) -> None:
        """Cancel a pending restart and end what it started (a reload starts the process instead)."""
        task, self.restart_task = self.restart_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._close_pipes()
        self._fail_all(WorkerDied("the model process is being replaced"))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def release(self, gen: int) -> None:
        self.backlog.append((0, int_message(MSG_DROP, gen), None))  # after every job queued for it
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
            self.restart_task = self.loop.create_task(self._restart())

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
