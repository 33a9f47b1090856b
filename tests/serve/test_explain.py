"""Several models in one service, the item table and the explanations, through a real `nextclick
serve` process: every model sees every click, each explanation is checked against what the
service itself answers when the click is left out."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from nextclick.data.dataset import Dataset
from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.models import create_model
from nextclick.models.base import Recommender
from tests.serve.servers import start_service, stop

MODELS = {
    "sasrec": {"n_epochs": 2, "hidden": 32, "max_len": 20, "n_blocks": 2, "progress": False},
    "vsknn": {"k": 5},
    "gru4rec": {"n_epochs": 1, "layers": (32,), "batch_size": 32, "n_sample": 128},
    "pop": {},
    "sr": {},
    "stan": {},
    "narm": {"n_epochs": 1, "hidden": 16, "gru_hidden": 16, "progress": False},
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("explain")
    shop = generate_shop(ShopConfig(n_sessions=3000, n_items=300, n_categories=6, seed=5))
    ds: Dataset = prepare(shop.clicks.drop("UserId"), root / "data", PrepareOptions())
    train, _ = ds.sessions("train")
    dirs = [create_model(name, **kw).fit(train).save(root / name) for name, kw in MODELS.items()]
    shop.items.write_parquet(root / "items.parquet")
    proc, url = start_service(dirs[0], *map(str, dirs[1:]), "--items", str(root / "items.parquet"), timeout=60)
    with httpx.Client(base_url=url, timeout=30) as c:
        yield {"c": c, "dirs": dict(zip(MODELS, dirs)), "train": train, "shop": shop}
    stop(proc)


def _session(s, sid: str, n: int = 4) -> list[int]:
    """Click ``n`` items of one category into session ``sid``; their ids."""
    items = s["shop"].items.filter(s["shop"].items["Category"] == 2)["ItemId"].to_list()
    known = set(s["train"].vocab.ids.tolist())
    picks = [x for x in items if x in known][:n]
    for x in picks:
        assert s["c"].post(f"/v1/sessions/{sid}/clicks", json={"item": x, "k": 5}).status_code == 200
    return picks


def test_models_listed_with_their_explanations(served) -> None:
    body = served["c"].get("/v1/models").json()
    assert body["default"] == "sasrec"
    got = {m["name"]: m for m in body["models"]}
    assert list(got) == list(MODELS)
    assert got["sasrec"]["explanations"] == ["influence", "attention"]
    assert got["vsknn"]["explanations"] == ["influence", "neighbours"]
    assert got["gru4rec"]["explanations"] == got["narm"]["explanations"] == ["influence"]
    assert got["pop"]["n_items"] == served["train"].n_items


def test_every_model_sees_every_click(served) -> None:
    c = served["c"]
    clicks = _session(served, "multi", 3)
    assert c.get("/v1/sessions/multi").json() == {"session_id": "multi", "n_clicks": 3, "items": clicks}
    for name in MODELS:
        got = c.get("/v1/sessions/multi/recommendations", params={"model": name, "k": 5}).json()
        assert got["model_name"] == name and got["n_clicks"] == 3
        offline = Recommender.load(served["dirs"][name]).recommend(clicks, k=5)[0].tolist()
        assert got["items"] == offline, name


@pytest.mark.parametrize("name", list(MODELS))
def test_leaving_out_the_most_influential_click_changes_the_score_by_the_reported_amount(served, name) -> None:
    c = served["c"]
    sid = f"why-{name}"
    clicks = _session(served, sid)
    recs = c.get(f"/v1/sessions/{sid}/recommendations", params={"model": name, "k": 3}).json()
    item = next(x for x in recs["items"] if x not in clicks)
    r = c.get(f"/v1/sessions/{sid}/explanations", params={"item": item, "model": name})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["model"] == name and e["item"] == item and e["clicks"] == clicks and not e["truncated"]
    assert e["score"] == pytest.approx(recs["scores"][recs["items"].index(item)], rel=1e-5, abs=1e-6)
    assert e["rank"] == recs["items"].index(item)  # the list leaves out what the ranking leaves out
    assert [x["item"] for x in e["influence"]] == clicks
    top = max(e["influence"], key=lambda x: abs(x["score_change"]))
    rest = [x for i, x in enumerate(clicks) if i != top["position"]]
    without = c.post("/v1/recommendations", params={"model": name}, json={"items": rest, "k": 1, "allow": [item], "exclude_last": False}).json()
    assert without["items"] == [item]
    assert e["score"] - top["score_change"] == pytest.approx(without["scores"][0], rel=1e-5, abs=1e-6)
    assert top["score_without"] == pytest.approx(without["scores"][0], rel=1e-5, abs=1e-6)


def test_attention_and_neighbours(served) -> None:
    c = served["c"]
    clicks = _session(served, "why-parts")
    for name in ("sasrec", "vsknn"):
        item = c.get("/v1/sessions/why-parts/recommendations", params={"model": name, "k": 1}).json()["items"][0]
        e = c.get("/v1/sessions/why-parts/explanations", params={"item": item, "model": name}).json()
        if name == "sasrec":
            blocks = e["attention"]["blocks"]
            assert len(blocks) == 2 and all(len(b) == len(clicks) for b in blocks)
            assert np.allclose([sum(b) for b in blocks], 1.0, atol=1e-5) and e["neighbours"] is None
        else:
            nbs = e["neighbours"]
            assert e["attention"] is None and nbs and len(nbs) == e["neighbour_counts"]["n_holding_item"] <= 5
            assert all(item in nb["items"] for nb in nbs)
            sims = [nb["similarity"] for nb in nbs]
            assert sims == sorted(sims, reverse=True)
            assert sum(nb["contribution"] for nb in nbs) == pytest.approx(e["score"], rel=1e-5)  # k=5: all listed


def test_bad_names_get_a_clear_4xx(served) -> None:
    c = served["c"]
    clicks = _session(served, "why-bad", 2)
    r = c.get("/v1/sessions/why-bad/explanations", params={"item": clicks[0], "model": "nope"})
    assert r.status_code == 404 and "no model 'nope'" in r.json()["detail"] and "sasrec" in r.json()["detail"]
    r = c.get("/v1/sessions/why-bad/explanations", params={"item": 1})
    assert r.status_code == 404 and "not in the catalogue" in r.json()["detail"]
    r = c.get("/v1/sessions/why-bad/explanations", params={"item": "abc"})
    assert r.status_code == 404 and "integers" in r.json()["detail"]
    assert c.get("/v1/sessions/nobody/explanations", params={"item": clicks[0]}).status_code == 404
    assert c.get("/v1/sessions/why-bad/explanations").status_code == 422
    assert c.get("/v1/sessions/why-bad/recommendations", params={"model": "nope"}).status_code == 404
    assert c.get("/v1/sessions/nobody").status_code == 404


def test_item_table(served) -> None:
    c = served["c"]
    found = c.get("/v1/items", params={"q": "DRILL", "limit": 3}).json()
    assert found["total"] >= len(found["items"]) > 0
    assert all("drill" in x["title"].lower() and x["category"] == "power tools" for x in found["items"])
    ids = served["shop"].items["ItemId"].to_list()[:3]
    looked = c.get("/v1/items", params={"ids": [ids[2], 7, ids[0]]}).json()["items"]
    assert [x["id"] for x in looked] == [ids[2], ids[0]] and all(x["title"] and x["price"] > 0 for x in looked)
    cats = c.get("/v1/categories").json()["categories"]
    assert sum(x["n_items"] for x in cats) == served["shop"].items.height
    page = c.get("/v1/items", params={"category": cats[0]["name"], "limit": 5, "offset": 5}).json()
    assert page["total"] == cats[0]["n_items"] and len(page["items"]) == 5
    assert c.get("/v1/items", params={"limit": 0}).status_code == 422
    assert "/v1/sessions/{session_id}/explanations" in c.get("/openapi.json").json()["paths"]
