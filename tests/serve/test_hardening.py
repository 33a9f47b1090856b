"""Hostile and sloppy requests against a real `nextclick serve`: strict body types, the OpenAPI
schema's limits and error answers, stalled bodies, session ids that are not UTF-8, and the admin
token compared in constant time."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import create_model
from nextclick.serve import app as app_module
from nextclick.serve.store import MemoryStore
from tests.serve.servers import start_service, stop


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hard")
    shop = generate_shop(ShopConfig(n_sessions=1500, n_items=160, n_categories=4, seed=7))
    train, _ = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions()).sessions("train")
    model_dir = create_model("sr").fit(train).save(root / "sr")
    proc, url = start_service(model_dir, "--body-timeout", "1", env={"NEXTCLICK_ADMIN_TOKEN": "s3cret"})
    yield url, train.vocab.decode(train.items[:3]).tolist()
    stop(proc)


@pytest.mark.parametrize(
    "extra,field",
    [({"k": True}, "k"), ({"k": "5"}, "k"), ({"k": 5.0}, "k"), ({"exclude_seen": "yes"}, "exclude_seen"),
     ({"exclude_seen": 1}, "exclude_seen"), ({"k": 101}, "k")],
)
def test_body_fields_are_strict(served, extra: dict, field: str) -> None:
    url, items = served
    r = httpx.post(f"{url}/v1/sessions/strict/clicks", json={"item": items[0], **extra})
    assert r.status_code == 422, r.text
    assert any(e["loc"][-1] == field for e in r.json()["detail"]), r.text
    ok = httpx.post(f"{url}/v1/sessions/strict/clicks", json={"item": items[0], "k": 5, "exclude_seen": True})
    assert ok.status_code == 200 and len(ok.json()["items"]) == 5


def test_openapi_states_k_bounds_and_error_answers(served) -> None:
    url, _ = served
    spec = httpx.get(f"{url}/openapi.json").json()
    click = spec["paths"]["/v1/sessions/{session_id}/clicks"]["post"]
    ref = click["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    k = spec["components"]["schemas"][ref]["properties"]["k"]
    bounds = next(a for a in k.get("anyOf", [k]) if a.get("type") == "integer")
    assert bounds["minimum"] == 1 and bounds["maximum"] == 100
    assert {"400", "413", "422", "503"} <= set(click["responses"])
    assert "404" in spec["paths"]["/v1/sessions/{session_id}"]["delete"]["responses"]
    assert {"401", "403"} <= set(spec["paths"]["/admin/reload"]["post"]["responses"])


def test_a_stalled_body_is_answered_408_and_closed(served) -> None:
    url, _ = served
    u = urlparse(url)
    t0 = time.perf_counter()
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(b"POST /v1/sessions/slow/clicks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"item\": ")
        got = b""
        while True:  # the server answers, then closes: recv returns b"" at the end
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    assert got.startswith(b"HTTP/1.1 408"), got
    assert b"not received within 1 s" in got
    assert time.perf_counter() - t0 < 8


@pytest.mark.parametrize("raw", ["z%FF%FEz", "z%FE%FFz", "%C3%28", "a%80"])
def test_session_ids_that_are_not_utf8_are_refused(served, raw: str) -> None:
    url, items = served
    with httpx.Client(base_url=url) as c:
        for method, path, body in (("POST", f"/v1/sessions/{raw}/clicks", {"item": items[0]}),
                                   ("GET", f"/v1/sessions/{raw}/recommendations", None),
                                   ("DELETE", f"/v1/sessions/{raw}", None)):
            r = c.request(method, httpx.URL(url + path), json=body)
            assert r.status_code == 400, (method, raw, r.text)
            assert "UTF-8" in r.json()["detail"]


def test_distinct_valid_session_ids_stay_distinct(served) -> None:
    # U+FFFD written out (valid UTF-8) is a session of its own, not one that invalid bytes fall into
    url, items = served
    with httpx.Client(base_url=url) as c:
        a = c.post(httpx.URL(url + "/v1/sessions/z%EF%BF%BD%EF%BF%BDz/clicks"), json={"item": items[0]})
        assert a.status_code == 200 and a.json()["n_clicks"] == 1
        b = c.post(httpx.URL(url + "/v1/sessions/z%EF%BF%BDz/clicks"), json={"item": items[1]})
        assert b.status_code == 200 and b.json()["n_clicks"] == 1


def test_admin_token_is_compared_in_constant_time(served, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = served
    r = httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer s3creX"})
    assert r.status_code == 401
    calls = []
    real = app_module.hmac.compare_digest
    monkeypatch.setattr(app_module.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert app_module.token_ok("Bearer s3cret", "s3cret") and not app_module.token_ok("Bearer s3cre", "s3cret")
    assert not app_module.token_ok(None, "s3cret") and not app_module.token_ok("Bearer s3cr\udcffet", "s3cret")
    assert len(calls) == 4


class _BrokenStore(MemoryStore):
    """A store that fails the way a bug would: an unexpected exception with internals in its text."""

    async def get(self, session_id: str):  # type: ignore[override]
        raise RuntimeError("secret internals at 0xdeadbeef")


def test_an_unexpected_error_is_a_json_500_with_a_request_id(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient

    shop = generate_shop(ShopConfig(n_sessions=600, n_items=80, n_categories=4, seed=9))
    train, _ = prepare(shop.clicks.drop("UserId"), tmp_path / "data", PrepareOptions()).sessions("train")
    model_dir = create_model("pop").fit(train).save(tmp_path / "pop")
    settings = app_module.Settings(model_dir=str(model_dir), model_worker="thread")
    item = int(train.vocab.decode(train.items[:1])[0])
    with TestClient(app_module.create_app(settings, store=_BrokenStore()), raise_server_exceptions=False) as c:
        for send in (lambda: c.post("/v1/sessions/s/clicks", json={"item": item}),  # the fast path
                     lambda: c.get("/v1/sessions/s/recommendations")):  # the FastAPI route
            caplog.clear()
            r = send()
            assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text
            body = r.json()
            assert body["detail"] == "internal error" and len(body["request_id"]) == 16
            assert "secret" not in r.text and "Traceback" not in r.text
            logged = [rec for rec in caplog.records if body["request_id"] in rec.getMessage()]
            assert len(logged) == 1 and "secret internals" in str(logged[0].exc_info[1])
        assert 'nextclick_requests_total{endpoint="clicks",status="500"}' in c.get("/metrics").text
