"""The service logic without HTTP (nextclick.serve.service), the popularity fallback, and the
limits of Settings read the same way by the fast click path and the FastAPI route."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import available_models, create_model
from nextclick.models.base import Recommender
from nextclick.ranking import top_k
from nextclick.serve import service
from nextclick.serve.app import Settings, create_app
from nextclick.serve.artifacts import load_artifact
from nextclick.serve.jobs import popular
from nextclick.serve.middleware import FastClicks
from nextclick.serve.service import ServiceError

FAST = {"gru4rec": {"n_epochs": 1, "layers": (32,), "batch_size": 32, "n_sample": 64}}
MODELS = [m for m in ("sr", "gru4rec") if m in available_models()]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("logic")
    shop = generate_shop(ShopConfig(n_sessions=1500, n_items=160, n_categories=4, seed=5))
    train, _ = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions()).sessions("train")
    dirs = {name: create_model(name, **FAST.get(name, {})).fit(train).save(root / name) for name in MODELS}
    return {"dirs": dirs, "items": train.vocab.decode(train.items[:6]).tolist()}


def run_with(settings: Settings, work) -> object:
    """``work(rt)`` on a runtime of ``settings`` (model on a thread of this process)."""

    async def main() -> object:
        rt = await service.open_runtime(settings)
        try:
            return await work(rt)
        finally:
            await service.close_runtime(rt)

    return asyncio.run(main())


@pytest.mark.parametrize("name", MODELS)
def test_clicks_recommendations_and_delete_without_http(artifacts, name) -> None:
    items = artifacts["items"][:4]
    model = Recommender.load(artifacts["dirs"][name])

    async def work(rt: service.Runtime) -> None:
        for n, it in enumerate(items, 1):
            last = await service.append_click(rt, "s", it, k=8, exclude_seen=True)
            assert last["n_clicks"] == n and last["session_id"] == "s" and not last["fallback"]
        want = model.recommend_detailed(items, k=8, exclude_seen=True)
        assert last["items"] == want.items.tolist()
        np.testing.assert_allclose(last["scores"], want.scores, rtol=1e-4, atol=1e-5)
        stored = await service.session_recommendations(rt, "s", 8, exclude_seen=True)
        assert stored["items"] == last["items"] and stored["n_clicks"] == 4
        alone = await service.stateless_recommendations(rt, items, 8, exclude_seen=True)
        assert alone["items"] == last["items"] and alone["session_id"] is None and alone["n_clicks"] == 4
        await service.delete_session(rt, "s")
        with pytest.raises(ServiceError) as e:
            await service.delete_session(rt, "s")
        assert e.value.status == 404
        fresh = await service.session_recommendations(rt, "s", 3)
        assert fresh["fallback"] and fresh["n_clicks"] == 0 and len(fresh["items"]) == 3

    run_with(Settings(model_dir=str(artifacts["dirs"][name]), model_worker="thread"), work)


def test_unknown_clicks_fall_back_to_popularity(artifacts) -> None:
    async def work(rt: service.Runtime) -> None:
        first = await service.append_click(rt, "u", "no-such-item", k=5)
        assert first["fallback"] and first["unknown_items"] == ["no-such-item"] and len(first["items"]) == 5
        loaded = rt.loaded
        assert first["items"] == loaded.model.vocab_.decode(loaded.popular_order[:5]).tolist()
        second = await service.append_click(rt, "u", artifacts["items"][0], k=5)
        assert not second["fallback"] and second["unknown_items"] == [] and second["n_clicks"] == 2

    run_with(Settings(model_dir=str(artifacts["dirs"]["sr"]), model_worker="thread"), work)


def test_popular_applies_exclude_allow_deny(artifacts) -> None:
    loaded = load_artifact(str(artifacts["dirs"]["sr"]), copy=False)
    order = loaded.popular_order
    exclude, deny = order[[0, 3]], order[[1, 7, 8]]
    ids, sc = popular(loaded, 6, exclude, None, deny)
    want = [i for i in order if i not in set(exclude) | set(deny)][:6]
    assert ids.tolist() == want
    np.testing.assert_array_equal(sc, loaded.popularity[want])
    allow = np.array([order[-1], order[2], order[3], 5])
    ids, sc = popular(loaded, 6, exclude, allow, deny)
    ref_ids, ref_sc = top_k(loaded.popularity[None, :], 6, [exclude], allow, deny)
    keep = np.isfinite(ref_sc[0])
    assert ids.tolist() == ref_ids[0][keep].tolist() and set(ids.tolist()) <= set(allow.tolist()) - set(exclude.tolist())
    np.testing.assert_array_equal(sc, ref_sc[0][keep])


def test_check_options_reads_the_settings() -> None:
    s = Settings(model_dir="x", max_items=3, max_k=10)
    service.check_options(s, 10, [1, 2, 3], None, [1, 2, 3])
    for args, status in (((11, None, None), 422), ((None, [1] * 4, None), 413), ((None, None, [1] * 4), 413),
                         ((None, None, None, [1] * 4), 413)):
        with pytest.raises(ServiceError) as e:
            service.check_options(s, *args)
        assert e.value.status == status


@pytest.mark.parametrize("max_id_length", [8, 100])
def test_fast_path_and_route_honour_max_id_length(artifacts, max_id_length) -> None:
    settings = Settings(model_dir=str(artifacts["dirs"]["sr"]), model_worker="thread", max_id_length=max_id_length)
    fast = FastClicks(settings)
    fits, too_long = "x" * max_id_length, "y" * (max_id_length + 1)
    assert fast.parse(orjson.dumps({"item": fits, "deny": [fits]})) is not None  # the fast path serves it
    assert fast.parse(orjson.dumps({"item": too_long})) is None  # ... and hands this one to the route
    assert fast.parse(orjson.dumps({"item": 1, "allow": [too_long]})) is None
    known = artifacts["items"][0]
    with TestClient(create_app(settings)) as c:
        for n, body in enumerate(({"item": fits}, {"item": known, "deny": [fits]}, {"item": too_long},
                                  {"item": known, "allow": [too_long]})):
            f = c.post("/v1/sessions/fast/clicks", content=orjson.dumps(body), headers={"content-type": "application/json"})
            r = c.post("/v1/sessions/route/clicks", content=orjson.dumps(body),
                       headers={"content-type": "application/vnd.api+json"})  # not the fast path
            assert f.status_code == r.status_code == (200 if n < 2 else 422), (body, f.text, r.text)
            if n < 2:
                a, b = f.json(), r.json()
                assert a.pop("session_id") == "fast" and b.pop("session_id") == "route" and a == b
            else:
                assert f.json() == r.json()


def test_the_last_click_is_left_out_when_training_dropped_repeats(tmp_path) -> None:
    """A model records how many consecutive repeats its training data held; with none (repeats
    dropped), the last click is never the next one, so every path leaves it out unless asked."""
    from nextclick.data.sessions import Sessions

    base = [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 3, 2]] * 5
    no_rep = create_model("sr").fit(Sessions.from_lists(base, n_items=3))
    with_rep = create_model("sr").fit(Sessions.from_lists([*base, [1, 1, 1, 1], [2, 2, 2]], n_items=3))
    assert no_rep.repeats_dropped and no_rep.training_["consecutive_repeats"] == 0
    assert not with_rep.repeats_dropped and with_rep.training_["consecutive_repeats"] == 5
    assert 1 not in no_rep.recommend([2, 1], k=3)[0].tolist()
    assert 1 in no_rep.recommend([2, 1], k=3, exclude_last=False)[0].tolist()
    assert 1 in with_rep.recommend([2, 1], k=3)[0].tolist()  # repeats were seen: the last click may come again
    assert 1 not in no_rep.recommend_batch([[2, 1], [3, 1]], k=2)[0].ravel().tolist()
    assert Recommender.load(no_rep.save(tmp_path / "m")).repeats_dropped  # recorded in the artifact

    async def work(rt: service.Runtime) -> list:
        a = await service.append_click(rt, "s", 2, k=3)
        b = await service.append_click(rt, "s", 1, k=3)
        c = await service.session_recommendations(rt, "s", k=3, exclude_last=False)
        d = await service.stateless_recommendations(rt, [2, 1], k=3, exclude_last=True)
        return [a["items"], b["items"], c["items"], d["items"]]

    a, b, c, d = run_with(Settings(model_dir=str(tmp_path / "m"), model_worker="thread"), work)
    assert 2 not in a and 1 not in b and 1 in c and d == b
    fast = FastClicks(Settings(model_dir=str(tmp_path / "m")))
    assert fast.parse(b'{"item": 1, "exclude_last": false}')[-1] is False
    assert fast.parse(b'{"item": 1}')[-1] is None and fast.parse(b'{"item": 1, "exclude_last": 1}') is None
