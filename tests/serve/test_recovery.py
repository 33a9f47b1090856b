"""The model process's recovery: an artifact rewritten in place cannot take the service down, and
a reload brings back a model process that cannot restart."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import create_model
from tests.serve.servers import free_port, start_service, stop, wait_port


@pytest.fixture(scope="module")
def two_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("recovery")
    out = {}
    for name, seed, n_items in (("a", 1, 150), ("b", 2, 220)):  # two catalogues
        shop = generate_shop(ShopConfig(n_sessions=1200, n_items=n_items, n_categories=4, seed=seed))
        train, _ = prepare(shop.clicks.drop("UserId"), root / f"data_{name}", PrepareOptions()).sessions("train")
        out[name] = create_model("sr").fit(train).save(root / name)
        out[f"{name}_items"] = train.vocab.decode(train.items[:3]).tolist()
    return out


def wait_ready(c: httpx.Client, timeout: float = 30.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = c.get("/readyz")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError("the service did not become ready again")


def wait_not_ready(c: httpx.Client, timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if c.get("/readyz").status_code == 503:
            return
        time.sleep(0.02)
    raise AssertionError("the service never noticed the model process died")


def test_an_artifact_rewritten_in_place_cannot_take_the_service_down(two_artifacts, tmp_path: Path) -> None:
    served = tmp_path / "served"
    shutil.copytree(two_artifacts["a"], served)
    proc, url = start_service(served, env={"TMPDIR": str(tmp_path)})
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            before = wait_ready(c)
            for f in Path(two_artifacts["b"]).iterdir():  # another catalogue, written over the served files
                shutil.copyfile(f, served / f.name)
            os.kill(before["model_pid"], signal.SIGKILL)
            wait_not_ready(c)
            after = wait_ready(c)
            assert after["model_pid"] != before["model_pid"] and after["model_id"] == before["model_id"]
            r = c.post("/v1/sessions/s1/clicks", json={"item": two_artifacts["a_items"][0], "k": 5})
            assert r.status_code == 200 and not r.json()["fallback"], r.text
    finally:
        stop(proc)


def test_a_reload_brings_back_a_model_process_that_cannot_restart(two_artifacts, tmp_path: Path) -> None:
    proc, url = start_service(two_artifacts["a"], env={"TMPDIR": str(tmp_path), "NEXTCLICK_ADMIN_TOKEN": "t0k"})
    try:
        with httpx.Client(base_url=url, timeout=20) as c:
            before = wait_ready(c)
            for d in tmp_path.glob("nextclick-serving-*"):  # the served copy is lost: no restart can load it
                shutil.rmtree(d)
            os.kill(before["model_pid"], signal.SIGKILL)
            wait_not_ready(c)
            time.sleep(2.5)  # restarts are tried and fail
            assert c.get("/readyz").status_code == 503
            assert c.post("/v1/sessions/s2/clicks", json={"item": two_artifacts["a_items"][0]}).status_code == 503
            r = c.post("/admin/reload", json={"model_dir": str(two_artifacts["b"])}, headers={"Authorization": "Bearer t0k"})
            assert r.status_code == 200, r.text
            after = wait_ready(c, timeout=5)
            assert after["model_id"] == r.json()["model_id"] != before["model_id"]
            r = c.post("/v1/sessions/s3/clicks", json={"item": two_artifacts["b_items"][0], "k": 5})
            assert r.status_code == 200 and not r.json()["fallback"], r.text
    finally:
        stop(proc)


def _redis(port: int, workdir: Path) -> subprocess.Popen:
    exe = shutil.which("redis-server")
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p


def test_a_redis_restart_gives_fast_503s_and_the_service_recovers_by_itself(two_artifacts, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run installs it")
        pytest.skip("redis-server not installed")
    port = free_port()
    redis = _redis(port, tmp_path)
    proc, url = start_service(two_artifacts["a"], "--store", "redis", "--redis-url", f"redis://127.0.0.1:{port}/0")
    item = two_artifacts["a_items"][0]
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.post("/v1/sessions/r1/clicks", json={"item": item}).status_code == 200
            redis.kill()
            redis.wait()
            for path in ("/v1/sessions/r1/clicks", "/v1/sessions/r2/clicks"):
                t0 = time.monotonic()
                r = c.post(path, json={"item": item})
                assert r.status_code == 503 and "session store is unavailable" in r.json()["detail"], r.text
                assert time.monotonic() - t0 < 3, "a request hung while Redis was away"
            assert c.get("/v1/sessions/r1/recommendations").status_code == 503
            assert c.get("/readyz").status_code == 503
            assert "nextclick_store_unavailable_total 3.0" in c.get("/metrics").text
            redis = _redis(port, tmp_path)  # back (empty: no persistence), no service restart
            t0 = time.monotonic()
            while c.post("/v1/sessions/r3/clicks", json={"item": item}).status_code != 200:
                assert time.monotonic() - t0 < 10, "the service did not recover after Redis came back"
                time.sleep(0.1)
            assert c.get("/readyz").status_code == 200
    finally:
        stop(proc)
        redis.kill()
        redis.wait()
