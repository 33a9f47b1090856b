"""The HTTP service end to end: real `nextclick serve` processes, a real HTTP client, real Redis."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import dataclasses
import os
import re
import signal
import time

import httpx
import numpy as np
import pytest

from nextclick.data.dataset import Dataset
from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import available_models, create_model, get_model_class
from tests.serve.servers import redis_server, start_service, stop  # noqa: F401

FAST = {
    "gru4rec": {"n_epochs": 2, "layers": (48,), "batch_size": 32, "n_sample": 256},
    "sasrec": {"n_epochs": 2, "hidden": 32, "max_len": 20},
}


# every other network trains as briefly: the service's behaviour, not accuracy, is under test
SMALL_NET = {"n_epochs": 2, "hidden": 32, "max_len": 20, "progress": False}


def fast_params(name: str) -> dict:
    fields = {f.name for f in dataclasses.fields(get_model_class(name).Config)}
    return {k: v for k, v in {**SMALL_NET, **FAST.get(name, {})}.items() if k in fields}


@pytest.fixture(scope="module")
def shop_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("svc")
    shop = generate_shop(ShopConfig(n_sessions=6000, n_items=400, n_categories=8, seed=3))
    ds: Dataset = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions())
    train, _ = ds.sessions("train")
    dirs = {}
    for name in available_models():
        m = create_model(name, **fast_params(name)).fit(train)
        dirs[name] = m.save(root / name)
    return {"shop": shop, "dirs": dirs, "train": train}


@pytest.fixture(scope="module")
def svc(shop_models) -> tuple[str, object]:
    proc, url = start_service(shop_models["dirs"]["sr"], env={"NEXTCLICK_ADMIN_TOKEN": "s3cret"})
    yield url
    stop(proc)


def click(c: httpx.Client, sid: str, item, **kw) -> httpx.Response:
    return c.post(f"/v1/sessions/{sid}/clicks", json={"item": item, **kw})


def known_items(shop_models, n: int = 5) -> list[int]:
    return shop_models["train"].vocab.decode(shop_models["train"].items[:n]).tolist()


def test_click_flow_get_delete(svc, shop_models) -> None:
    items = known_items(shop_models)
    with httpx.Client(base_url=svc) as c:
        r = click(c, "visitor-1", items[0], k=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["session_id"] == "visitor-1" and body["n_clicks"] == 1 and len(body["items"]) == 5
        assert body["scores"] == sorted(body["scores"], reverse=True) and not body["fallback"]
        assert set(body["items"]) <= set(shop_models["train"].vocab.ids.tolist())  # shop ids, not indices
        r2 = click(c, "visitor-1", items[1], k=5).json()
        assert r2["n_clicks"] == 2
        got = c.get("/v1/sessions/visitor-1/recommendations", params={"k": 5}).json()
        assert got["items"] == r2["items"] and got["n_clicks"] == 2
        stateless = c.post("/v1/recommendations", json={"items": items[:2], "k": 5}).json()
        assert stateless["items"] == r2["items"]
        assert c.delete("/v1/sessions/visitor-1").status_code == 204
        assert c.delete("/v1/sessions/visitor-1").status_code == 404
        fresh = c.get("/v1/sessions/visitor-1/recommendations", params={"k": 3}).json()
        assert fresh["fallback"] and fresh["n_clicks"] == 0 and len(fresh["items"]) == 3


def test_exclude_allow_deny(svc, shop_models) -> None:
    items = known_items(shop_models, 3)
    with httpx.Client(base_url=svc) as c:
        base = c.post("/v1/recommendations", json={"items": items, "k": 10}).json()["items"]
        ex = c.post("/v1/recommendations", json={"items": items, "k": 10, "exclude_seen": True}).json()["items"]
        assert not set(ex) & set(items)
        deny = c.post("/v1/recommendations", json={"items": items, "k": 10, "deny": base[:3]}).json()["items"]
        assert not set(deny) & set(base[:3])
        allow = c.post("/v1/recommendations", json={"items": items, "k": 10, "allow": base[5:8]}).json()["items"]
        assert set(allow) <= set(base[5:8]) and allow


def test_unknown_items_are_counted_and_ignored(svc, shop_models) -> None:
    items = known_items(shop_models, 2)
    with httpx.Client(base_url=svc) as c:
        r = click(c, "u-only", "no-such-item").json()
        assert r["fallback"] and r["unknown_items"] == ["no-such-item"] and r["items"]
        r = click(c, "u-only", items[0]).json()
        assert not r["fallback"] and r["n_clicks"] == 2
        s = c.post("/v1/recommendations", json={"items": [items[1], 987654321987, "x"]}).json()
        assert s["unknown_items"] == [987654321987, "x"] and not s["fallback"]
        metrics = c.get("/metrics").text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("nextclick_unknown_items_total "))
        assert float(line.split()[-1]) >= 3


@pytest.mark.parametrize(
    "method,path,payload,status",
    [
        ("post", "/v1/sessions/a/clicks", {}, 422),  # missing item
        ("post", "/v1/sessions/a/clicks", {"item": 1.5}, 422),
        ("post", "/v1/sessions/a/clicks", {"item": 2**70}, 422),  # beyond int64
        ("post", "/v1/sessions/a/clicks", {"item": "x" * 1000}, 422),  # id too long
        ("post", "/v1/sessions/a/clicks", {"item": 1, "k": 0}, 422),
        ("post", "/v1/sessions/a/clicks", {"item": 1, "k": 101}, 422),
        ("post", "/v1/sessions/a/clicks", {"item": 1, "bogus": 1}, 422),
        ("post", "/v1/sessions/" + "s" * 500 + "/clicks", {"item": 1}, 422),  # session id too long
        ("post", "/v1/recommendations", {"items": list(range(5000))}, 413),
        ("post", "/v1/recommendations", {"items": [1], "deny": list(range(500))}, 413),
        ("get", "/v1/sessions/a/recommendations?k=100000", None, 422),
    ],
)
def test_bad_input_is_refused_with_4xx(svc, method, path, payload, status) -> None:
    with httpx.Client(base_url=svc) as c:
        r = c.post(path, json=payload) if method == "post" else c.get(path)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert c.get("/healthz").status_code == 200  # still alive


def test_malformed_and_oversized_bodies(svc) -> None:
    with httpx.Client(base_url=svc) as c:
        r = c.post("/v1/sessions/a/clicks", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 422 and "detail" in r.json()
        r = c.post("/v1/recommendations", content=b"[" + b"1," * 200_000 + b"1]", headers={"content-type": "application/json"})
        assert r.status_code == 413

        def chunks():
            for _ in range(100):
                yield b" " * 10_000

        r = c.post("/v1/recommendations", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.get("/healthz").status_code == 200


def test_ops_endpoints_and_openapi(svc) -> None:
    with httpx.Client(base_url=svc) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        assert ready["status"] == "ready" and ready["model"] == "sr"
        text = c.get("/metrics").text
        for name in (
            "nextclick_requests_total",
            "nextclick_request_seconds_bucket",
            "nextclick_sessions",
            "nextclick_unknown_items_total",
        ):
            assert name in text
        spec = c.get("/openapi.json").json()
        for p in (
            "/v1/sessions/{session_id}/clicks",
            "/v1/sessions/{session_id}/recommendations",
            "/v1/recommendations",
            "/admin/reload",
        ):
            assert p in spec["paths"]


def test_hot_reload_needs_token_and_drops_nothing(svc, shop_models) -> None:
    items = known_items(shop_models, 3)
    with httpx.Client(base_url=svc, timeout=30) as c:
        assert c.post("/admin/reload").status_code == 401
        assert c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
        before = c.get("/readyz").json()["model_id"]

        def hammer(i: int) -> int:
            with httpx.Client(base_url=svc, timeout=30) as cc:
                return click(cc, f"reload-{i % 7}", items[i % 3]).status_code

        with cf.ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(hammer, i) for i in range(120)]
            r = c.post(
                "/admin/reload", headers={"Authorization": "Bearer s3cret"}, json={"model_dir": str(shop_models["dirs"]["vsknn"])}
            )
            codes = [f.result() for f in futs]
        assert r.status_code == 200, r.text
        assert set(codes) == {200}
        after = c.get("/readyz").json()
        assert after["model"] == "vsknn" and after["model_id"] != before
        missing = str(shop_models["dirs"]["sr"].parent / "nonexistent")
        bad = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}, json={"model_dir": missing})
        assert bad.status_code == 400 and c.get("/readyz").json()["model"] == "vsknn"
        for outside in ("/nonexistent", "/etc", str(shop_models["dirs"]["sr"].parent / ".." / "elsewhere")):
            bad = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}, json={"model_dir": outside})
            assert bad.status_code == 403 and "models directory" in bad.json()["detail"], bad.text
        assert c.get("/readyz").json()["model"] == "vsknn"
        r = c.post(
            "/admin/reload", headers={"Authorization": "Bearer s3cret"}, json={"model_dir": str(shop_models["dirs"]["sr"])}
        )
        assert r.status_code == 200


def test_reload_disabled_without_token(shop_models) -> None:
    proc, url = start_service(shop_models["dirs"]["pop"], env={"NEXTCLICK_ADMIN_TOKEN": ""})
    try:
        with httpx.Client(base_url=url) as c:
            assert c.post("/admin/reload", headers={"Authorization": "Bearer x"}).status_code == 403
    finally:
        stop(proc)


@pytest.mark.parametrize("name", available_models())
def test_every_model_can_be_served(shop_models, name) -> None:
    items = known_items(shop_models, 4)
    proc, url = start_service(shop_models["dirs"][name])
    try:
        with httpx.Client(base_url=url) as c:
            last = None
            for it in items:
                last = click(c, "s", it, k=10)
                assert last.status_code == 200, last.text
            stateless = c.post("/v1/recommendations", json={"items": items, "k": 10}).json()
            assert last.json()["items"] == stateless["items"]
            np.testing.assert_allclose(last.json()["scores"], stateless["scores"], rtol=1e-4, atol=1e-5)
    finally:
        stop(proc)


def test_two_replicas_share_sessions_through_redis(shop_models, redis_server) -> None:  # noqa: F811
    model = "gru4rec" if "gru4rec" in shop_models["dirs"] else "sr"
    items = known_items(shop_models, 4)
    a, url_a = start_service(shop_models["dirs"][model], "--store", "redis", "--redis-url", redis_server)
    b, url_b = start_service(shop_models["dirs"][model], "--store", "redis", "--redis-url", redis_server)
    single, url_s = start_service(shop_models["dirs"][model])
    try:
        with httpx.Client() as c:
            for i, it in enumerate(items):
                url = url_a if i % 2 == 0 else url_b  # alternate replicas
                shared = c.post(f"{url}/v1/sessions/shared/clicks", json={"item": it, "k": 10}).json()
                alone = c.post(f"{url_s}/v1/sessions/alone/clicks", json={"item": it, "k": 10}).json()
                assert shared["items"] == alone["items"] and shared["n_clicks"] == i + 1
                np.testing.assert_allclose(shared["scores"], alone["scores"], rtol=1e-4, atol=1e-5)
    finally:
        for p in (a, b, single):
            stop(p)


def test_recommendations_follow_a_shift_of_intent(shop_models) -> None:
    """On the synthetic shop: after clicks in one category then another, the recommendations move
    to the new category."""
    shop = shop_models["shop"]
    vocab = shop_models["train"].vocab
    cats = shop.category_of(vocab.ids)
    counts = shop_models["train"].item_counts()[1:]
    names = [c for c in np.unique(cats)]
    first, second = names[0], names[1]
    pick = lambda c: vocab.ids[(cats == c)][np.argsort(-counts[cats == c])][:3].tolist()  # noqa: E731
    proc, url = start_service(shop_models["dirs"]["sr"])
    try:
        with httpx.Client(base_url=url) as c:
            for it in pick(first):
                before = click(c, "shift", it, k=10).json()["items"]
            for it in pick(second):
                after = click(c, "shift", it, k=10).json()["items"]
        share = lambda recs, cat: float(np.mean(shop.category_of(np.array(recs)) == cat))  # noqa: E731
        assert share(before, first) > 0.5
        assert share(after, second) > 0.5 and share(after, second) > share(before, second)
    finally:
        stop(proc)


def test_fast_click_path_answers_like_the_fastapi_route(svc, shop_models) -> None:
    # application/json clicks take the middleware's fast path; another JSON media type sends the
    # same body through FastAPI's route: the answers must agree
    items = known_items(shop_models, 3)
    with httpx.Client(base_url=svc) as c:
        for i, it in enumerate(items):
            body = {"item": it, "k": 7, "exclude_seen": True, "deny": [items[0]]}
            fast = click(c, "fast-path", it, k=7, exclude_seen=True, deny=[items[0]])
            slow = c.post("/v1/sessions/slow-path/clicks", content=httpx.Request("POST", "/", json=body).content,
                          headers={"content-type": "application/vnd.api+json"})
            assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
            f, s = fast.json(), slow.json()
            assert f.pop("session_id") == "fast-path" and s.pop("session_id") == "slow-path"
            assert f == s and f["n_clicks"] == i + 1
            assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
        # bodies the fast path does not accept still get FastAPI's validation answers
        assert c.post("/v1/sessions/fast-path/clicks", json={"item": items[0], "k": 5.5}).status_code == 422
        assert c.post("/v1/sessions/fast-path/clicks", json={"item": items[0], "extra": 1}).status_code == 422
        assert c.post("/v1/sessions/fast-path/clicks", json={"item": True}).status_code == 422
        assert c.post("/v1/sessions/fast-path/clicks", json={"item": items[0], "k": 10_000}).status_code == 422
        assert c.post("/v1/sessions/" + "x" * 500 + "/clicks", json={"item": items[0]}).status_code == 422
        got = c.get("/v1/sessions/fast-path/recommendations", params={"k": 7, "exclude_seen": True}).json()
        assert got["n_clicks"] == 3
        text = c.get("/metrics").text
        assert 'nextclick_requests_total{endpoint="clicks",status="200"}' in text


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_fp16_scoring_serves_the_exact_top_k(shop_models) -> None:
    items = known_items(shop_models, 5)
    exact, url_e = start_service(shop_models["dirs"]["gru4rec"], "--scoring", "exact")
    half, url_h = start_service(shop_models["dirs"]["gru4rec"], "--scoring", "fp16")
    try:
        with httpx.Client() as c:
            for it in items:
                e = c.post(f"{url_e}/v1/sessions/s/clicks", json={"item": it, "k": 20, "exclude_seen": True}).json()
                h = c.post(f"{url_h}/v1/sessions/s/clicks", json={"item": it, "k": 20, "exclude_seen": True}).json()
                np.testing.assert_allclose(h["scores"], e["scores"], rtol=1e-5, atol=1e-6)
                assert h["items"] == e["items"] or sorted(h["items"]) == sorted(e["items"])
            text = c.get(f"{url_h}/metrics").text
            assert f"nextclick_topk_rows {float(len(items))}" in text and "nextclick_topk_fallback_rows" in text
    finally:
        stop(exact)
        stop(half)


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_thread_and_process_model_workers_answer_alike(shop_models) -> None:
    items = known_items(shop_models, 5)
    proc, url_p = start_service(shop_models["dirs"]["gru4rec"])  # default: model process
    thread, url_t = start_service(shop_models["dirs"]["gru4rec"], "--model-worker", "thread")
    try:
        with httpx.Client() as c:
            assert c.get(f"{url_p}/readyz").json()["model_pid"] != proc.pid  # a process of its own
            for i, it in enumerate(items):
                body = {"item": it, "k": 15, "exclude_seen": i % 2 == 0, "deny": items[:1]}
                p = c.post(f"{url_p}/v1/sessions/s/clicks", json=body).json()
                t = c.post(f"{url_t}/v1/sessions/s/clicks", json=body).json()
                assert p["items"] == t["items"]
                np.testing.assert_allclose(p["scores"], t["scores"], rtol=1e-6)
    finally:
        stop(proc)
        stop(thread)


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_a_killed_model_process_is_replaced(shop_models) -> None:
    items = known_items(shop_models, 3)
    proc, url = start_service(shop_models["dirs"]["gru4rec"])
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            first = click(c, "k", items[0]).json()
            pid = c.get("/readyz").json()["model_pid"]
            os.kill(pid, signal.SIGKILL)
            codes, deadline = [], time.monotonic() + 60
            while time.monotonic() < deadline:  # 503 (never 500, never a hang) until it is back
                r = click(c, "k2", items[1])
                codes.append(r.status_code)
                if r.status_code == 200:
                    break
                time.sleep(0.2)
            assert codes[-1] == 200 and set(codes) <= {200, 503}, codes
            ready = c.get("/readyz").json()
            assert ready["status"] == "ready" and ready["model_pid"] != pid
            again = click(c, "k3", items[0]).json()  # same model, same answers
            assert again["items"] == first["items"]
    finally:
        stop(proc)


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_a_burst_of_large_concurrent_clicks_is_answered_like_one_by_one(shop_models) -> None:
    # many clicks at once, each with a long allow-list: batches and pipe messages larger than the
    # pipe's atomic write size (a message then arrives in pieces at the event loop's end)
    all_items = shop_models["train"].vocab.decode(np.arange(1, shop_models["train"].vocab.n_items + 1)).tolist()
    items = all_items[:100]
    allow = all_items[:200]
    proc, url = start_service(shop_models["dirs"]["gru4rec"])
    try:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as c:
                return await asyncio.gather(*(
                    c.post(f"/v1/sessions/b{i}/clicks", json={"item": it, "k": 100, "allow": allow}) for i, it in enumerate(items)
                ))

        got = asyncio.run(burst())
        assert [r.status_code for r in got] == [200] * len(items)
        with httpx.Client(base_url=url) as c:
            for i in (0, 17, 99):
                one = c.post(f"/v1/sessions/one{i}/clicks", json={"item": items[i], "k": 100, "allow": allow}).json()
                assert got[i].json()["items"] == one["items"]
            text = c.get("/metrics").text
        batches = float(re.search(r"^nextclick_batch_size_count (\S+)", text, re.M).group(1))
        assert batches < len(items) + 3  # some clicks shared a model call
    finally:
        stop(proc)


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_overlapping_reloads_leave_one_consistent_model(shop_models) -> None:
    items = known_items(shop_models, 3)
    proc, url = start_service(shop_models["dirs"]["gru4rec"], env={"NEXTCLICK_ADMIN_TOKEN": "t"})
    try:
        def reload(name: str) -> int:
            with httpx.Client(base_url=url, timeout=60) as c:
                return c.post("/admin/reload", headers={"Authorization": "Bearer t"},
                              json={"model_dir": str(shop_models["dirs"][name])}).status_code

        with cf.ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(reload, ["sasrec", "gru4rec", "sasrec"]))
        assert codes == [200, 200, 200]
        with httpx.Client(base_url=url) as c:
            model = c.get("/readyz").json()["model"]
            got = click(c, "after", items[0], k=10).json()
        fresh, url_f = start_service(shop_models["dirs"][model])
        try:
            with httpx.Client(base_url=url_f) as c:
                assert click(c, "after", items[0], k=10).json()["items"] == got["items"]
        finally:
            stop(fresh)
    finally:
        stop(proc)


@pytest.mark.skipif("gru4rec" not in available_models(), reason="needs torch models")
def test_sighup_reloads_the_model_process_too(shop_models) -> None:
    items = known_items(shop_models, 2)
    proc, url = start_service(shop_models["dirs"]["gru4rec"])
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            before = click(c, "h", items[0]).json()
            pid = c.get("/readyz").json()["model_pid"]
            os.kill(pid, signal.SIGHUP)  # ignored by the model process (a hang-up of the group reaches it too)
            os.kill(proc.pid, signal.SIGHUP)  # the service reloads
            deadline = time.monotonic() + 30
            while 'nextclick_reloads_total{result="ok"} 1.0' not in c.get("/metrics").text:
                assert time.monotonic() < deadline, "no reload after SIGHUP"
                time.sleep(0.2)
            assert c.get("/readyz").json()["model_pid"] == pid  # same process, new model generation
            after = click(c, "h2", items[0]).json()
            assert after["items"] == before["items"] and after["model"] == before["model"]
    finally:
        stop(proc)
