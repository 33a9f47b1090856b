"""The wire format between the service and its model process, and frame I/O on the pipes.

No pickle anywhere; both ends are this package. Pipes carry length-prefixed frames of raw bytes
(an 8-byte little-endian length, then the message) that start with an int64 message type; jobs and
results are int64 headers followed by the raw bytes of their int64 / float32 arrays. Jobs carry the
generation number of the model they were encoded for (its vocabulary), so a hot reload never
scores a job with the wrong model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from nextclick.serve.jobs import Job, Result

MSG_JOBS, MSG_LOAD, MSG_DROP = 1, 2, 3  # event loop -> worker
MSG_RESULTS, MSG_LOADED, MSG_FAILED = 1, 2, 3  # worker -> event loop
_I8, _F4 = np.dtype(np.int64), np.dtype(np.float32)


def encode_job(tag: int, job: Job) -> bytes:
    """One job under the caller's ``tag`` (its result comes back under the same tag)."""
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
    """The (tag, job) pairs of an :func:`encode_jobs` message."""
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


def int_message(*values: int, text: str = "") -> bytes:
    """A control message: int64 values, then UTF-8 text."""
    return np.array(values, np.int64).tobytes() + text.encode()


# Frames, not multiprocessing's Connection: the event loop's end is non-blocking once registered
# with the loop, and a message may arrive in pieces.
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

