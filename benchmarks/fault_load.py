"""The load client of benchmarks/faults.py, run as a process of its own:

    python benchmarks/fault_load.py SPEC.json OUT.json

Visitors click through anonymous sessions at a bounded total rate (each visitor one click at a
time, paced), on raw HTTP/1.1 keep-alive connections (asyncio, standard library only: the client
costs little CPU next to the services on the same cores). A session's clicks alternate between
the replicas listed; a connection error marks that replica down for a while (doubling pauses) and
the click goes to another one at once; a 503 or a timeout is retried, paced, until
``retry_for`` seconds have passed; any other status ends that click.

OUT.json holds every attempt (send time from the start, latency, status, replica, visitor; status
-1 is a connection error, -2 a client timeout), the clicks acknowledged with a 200 for each
session in order, each session's last acknowledged time, and how many clicks were given up.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

CONN_ERROR, TIMEOUT = -1, -2


class Conn:
    """One keep-alive HTTP/1.1 connection to one replica, opened on first use and after a failure."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None
        self.body = b""

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None

    async def post(self, path: str, body: bytes, timeout: float) -> int:
        """The status of a POST of a JSON body (or CONN_ERROR / TIMEOUT); the answer's body in ``self.body``."""
        try:
            return await asyncio.wait_for(self._post(path, body), timeout)
        except TimeoutError:
            self.close()
            return TIMEOUT
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            return CONN_ERROR

    async def _post(self, path: str, body: bytes) -> int:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
        assert self.r is not None
        self.w.write(b"POST %s HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (path.encode(), len(body), body))
        line = await self.r.readline()
        if not line:
            raise ConnectionResetError("closed by the server")
        status = int(line.split()[1])
        length, close = 0, False
        while True:
            h = await self.r.readline()
            if h in (b"\r\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        self.body = await self.r.readexactly(length)
        if close:
            self.close()
        return status


@dataclass
class Spec:
    """What to load: the replicas, the total rate, how long, the visitors and their sessions."""

    urls: list[tuple[str, int]]
    rate: float  # attempts per second, all visitors together
    duration: float
    visitors: int
    start_at: float  # time.monotonic() of the start (the same clock in every process of this machine)
    items: list[int]  # item ids to click (a session never clicks one twice)
    prefix: str  # of the session ids
    session_len: tuple[int, int] = (5, 30)
    flood_visitors: int = 0  # of the visitors, those whose every click is a new session
    pairs: bool = False  # a session's clicks sent two at a time, one to each of the first two replicas
    timeout: float = 5.0
    retry_for: float = 20.0
    seed: int = 0


@dataclass
class Results:
    attempts: list[list[float]] = field(default_factory=list)  # [t, latency, status, replica, visitor]
    acked: dict[str, list[int]] = field(default_factory=dict)
    last_ack: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # one body per unexpected status
    given_up: int = 0  # clicks never acknowledged (retries ran out, or a status not worth retrying)


class Visitor:
    """One visitor: sessions one after another, one click at a time, paced to its share of the rate."""

    def __init__(self, v: int, spec: Spec, res: Results) -> None:
        self.v, self.spec, self.res = v, spec, res
        self.rng = random.Random(spec.seed * 100_003 + v)
        self.conns = [Conn(h, p) for h, p in spec.urls]
        self.down_until = [0.0] * len(self.conns)
        self.pause = [0.5] * len(self.conns)
        self.interval = spec.visitors / spec.rate * (2 if spec.pairs else 1)
        self.next_t = spec.start_at + self.rng.random() * self.interval  # spread the visitors' phases

    async def pace(self) -> None:
        now = time.monotonic()
        self.next_t = max(self.next_t + self.interval, now - self.interval)  # no burst to catch up after a stall
        if self.next_t > now:
            await asyncio.sleep(self.next_t - now)

    def replica(self, preferred: int) -> int:
        """The preferred replica unless it is marked down; then the one back soonest."""
        now = time.monotonic()
        order = [(preferred + i) % len(self.conns) for i in range(len(self.conns))]
        for r in order:
            if self.down_until[r] <= now:
                return r
        return min(order, key=lambda r: self.down_until[r])

    async def click(self, sid: str, item: int, preferred: int, paced: bool = False) -> None:
        """One click, retried until acknowledged or given up; ``paced``: its first attempt's slot
        was already taken (a pair of clicks shares one)."""
        s, res = self.spec, self.res
        path, body = f"/v1/sessions/{sid}/clicks", b'{"item": %d, "k": 20}' % item
        first, failover = time.monotonic(), paced
        while True:
            if not failover:
                await self.pace()
            r = preferred if s.pairs else self.replica(preferred)  # a pair's clicks never share a connection
            t = time.monotonic()
            status = await self.conns[r].post(path, body, s.timeout)
            done = time.monotonic()
            res.attempts.append([round(t - s.start_at, 4), round(done - t, 5), status, r, self.v])
            failover = False
            if status == 200:
                res.acked[sid].append(item)
                res.last_ack[sid] = done - s.start_at
                self.pause[r] = 0.5
                return
            if status == CONN_ERROR:  # replica gone: mark it down, go to another at once
                self.down_until[r] = done + self.pause[r]
                self.pause[r] = min(self.pause[r] * 2, 8.0)
                failover = any(self.down_until[o] <= done for o in range(len(self.conns)) if o != r)
            elif status != 503 and status != TIMEOUT:
                res.errors.setdefault(str(status), self.conns[r].body.decode(errors="replace")[:300])
                res.given_up += 1
                return
            if done - first > s.retry_for or done > s.start_at + s.duration:
                res.given_up += 1
                return

    async def run(self) -> None:
        s = self.spec
        end = s.start_at + s.duration
        flood = self.v < s.flood_visitors
        n_sessions = 0
        while time.monotonic() < end:
            sid = f"{s.prefix}{'f' if flood else 'v'}{self.v}-{n_sessions}"
            n_sessions += 1
            n = 1 if flood else self.rng.randint(*s.session_len)
            self.res.acked[sid] = []
            picked = self.rng.sample(s.items, n)
            if s.pairs:  # two clicks of the session at once, on two replicas
                for j in range(0, n - 1, 2):
                    if time.monotonic() >= end:
                        break
                    await self.pace()
                    await asyncio.gather(self.click(sid, picked[j], 0, True), self.click(sid, picked[j + 1], 1, True))
                continue
            for j, item in enumerate(picked):
                if time.monotonic() >= end:
                    break
                await self.click(sid, item, (self.v + j) % len(self.conns))  # a session's clicks alternate replicas
        for c in self.conns:
            c.close()


async def run_load(spec: Spec) -> Results:
    res = Results()
    await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    await asyncio.gather(*(Visitor(v, spec, res).run() for v in range(spec.visitors)))
    return res


def main(argv: list[str]) -> None:
    raw: dict[str, Any] = json.loads(open(argv[0]).read())
    raw["urls"] = [tuple(u) for u in raw["urls"]]
    if "session_len" in raw:
        raw["session_len"] = tuple(raw["session_len"])
    spec = Spec(**raw)
    res = asyncio.run(run_load(spec))
    with open(argv[1], "w") as f:
        json.dump({"attempts": res.attempts, "acked": res.acked, "last_ack": res.last_ack, "errors": res.errors,
                   "given_up": res.given_up}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
