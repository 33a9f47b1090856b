"""The item table: columns found by name, ids matched as text, clear errors naming file, column and
row; the synthetic shop's readable titles; `nextclick train --items` keeping it in the artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nextclick.data.items import ARTIFACT_FILE, ItemTable, load_for
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.errors import NextclickError
from tests.test_cli import assert_user_error, run


def _csv(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "items.csv"
    p.write_text(text)
    return p


def test_csv_with_other_column_names_and_string_ids(tmp_path: Path) -> None:
    t = ItemTable.read(_csv(tmp_path, "item_id,Name,category,price,image\nA-1,Red kettle,kitchen,19.5,\nB-2,Blue kettle,kitchen,,x.png\n"))
    assert len(t) == 2
    assert t.rows(["B-2", "nope", "A-1"]) == [
        {"id": "B-2", "title": "Blue kettle", "category": "kitchen", "price": None, "image_url": "x.png"},
        {"id": "A-1", "title": "Red kettle", "category": "kitchen", "price": 19.5, "image_url": None},
    ]
    assert t.search("KETTLE", limit=1)[0] == 2 and t.search("a-1")[1][0]["id"] == "A-1"
    assert t.categories() == [{"name": "kitchen", "n_items": 2}]


def test_integer_ids_match_whichever_way_they_are_asked(tmp_path: Path) -> None:
    t = ItemTable.read(_csv(tmp_path, "ItemId,Title,CategoryName\n7,Seven,x\n12,Twelve,y\n"))
    assert [r["id"] for r in t.rows([12, "7"])] == [12, 7]  # numbers come back as numbers
    assert t.has([7, "12", 3]).tolist() == [True, True, False]
    assert t.category_of([12, 3]) == ["y", None]
    assert t.coverage(np.array([7, 8, 12])) == (2, 3)


@pytest.mark.parametrize(("text", "needles"), [
    ("ItemId,Category\n1,a\n", ["no column for title", "columns: ItemId, Category"]),
    ("Title,Category\nx,a\n", ["no column for id"]),
    ("ItemId,Title,Category\n1,x,a\n1,y,b\n", ["item id '1' appears more than once", "'ItemId'"]),
    ("ItemId,Title,Category,Price\n1,x,a,3.5\n2,y,b,cheap\n", ["column 'Price', data row 2", "'cheap' is not a number"]),
    ("ItemId,Title,Category\n1,x,a\n,y,b\n", ["column 'ItemId' is empty in 1 rows (first: data row 2)"]),
])
def test_bad_tables_name_what_is_wrong(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(NextclickError) as e:
        ItemTable.read(_csv(tmp_path, text))
    assert str(tmp_path / "items.csv") in str(e.value)
    for n in needles:
        assert n in str(e.value)


def test_missing_or_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(NextclickError, match="no such file"):
        ItemTable.read(tmp_path / "nope.csv")
    (tmp_path / "items.json").write_text("{}")
    with pytest.raises(NextclickError, match="expected a .csv, .tsv or .parquet file"):
        ItemTable.read(tmp_path / "items.json")
    assert load_for(tmp_path, None, np.array([1])) is None  # an artifact without a table


def test_synthetic_shop_titles_are_readable_and_leave_the_clicks_unchanged() -> None:
    shop = generate_shop(ShopConfig(n_items=400, n_sessions=500, n_categories=30))
    t = ItemTable.from_frame(shop.items)
    rows = t.rows(shop.items["ItemId"].to_list())
    assert len({r["title"] for r in rows}) > 350 and all(r["price"] > 0 for r in rows)
    drills = t.search("cordless drill")[1]
    assert drills and {r["category"] for r in drills} <= {"power tools", "power tools 1"}
    assert "kettle" in " ".join(r["title"] for r in t.search(category="kitchen", limit=50)[1])
    assert generate_shop(ShopConfig(n_items=400, n_sessions=500, n_categories=30)).clicks.equals(shop.clicks)


def test_train_keeps_the_item_table_in_the_artifact(tmp_path: Path) -> None:
    shop = generate_shop(ShopConfig(n_items=200, n_sessions=400, n_categories=4))
    clicks = tmp_path / "clicks.tsv"
    shop.clicks.select("SessionId", "ItemId", "Time").write_csv(clicks, separator="\t")
    shop.items.write_parquet(tmp_path / "items.parquet")
    p = run("train", "pop", "--train", str(clicks), "--out", str(tmp_path / "pop"), "--items", str(tmp_path / "items.parquet"))
    assert "describing" in p.stdout
    kept = ItemTable.read(tmp_path / "pop" / ARTIFACT_FILE)
    assert len(kept) == shop.items.height
    (tmp_path / "bad.csv").write_text("ItemId,Category\n1,a\n")
    bad = run("train", "pop", "--train", str(clicks), "--out", str(tmp_path / "pop2"), "--items", str(tmp_path / "bad.csv"), ok=False)
    assert_user_error(bad, "bad.csv", "no column for title")
    assert not (tmp_path / "pop2").exists()  # refused before training


def test_a_table_of_ids_and_categories_only_for_the_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nextclick.report import read_items

    path = _csv(tmp_path, "ItemId,Aisle,Category\n7,x,1\n12,,2\n30,y,3\n")
    t = ItemTable.read(path, need=("id", "category"), columns={"category": "Aisle"})
    assert t.id_array().tolist() == [7, 12, 30] and t.rows([7])[0]["title"] == "7"  # no title: the id
    ids, cats = read_items(path, "Aisle")
    assert ids.tolist() == [7, 30] and cats.tolist() == ["x", "y"]
    assert "1 of 3 items have no category" in caplog.text
    assert read_items(path)[1].tolist() == ["1", "2", "3"]  # found by name
    with pytest.raises(NextclickError, match="no column 'Shelf' for the category"):
        read_items(path, "Shelf")


def test_without_a_table_the_ids_alone() -> None:
    t = ItemTable.of_ids(np.array([101, 205, 3007]))
    assert t.search("0")[0] == 3 and t.search("20")[1] == [
        {"id": 205, "title": "205", "category": None, "price": None, "image_url": None}]
    assert [r["id"] for r in t.rows([3007, 1, "205"])] == [3007, 205]
    assert t.categories() == [] and t.search(category="x") == (0, [])
