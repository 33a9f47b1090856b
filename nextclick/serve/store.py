"""Session stores for the service: in-process (TTL + size bound) and Redis (shared by replicas).

A record holds the session's recent clicks as the shop's own item ids (so a hot-reloaded model with
a new vocabulary can re-read them), and, for models with a state of their own (GRU4Rec), that
state as float32 bytes tagged with the id of the model artifact that produced it. A record whose
tag differs from the serving model's is replayed from its clicks.

A click is read, extended and written back; :meth:`SessionStore.swap` writes it back only if the
stored record is still the one that was read, so two replicas handling clicks of one session at
the same moment cannot overwrite each other's click (the loser reads again and redoes its click).

Both stores share one async interface and one test suite (tests/serve/test_store.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson


@dataclass
class SessionRecord:
    items: list[Any] = field(default_factory=list)  # the shop's item ids, oldest first (bounded)
    state: np.ndarray | None = None  # float32 model state after the last click
    model_id: str = ""  # artifact that produced ``state``
    n_clicks: int = 0  # clicks ever received, known or not
    n_unknown: int = 0  # of which unknown to the model
    raw: bytes | None = field(default=None, repr=False, compare=False)  # as read from the store (None: a new session)

    def to_bytes(self) -> bytes:
        head = orjson.dumps({"i": self.items, "m": self.model_id, "n": self.n_clicks, "u": self.n_unknown})
        body = b"" if self.state is None else np.ascontiguousarray(self.state, dtype=np.float32).tobytes()
        return len(head).to_bytes(4, "little") + head + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> SessionRecord:
        n = int.from_bytes(raw[:4], "little")
        head = orjson.loads(raw[4 : 4 + n])
        body = raw[4 + n :]
        state = np.frombuffer(body, dtype=np.float32).copy() if body else None
        return cls(items=head["i"], state=state, model_id=head["m"], n_clicks=head["n"], n_unknown=head["u"], raw=raw)


class SessionStore(Protocol):
    async def get(self, session_id: str) -> SessionRecord | None: ...
    async def put(self, session_id: str, record: SessionRecord) -> None: ...
    async def swap(self, session_id: str, record: SessionRecord) -> bool: ...
    async def delete(self, session_id: str) -> bool: ...
    async def size(self) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


class MemoryStore:
    """In-process LRU with a time-to-live: at most ``max_sessions`` records, each expiring
    ``ttl`` seconds after its last write. Records are kept serialized, exactly as in Redis."""

    def __init__(self, ttl: float = 1800.0, max_sessions: int = 1_000_000, clock: Any = time.monotonic) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.evicted = 0

    def _purge(self) -> None:
        now = self._clock()
        while self._data:  # oldest writes first: stop at the first live one
            sid, (exp, _) = next(iter(self._data.items()))
            if exp > now:
                break
            del self._data[sid]

    async def get(self, session_id: str) -> SessionRecord | None:
        item = self._data.get(session_id)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._data[session_id]
            return None
        return SessionRecord.from_bytes(item[1])

    async def put(self, session_id: str, record: SessionRecord) -> None:
        self._write(session_id, record.to_bytes())

    async def swap(self, session_id: str, record: SessionRecord) -> bool:
        """Write ``record`` only if the session's stored record is still ``record.raw`` (None:
        still no record); False, writing nothing, when it changed. On success ``record.raw``
        becomes what was written."""
        item = self._data.get(session_id)
        current = None if item is None or item[0] <= self._clock() else item[1]
        if current is not record.raw and current != record.raw:
            return False
        record.raw = record.to_bytes()
        self._write(session_id, record.raw)
        return True

    def _write(self, session_id: str, data: bytes) -> None:
        self._data[session_id] = (self._clock() + self.ttl, data)
        self._data.move_to_end(session_id)
        self._purge()
        while len(self._data) > self.max_sessions:
            self._data.popitem(last=False)
            self.evicted += 1

    async def delete(self, session_id: str) -> bool:
        return self._data.pop(session_id, None) is not None

    async def size(self) -> int:
        self._purge()
        return len(self._data)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class StoreUnavailable(Exception):
    """The session store cannot be reached now (the service answers 503, and retries by itself:
    the next request reconnects)."""


# compare-and-set in one step on the server: ARGV[1] is the record the writer read ('' for none)
_SWAP = """
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisStore:
    """Records in Redis under ``prefix + session_id`` with a TTL (``SET ... PX``), so several
    service replicas share sessions. Size is bounded by Redis' own ``maxmemory`` policy.
    :meth:`swap` compares and sets in one Lua script."""

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", ttl: float = 1800.0, prefix: str = "nextclick:s:", timeout: float = 1.0
    ) -> None:
        import redis.asyncio as aioredis
        import redis.exceptions

        self.ttl = ttl
        self.prefix = prefix
        # short timeouts: while Redis is away, requests fail fast (503) instead of hanging
        self._r = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        self._down = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self._swap = self._r.register_script(_SWAP)  # by its digest; loaded again after a Redis restart

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except self._down as e:
            raise StoreUnavailable(f"redis {what}: {type(e).__name__}") from None

    async def get(self, session_id: str) -> SessionRecord | None:
        raw = await self._call("get", self._r.get(self.prefix + session_id))
        return None if raw is None else SessionRecord.from_bytes(raw)

    async def put(self, session_id: str, record: SessionRecord) -> None:
        await self._call("set", self._r.set(self.prefix + session_id, record.to_bytes(), px=int(self.ttl * 1000)))

    async def swap(self, session_id: str, record: SessionRecord) -> bool:
        """Write ``record`` only if the session's stored record is still ``record.raw`` (None:
        still no record); False, writing nothing, when another writer changed it. On success
        ``record.raw`` becomes what was written."""
        data = record.to_bytes()
        args = [record.raw or b"", data, int(self.ttl * 1000)]
        if not await self._call("swap", self._swap(keys=[self.prefix + session_id], args=args)):
            return False
        record.raw = data
        return True

    async def delete(self, session_id: str) -> bool:
        return bool(await self._call("delete", self._r.delete(self.prefix + session_id)))

    async def _count(self) -> int:
        n = 0
        async for _ in self._r.scan_iter(match=self.prefix + "*", count=1000):
            n += 1
        return n

    async def size(self) -> int:
        return await self._call("scan", self._count())

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._r.aclose()
