"""Compare-and-set writes of session records: two writers that read the same record cannot both
write it back, so replicas sharing Redis never overwrite each other's clicks."""

from __future__ import annotations

import asyncio
import time

import pytest

from nextclick.serve.store import MemoryStore, RedisStore, SessionRecord
from tests.serve.servers import redis_server  # noqa: F401  (fixture)


@pytest.fixture(params=["memory", "redis"])
def make_store(request, redis_server):  # noqa: F811
    def make():
        if request.param == "memory":
            return MemoryStore(ttl=60)
        return RedisStore(redis_server, ttl=60, prefix=f"swap:{time.monotonic_ns()}:")

    make.kind = request.param
    return make


def test_a_new_session_is_created_once(make_store) -> None:
    async def go():
        s = make_store()
        first, second = SessionRecord(items=[1], n_clicks=1), SessionRecord(items=[2], n_clicks=1)
        assert await s.swap("a", first)
        assert not await s.swap("a", second)  # both saw no record: the second must read again
        got = await s.get("a")
        assert got.items == [1] and got.raw == first.raw
        await s.close()

    asyncio.run(go())


def test_two_writers_of_one_read_record_the_second_retries(make_store) -> None:
    async def go():
        s = make_store()
        await s.put("a", SessionRecord(items=[1], n_clicks=1))
        x, y = await s.get("a"), await s.get("a")  # two replicas read the same record
        x.items.append(2)
        y.items.append(3)
        assert await s.swap("a", x)
        assert not await s.swap("a", y)  # y's click would have replaced x's
        assert (await s.get("a")).items == [1, 2]
        y = await s.get("a")
        y.items.append(3)
        assert await s.swap("a", y)
        y.items.append(4)  # the writer's record now matches what it wrote: it may write again
        assert await s.swap("a", y)
        assert (await s.get("a")).items == [1, 2, 3, 4]
        await s.close()

    asyncio.run(go())


def test_a_deleted_or_expired_record_is_a_conflict() -> None:
    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    clock = Clock()

    async def go():
        s = MemoryStore(ttl=10, clock=clock)
        await s.put("a", SessionRecord(items=[1]))
        rec = await s.get("a")
        clock.t += 11  # expired between the read and the write
        rec.items.append(2)
        assert not await s.swap("a", rec)
        assert await s.get("a") is None

    asyncio.run(go())


def test_redis_swap_survives_a_script_flush(redis_server) -> None:  # noqa: F811
    async def go():
        s = RedisStore(redis_server, ttl=60, prefix=f"swap:{time.monotonic_ns()}:")
        assert await s.swap("a", SessionRecord(items=[1]))
        await s._r.script_flush()  # as after a Redis restart: the script is loaded again
        rec = await s.get("a")
        rec.items.append(2)
        assert await s.swap("a", rec)
        assert (await s.get("a")).items == [1, 2]
        await s.close()

    asyncio.run(go())


def test_two_replicas_clicking_one_session_at_once_lose_no_click(tmp_path, redis_server) -> None:  # noqa: F811
    """Two service runtimes on one Redis (as two replicas), each handling clicks of the same
    sessions at the same moment: every acknowledged click is in the session, and the conflicts
    were counted and redone."""
    from nextclick.data.preprocess import PrepareOptions, prepare
    from nextclick.data.synthetic import ShopConfig, generate_shop
    from nextclick.models import create_model
    from nextclick.serve import service
    from nextclick.serve.settings import Settings

    shop = generate_shop(ShopConfig(n_sessions=800, n_items=100, n_categories=4, seed=4))
    train, _ = prepare(shop.clicks.drop("UserId"), tmp_path / "data", PrepareOptions()).sessions("train")
    model_dir = str(create_model("sr").fit(train).save(tmp_path / "sr"))
    items = train.vocab.decode(train.items[:40]).tolist()
    prefix = f"replicas:{time.monotonic_ns()}:"

    async def go():
        settings = Settings(model_dir=model_dir, store="redis", redis_url=redis_server, model_worker="thread")
        a, b = [await service.open_runtime(settings, store=RedisStore(redis_server, prefix=prefix)) for _ in range(2)]
        try:
            for n in range(6):  # clicks 2n (on a) and 2n+1 (on b) of every session at once
                await asyncio.gather(*(service.append_click(rt, f"s{s}", items[2 * n + i], k=5)
                                       for s in range(5) for i, rt in enumerate((a, b))))
            for s in range(5):
                rec = await a.store.get(f"s{s}")
                assert rec.n_clicks == 12 and sorted(map(str, rec.items)) == sorted(map(str, items[:12]))
            redone = [rt.metrics.registry.get_sample_value("nextclick_session_conflicts_total") for rt in (a, b)]
            assert sum(redone) > 0  # the two did meet on the same records
        finally:
            await service.close_runtime(a)
            await service.close_runtime(b)

    asyncio.run(go())
