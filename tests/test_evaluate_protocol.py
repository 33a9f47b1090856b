"""The evaluation protocol around unknown items: test clicks on items training never saw are
removed and counted, and test sessions encoded with another vocabulary are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from nextclick.data.dataset import load_sessions
from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError
from nextclick.evaluate import evaluate
from nextclick.models import get_model_class
from tests.test_cli import run

TRAIN = [[10, 20, 30], [20, 30, 40], [10, 30, 40], [30, 40, 10]]
# unknown items: 99 inside a session, 98 as a whole session's clicks but one, 97 + 96 leave one click
TEST = [[10, 99, 20, 30], [98, 40], [97, 96, 10], [20, 30, 40]]


def click_file(path: Path, sessions: list[list[int]]) -> Path:
    rows = [(s, item, float(100 * s + j)) for s, items in enumerate(sessions) for j, item in enumerate(items)]
    pl.DataFrame(rows, schema=["SessionId", "ItemId", "Time"], orient="row").write_csv(path, separator="\t")
    return path


@pytest.fixture
def model(tmp_path: Path):
    tr, _ = load_sessions(click_file(tmp_path / "train.tsv", TRAIN), "train")
    return get_model_class("sr").from_preset(None).fit(tr)


def test_unknown_test_items_are_removed_and_counted(model, tmp_path: Path) -> None:
    test, rep = load_sessions(click_file(tmp_path / "test.tsv", TEST), "test", vocab=model.vocab_)
    assert rep.as_dict() == {"unknown_item_events_removed": 4, "short_sessions_removed": 2, "short_session_events_removed": 2}
    got = [model.vocab_.decode(test.items[a:b]).tolist() for a, b in zip(test.offsets[:-1], test.offsets[1:])]
    assert got == [[10, 20, 30], [20, 30, 40]]
    res = evaluate(model, test)
    assert res.metrics["n_predictions"] == 4 and res.metrics["n_sessions"] == 2


def test_cli_evaluate_reports_the_unknown_items(model, tmp_path: Path) -> None:
    model.save(tmp_path / "sr")
    p = run("evaluate", str(tmp_path / "sr"), "--test", str(click_file(tmp_path / "test.tsv", TEST)), "--json")
    assert "removed 4 clicks on items unknown to the model, then 2 sessions left shorter than 2 (2 clicks)" in p.stderr
    assert json.loads(p.stdout)["n_predictions"] == 4


def test_evaluate_refuses_sessions_of_another_vocabulary(model, tmp_path: Path) -> None:
    other = ItemVocab.fit([10, 20, 30, 50])  # as many items as the model's, but 50 is not 40
    foreign, _ = load_sessions(click_file(tmp_path / "test.tsv", TEST), "test", vocab=other)
    with pytest.raises(NextclickError, match="another item vocabulary"):
        evaluate(model, foreign)
    bare = Sessions(items=np.array([1, 2, 3]), offsets=np.array([0, 3]), n_items=model.n_items_ + 1)
    with pytest.raises(NextclickError, match="index 5 items, the model 4"):
        evaluate(model, bare)


def test_cli_evaluate_re_encodes_another_datasets_split(tmp_path: Path) -> None:
    """A split of another prepared dataset is read by item id and encoded with the model's catalogue."""
    run("generate", "--out", str(tmp_path / "shop.csv"), "--n-sessions", "1500", "--n-items", "200")
    run("prepare", str(tmp_path / "shop.csv"), "--out", str(tmp_path / "a"), "--min-item-support", "5")
    run("prepare", str(tmp_path / "shop.csv"), "--out", str(tmp_path / "b"), "--min-item-support", "1")
    run("train", "pop", "--train", str(tmp_path / "a"), "--out", str(tmp_path / "pop"))
    n_a = json.loads((tmp_path / "pop" / "config.json").read_text())["n_items"]
    n_b = len(json.loads((tmp_path / "b" / "meta.json").read_text())["vocab"]["ids"])
    assert n_b > n_a  # b's catalogue is larger: its indices mean other items
    p = run("evaluate", str(tmp_path / "pop"), "--test", str(tmp_path / "b"), "--json")
    assert json.loads(p.stdout)["n_items"] == n_a and "unknown to the model" in p.stderr
