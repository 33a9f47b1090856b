"""The HTML report: kept predictions, bootstrap intervals over sessions, curves, intent shifts, the
page itself, the training curves in artifacts and the `report` command, on a small synthetic shop."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.report import ReportOptions, item_categories, read_items, run_model, stats, write_report
from nextclick.report.build import shift_estimates
from tests.conftest import REPO_ROOT

FAST = ReportOptions(n_boot=200)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small prepared shop, its item table, and pop / sr / a 2-epoch SASRec trained and saved."""
    from nextclick.data.preprocess import PrepareOptions, prepare
    from nextclick.data.synthetic import ShopConfig, generate_shop
    from nextclick.models import create_model

    root = tmp_path_factory.mktemp("shop")
    s = generate_shop(ShopConfig(n_items=200, n_sessions=3000, seed=3))
    s.items.write_parquet(root / "items.parquet")
    ds = prepare(s.clicks.drop("UserId"), root / "data", PrepareOptions())
    train, _ = ds.sessions("train")
    test, _ = ds.sessions("test")
    models = {}
    for name, params in (("pop", {}), ("sr", {}),
                         ("sasrec", {"n_epochs": 2, "hidden": 16, "max_len": 10, "n_threads": 1, "progress": False})):
        models[name] = create_model(name, **params).fit(train)
        models[name].save(root / "models" / name)
    cats, names = item_categories(train.vocab, *read_items(root / "items.parquet", "Category"))
    return {"root": root, "train": train, "test": test, "models": models, "cats": cats, "names": names, "shop": s}


@pytest.fixture(scope="module")
def runs(shop: dict) -> list:
    return [run_model(m, shop["test"], categories=shop["cats"]) for m in shop["models"].values()]


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_sessions() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n_sessions in (40, 4000):
        n = rng.integers(1, 8, n_sessions).astype(float)  # predictions per session
        hits = rng.binomial(n.astype(int), 0.3).astype(float)
        e = stats.bootstrap_ratio(hits[:, None], n[:, None], n_boot=500, seed=1)
        assert e.lo[0] <= e.value[0] <= e.hi[0]
        assert e.value[0] == pytest.approx(hits.sum() / n.sum())
        widths.append(e.hi[0] - e.lo[0])
    assert widths[1] < widths[0] / 4  # 100 times the sessions: about a tenth of the width
    again = stats.bootstrap_ratio(hits[:, None], n[:, None], n_boot=500, seed=1)
    assert again.lo[0] == e.lo[0] and again.hi[0] == e.hi[0]  # seeded


def test_bootstrap_resamples_sessions_not_predictions() -> None:
    """Sessions whose predictions all agree: resampling sessions gives a wider interval than the
    same predictions taken as independent (one prediction per session)."""
    rng = np.random.default_rng(2)
    per = rng.integers(0, 2, 200).astype(float)  # each session all hits or all misses, 10 predictions each
    by_session = stats.bootstrap_ratio((per * 10)[:, None], np.full((200, 1), 10.0), n_boot=500)
    flat = stats.bootstrap_ratio(np.repeat(per, 10)[:, None], np.ones((2000, 1)), n_boot=500)
    assert by_session.value[0] == pytest.approx(flat.value[0])
    assert by_session.hi[0] - by_session.lo[0] > 2 * (flat.hi[0] - flat.lo[0])


def test_kept_predictions_are_every_prefix_of_the_test_sessions(shop: dict, runs: list) -> None:
    test: Sessions = shop["test"]
    for r in runs:
        p = r.predictions
        assert p.size == test.n_predictions() and p.rank.dtype == np.int32 and p.top.shape == (p.size, 20)
        sess, plen, targets = test.prefixes()
        assert sorted(zip(p.session.tolist(), p.position.tolist())) == sorted(zip(sess.tolist(), plen.tolist()))
        target = test.items[test.offsets[p.session] + p.position]
        hit_in_top = (p.top == target[:, None]).any(axis=1)
        assert np.all(hit_in_top[p.rank < 20])  # a hit is in the top-20 list (which may hold a target that ties)
        assert hit_in_top.mean() - np.mean(p.rank < 20) < 0.2


def test_curves_at_k_equal_the_evaluator(shop: dict, runs: list) -> None:
    for r in runs:
        recall, mrr = stats.rank_curves(r.predictions.rank, 50)
        plain = evaluate(shop["models"][r.name], shop["test"]).metrics
        for k in (1, 5, 10, 20):
            assert recall[k - 1] == pytest.approx(plain[f"recall@{k}"], abs=1e-12)
            assert mrr[k - 1] == pytest.approx(plain[f"mrr@{k}"], abs=1e-12)
        assert np.all(np.diff(recall) >= 0) and np.all(np.diff(mrr) >= 0)


def test_grouped_means_are_the_means_of_each_group(runs: list) -> None:
    p, S = runs[1].predictions, runs[1].sessions.n_sessions
    group = np.minimum(p.position, 3) - 1
    e = stats.grouped_means(p.session, group, stats.hits_and_rr(p.rank, 20)[:, :2], S, 3, n_boot=100)
    for g in range(3):
        m = group == g
        assert e.value[g, 0] == pytest.approx(np.mean(p.rank[m] < 20))
        assert e.n[g, 0] == m.sum()
        assert np.all(e.lo[g] <= e.value[g] + 1e-12) and np.all(e.value[g] <= e.hi[g] + 1e-12)


def test_shifts_found_on_a_hand_made_example() -> None:
    # items 1, 2: category 0; 3, 4: category 1; 5: category 2; 6: category 0; 7: unknown
    cats = np.array([-1, 0, 0, 1, 1, 2, 0, -1])
    s = Sessions.from_lists([[1, 2, 3, 4], [5, 5, 6], [3, 7, 1]], n_items=7)
    shift, offset = stats.click_shifts(s, cats)
    assert shift.tolist() == [False, False, True, False, False, False, True, False, False, False]
    assert offset.tolist() == [0, 0, 1, 2, 0, 0, 1, 0, 0, 0]
    sess, plen, _ = s.prefixes()
    rows, offs, new = stats.shift_rows(s, cats, sess, plen, max_offset=8)
    got = sorted((int(sess[r]), int(plen[r]), int(o), int(c)) for r, o, c in zip(rows, offs, new))
    # (session, clicks given, offset, new category): before the shift (offset 0) and after it
    assert got == [(0, 2, 0, 1), (0, 3, 1, 1), (1, 2, 0, 0)]
    assert stats.clicks_to_follow(np.array([0.1, 0.3, 0.6, 0.7])) == 2
    assert stats.clicks_to_follow(np.array([0.9, 0.3, 0.4])) is None  # offset 0 does not count


def test_sequence_model_follows_the_new_category_after_a_shift(shop: dict, runs: list) -> None:
    sr = next(r for r in runs if r.name == "sr")
    e = shift_estimates(sr, FAST)
    assert e.n[0, 0] > 40 and e.n[1, 0] > 40
    assert e.value[1, 0] > e.value[0, 0] + 0.1  # one click in the new category moves the list there
    pop = shift_estimates(next(r for r in runs if r.name == "pop"), FAST)
    assert pop.value[1, 0] < e.value[1, 0]


def test_item_categories_map_the_shop_ids(shop: dict) -> None:
    train, cats, names = shop["train"], shop["cats"], shop["names"]
    items = shop["shop"].items
    want = dict(zip(items.get_column("ItemId").to_list(), items.get_column("Category").to_list()))
    idx = np.arange(1, train.n_items + 1)
    assert [names[c] for c in cats[idx]] == [str(want[i]) for i in train.vocab.decode(idx).tolist()]
    assert cats[0] == -1


def test_html_is_self_contained_with_one_image_per_figure(runs: list, tmp_path: Path) -> None:
    path = write_report(runs, tmp_path / "r.html", options=FAST)
    text = path.read_text()
    srcs = re.findall(r'<img src="([^"]*)"', text)
    assert len(srcs) == text.count("<img") == 6  # leaderboard, curves, positions, shift, coverage, training
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="https?:', text) and "<script" not in text
    assert "Clicks to follow" in text and "sasrec" in text
    assert "No epochs recorded" in text and "pop" in text  # the models without a training curve are named


def test_trained_sasrec_and_gru4rec_record_their_curve(shop: dict, tmp_path: Path) -> None:
    from nextclick.models import create_model

    art = json.loads((shop["root"] / "models" / "sasrec" / "config.json").read_text())["training"]["curve"]
    assert [p["epoch"] for p in art] == [1, 2] and all(p["loss"] > 0 and p["seconds"] > 0 for p in art)
    assert all("valid_recall@20" in p for p in art)  # held-out clicks validated each epoch
    g = create_model("gru4rec", n_epochs=2, layers=(16,), batch_size=32, n_sample=64, n_threads=1)
    g.fit(shop["train"], shop["test"]).save(tmp_path / "g")
    curve = json.loads((tmp_path / "g" / "config.json").read_text())["training"]["curve"]
    assert [p["epoch"] for p in curve] == [1, 2] and [p["loss"] for p in curve] == pytest.approx(g.epoch_losses_)
    assert all(0 <= p["valid_recall@20"] <= 1 for p in curve)


def test_cli_writes_the_report(shop: dict, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nextclick.cli import app

    root = shop["root"]
    out = tmp_path / "rep" / "report.html"
    args = ["report", str(root / "models" / "pop"), str(root / "models" / "sr"), "--data", str(root / "data"),
            "--items", str(root / "items.parquet"), "--out", str(out), "--bootstrap", "100", "--max-sessions", "100"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert str(out) in res.output and out.read_text().count("<img") == 5  # no training curve: pop and sr
    assert "random SUBSET" in out.read_text()
    res = CliRunner().invoke(app, [*args[:5], "--items", str(root / "items.parquet"), "--category-col", "Aisle"])
    assert isinstance(res.exception, NextclickError) and "no column 'Aisle' for the category" in str(res.exception)


def test_cli_missing_data_dir_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = [sys.executable, "-m", "nextclick", "report", str(tmp_path), "--data", str(tmp_path / "nope")]
    p = subprocess.run(args, capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"--data {tmp_path / 'nope'}: no such directory" in p.stderr


def test_kept_predictions_are_the_same_when_ranked_in_catalogue_chunks(shop: dict, runs: list) -> None:
    whole = next(r for r in runs if r.name == "sasrec").predictions
    chunked = run_model(shop["models"]["sasrec"], shop["test"], chunk_items=50).predictions  # query vectors, 4 chunks
    order_w = np.lexsort((whole.position, whole.session))
    order_c = np.lexsort((chunked.position, chunked.session))
    for a, b in zip(whole, chunked):
        assert np.array_equal(a[order_w], b[order_c])


def test_quickstart_ends_with_the_report_and_the_demo_command(tmp_path: Path) -> None:
    from nextclick.data.synthetic import ShopConfig
    from nextclick.quickstart import run_quickstart

    lines: list[str] = []
    rows, _ = run_quickstart(tmp_path / "qs", ShopConfig(n_items=200, n_sessions=2000), models=["pop", "sr"], echo=lines.append)
    text = "\n".join(lines)
    report = tmp_path / "qs" / "report.html"
    assert f"report: {report}" in text and report.read_text().count("<img") == 5
    models = " ".join(str(tmp_path / "qs" / "models" / r.model) for r in rows)
    assert f"nextclick serve {models} --items {tmp_path / 'qs' / 'shop_items.parquet'}" in text
    assert text.rstrip().endswith("then open http://127.0.0.1:8000/")
    assert "Clicks to follow" in report.read_text()
