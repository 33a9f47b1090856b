"""Property-based tests generated from the service's own OpenAPI schema (Schemathesis), against a
real `nextclick serve` on loopback with the in-memory store and with Redis: no request may get a
5xx or hang, every 4xx says what was wrong, and the service's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import create_model
from tests.serve.servers import redis_server, start_service, stop  # noqa: F401

EXAMPLES = 40  # per operation and store: bounded, so CI stays quick


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shop = generate_shop(ShopConfig(n_sessions=1500, n_items=160, n_categories=4, seed=11))
    train, _ = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions()).sessions("train")
    return create_model("sr").fit(train).save(root / "sr")


@pytest.fixture(scope="module", params=["memory", "redis"])
def service(request: pytest.FixtureRequest, fuzz_model: Path):
    args: tuple[str, ...] = ("--body-timeout", "2")
    if request.param == "redis":
        args += ("--store", "redis", "--redis-url", request.getfixturevalue("redis_server"))
    proc, url = start_service(fuzz_model, *args, env={"NEXTCLICK_ADMIN_TOKEN": "fuzz-token"})
    base = _rss_mb(proc.pid)
    yield url
    grown = _rss_mb(proc.pid) - base
    stop(proc)
    assert grown < 300, f"the service grew by {grown:.0f} MB under fuzzing"


def _check(case) -> None:
    try:
        r = case.call(timeout=15)
    except (httpx.TimeoutException, TimeoutError, OSError) as e:  # a hang or a dropped connection fails
        pytest.fail(f"no answer within 15 s: {case.as_curl_command()} ({type(e).__name__}: {e})")
    assert r.status_code < 500, f"{r.status_code} for {case.as_curl_command()}: {r.text[:300]}"
    if 400 <= r.status_code < 500:
        body = r.json()
        assert body.get("detail"), f"a {r.status_code} without a reason for {case.as_curl_command()}: {r.text[:300]}"


def test_no_request_gets_a_5xx_or_hangs_and_every_4xx_says_why(service: str) -> None:
    # Schemathesis builds Hypothesis strategies from the schema the service publishes; both valid
    # and invalid (negative) requests are generated for every operation
    api = schemathesis.openapi.from_url(f"{service}/openapi.json")
    operations = [op.ok() for op in api.get_all_operations()]
    assert {o.label for o in operations} >= {
        "POST /v1/sessions/{session_id}/clicks", "GET /v1/sessions/{session_id}/recommendations",
        "DELETE /v1/sessions/{session_id}", "POST /v1/recommendations", "POST /admin/reload",
    }
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def check(case) -> None:
                _check(case)

            try:
                check()
            except Unsatisfiable:  # an operation without parameters or body has no invalid form
                assert mode == GenerationMode.NEGATIVE, op.label
