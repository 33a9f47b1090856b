"""One test suite for both session stores: in-process and a real Redis server."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from nextclick.serve.store import MemoryStore, RedisStore, SessionRecord
from tests.serve.servers import redis_server  # noqa: F401  (fixture)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["memory", "redis"])
def store_factory(request, redis_server):  # noqa: F811
    made = []

    def make(ttl: float = 60.0, **kw):
        if request.param == "memory":
            s = MemoryStore(ttl=ttl, **kw)
        else:
            s = RedisStore(redis_server, ttl=ttl, prefix=f"test:{time.monotonic_ns()}:")
        made.append(s)
        return s

    make.kind = request.param
    yield make
    for s in made:
        asyncio.run(s.close()) if request.param == "memory" else None


def run(coro):
    return asyncio.run(coro)


def test_record_round_trip() -> None:
    rec = SessionRecord(items=[1, "a", 3], state=np.arange(4, dtype=np.float32), model_id="m1", n_clicks=5, n_unknown=1)
    back = SessionRecord.from_bytes(rec.to_bytes())
    assert back.items == [1, "a", 3] and back.model_id == "m1" and back.n_clicks == 5 and back.n_unknown == 1
    np.testing.assert_array_equal(back.state, rec.state)
    assert SessionRecord.from_bytes(SessionRecord(items=[7]).to_bytes()).state is None


def test_put_get_delete_size(store_factory) -> None:
    async def go():
        s = store_factory()
        assert await s.get("nope") is None
        await s.put("a", SessionRecord(items=[1, 2], state=np.ones(3, np.float32), model_id="x", n_clicks=2))
        await s.put("b", SessionRecord(items=["z"]))
        got = await s.get("a")
        assert got.items == [1, 2] and got.n_clicks == 2 and got.state.tolist() == [1, 1, 1]
        assert await s.size() == 2
        assert await s.delete("a") is True
        assert await s.delete("a") is False
        assert await s.get("a") is None
        assert await s.size() == 1
        assert await s.ping()
        if store_factory.kind == "redis":
            await s.close()

    run(go())


def test_ttl_expiry(store_factory) -> None:
    async def go():
        s = store_factory(ttl=0.3)
        await s.put("a", SessionRecord(items=[1]))
        assert await s.get("a") is not None
        await asyncio.sleep(0.45)
        assert await s.get("a") is None
        assert await s.size() == 0
        if store_factory.kind == "redis":
            await s.close()

    run(go())


def test_ttl_refreshed_by_each_write(store_factory) -> None:
    async def go():
        s = store_factory(ttl=0.4)
        await s.put("a", SessionRecord(items=[1]))
        await asyncio.sleep(0.25)
        await s.put("a", SessionRecord(items=[1, 2]))
        await asyncio.sleep(0.25)
        got = await s.get("a")
        assert got is not None and got.items == [1, 2]
        if store_factory.kind == "redis":
            await s.close()

    run(go())


def test_memory_store_size_bound_evicts_least_recent() -> None:
    async def go():
        clock = FakeClock()
        s = MemoryStore(ttl=100, max_sessions=3, clock=clock)
        for sid in "abcd":
            await s.put(sid, SessionRecord(items=[sid]))
            clock.t += 1
        assert await s.size() == 3 and await s.get("a") is None and s.evicted == 1
        await s.put("b", SessionRecord(items=["b2"]))  # b becomes the most recent
        await s.put("e", SessionRecord(items=["e"]))
        assert await s.get("c") is None and (await s.get("b")).items == ["b2"]
        clock.t += 100
        assert await s.size() == 0

    run(go())
