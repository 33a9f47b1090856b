"""The fault counters of /metrics: sessions the in-memory store evicts, and requests refused
because the session store is unreachable."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from nextclick.serve.metrics import Metrics
from nextclick.serve.service import Runtime, ServiceError, stored
from nextclick.serve.store import MemoryStore, SessionRecord, StoreUnavailable


def test_evictions_of_the_memory_store_are_counted_at_each_scrape() -> None:
    m = Metrics()
    store = MemoryStore(max_sessions=3)
    m.watch_store(store)

    async def fill(n: int) -> None:
        for i in range(n):
            await store.put(f"s{i}", SessionRecord(items=[i], n_clicks=1))

    asyncio.run(fill(3))
    assert m.registry.get_sample_value("nextclick_sessions_evicted_total") == 0
    asyncio.run(fill(8))  # s0..s2 written again, then s3..s7: five over the bound
    assert m.registry.get_sample_value("nextclick_sessions_evicted_total") == 5
    assert b"nextclick_sessions_evicted_total 5.0" in generate_latest(m.registry)


def test_a_store_watched_again_replaces_the_first_and_redis_adds_no_count() -> None:
    m = Metrics()
    first, second = MemoryStore(max_sessions=1), MemoryStore(max_sessions=1)
    first.evicted, second.evicted = 7, 2
    m.watch_store(first)
    m.watch_store(second)  # a runtime opened again on the same metrics
    assert generate_latest(m.registry).count(b"\nnextclick_sessions_evicted_total ") == 1
    assert m.registry.get_sample_value("nextclick_sessions_evicted_total") == 2

    class NoEvictionCount:  # like RedisStore: Redis reports its own evictions
        pass

    m.watch_store(NoEvictionCount())
    assert m.registry.get_sample_value("nextclick_sessions_evicted_total") is None


def test_an_unreachable_store_is_a_counted_503() -> None:
    m = Metrics()
    rt = Runtime.__new__(Runtime)  # only the metrics are read on this path
    rt.metrics = m

    async def down() -> None:
        raise StoreUnavailable("redis get: ConnectionError")

    for _ in range(2):
        try:
            asyncio.run(stored(rt, down()))
        except ServiceError as e:
            assert e.status == 503 and "session store is unavailable" in e.detail
        else:
            raise AssertionError("no 503")
    assert m.registry.get_sample_value("nextclick_store_unavailable_total") == 2
