"""The shop at scale: the chunked synthetic shop, click logs as directories of Parquet parts
(nested ``key=value/`` partitions included), and prepare on compact id codes equal to prepare on
the frame itself."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from nextclick.data.dataset import Dataset
from nextclick.data.io import ReadOptions, read_clicks, read_compact
from nextclick.data.options import PrepareOptions
from nextclick.data.preprocess import prepare
from nextclick.data.synthetic import ShopConfig, shop_catalogue, shop_chunk, shop_size, write_shop
from nextclick.errors import NextclickError

CFG = ShopConfig(n_sessions=3_000, n_items=300, n_categories=6, days=6.0, seed=3)


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    write_shop(CFG, out, chunk_sessions=700)
    return out


def test_write_shop_parts_and_item_table(shop_dir: Path) -> None:
    parts = sorted((shop_dir / "clicks").iterdir())
    assert [p.name for p in parts] == [f"part-{k:05d}.parquet" for k in range(5)]  # 3000 / 700 -> 5 chunks
    clicks = read_clicks(shop_dir / "clicks")
    assert clicks.get_column("SessionId").n_unique() == CFG.n_sessions
    assert clicks.get_column("SessionId").max() == CFG.n_sessions - 1
    items = pl.read_parquet(shop_dir / "items.parquet")
    assert items.height == CFG.n_items
    assert clicks.get_column("ItemId").is_in(items.get_column("ItemId").implode()).all()


def test_a_chunk_is_regenerated_alone(shop_dir: Path) -> None:
    again = shop_chunk(CFG, shop_catalogue(CFG), 3, 700)
    assert again.equals(pl.read_parquet(shop_dir / "clicks" / "part-00003.parquet"))
    other_seed = shop_chunk(ShopConfig(**{**CFG.__dict__, "seed": 4}), shop_catalogue(CFG), 3, 700)
    assert not again.equals(other_seed)


def test_chunks_keep_zipf_popularity(shop_dir: Path) -> None:
    counts = read_clicks(shop_dir / "clicks").get_column("ItemId").value_counts(sort=True).get_column("count")
    assert counts[0] > 10 * counts[CFG.n_items // 2]  # a head of popular items, a long tail


def test_named_sizes() -> None:
    otto = shop_size("otto")
    assert (otto.n_items, otto.n_sessions) == (1_855_603, 12_899_779)
    assert shop_size("small") == ShopConfig()
    with pytest.raises(NextclickError, match="--size"):
        shop_size("huge")


def test_write_shop_refuses_a_used_directory(shop_dir: Path) -> None:
    with pytest.raises(NextclickError, match="not empty"):
        write_shop(CFG, shop_dir)


def test_directory_reads_like_one_file(shop_dir: Path, tmp_path: Path) -> None:
    whole = read_clicks(shop_dir / "clicks")
    whole.write_parquet(tmp_path / "all.parquet")
    assert read_clicks(tmp_path / "all.parquet").equals(whole)
    codes_frame, codes = read_compact(shop_dir / "clicks")
    assert codes_frame.get_column("ItemId").dtype == pl.Int32
    assert codes.restore(codes_frame).equals(whole)


def test_nested_partitions_become_columns(tmp_path: Path) -> None:
    for day, rows in {"1": [(1, 10, 5.0), (1, 11, 6.0)], "2": [(2, 10, 90.0)]}.items():
        for half, part in enumerate(rows):
            folder = tmp_path / "log" / f"day={day}" / f"half={half}"
            folder.mkdir(parents=True)
            pl.DataFrame([part], schema=["SessionId", "ItemId", "Time"], orient="row").write_parquet(folder / "p.parquet")
    (tmp_path / "log" / "_SUCCESS").write_text("")
    (tmp_path / "log" / "day=1" / ".p.parquet.crc").write_text("")
    df = read_clicks(tmp_path / "log", ReadOptions(user_col="day"))
    assert df.get_column("UserId").to_list() == [1, 1, 2]  # a partition key as a column, typed like any id
    assert df.get_column("ItemId").to_list() == [10, 11, 10]


def test_a_bad_part_is_named(shop_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "clicks"
    bad.mkdir()
    for p in sorted((shop_dir / "clicks").iterdir()):
        df = pl.read_parquet(p)
        (df.drop("Time") if p.name == "part-00002.parquet" else df).write_parquet(bad / p.name)
    for read in (read_clicks, read_compact):
        with pytest.raises(NextclickError, match=r"part-00002\.parquet: missing time column 'Time'"):
            read(bad)
    pl.read_parquet(bad / "part-00001.parquet").with_columns(pl.col("ItemId").cast(pl.String) + "x").write_parquet(
        bad / "part-00002.parquet"
    )
    with pytest.raises(NextclickError, match=r"part-00002\.parquet: canonical columns"):
        read_clicks(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NextclickError, match="no .parquet files"):
        read_clicks(tmp_path / "empty")


def _dataset(path: Path) -> tuple[dict, dict[str, pl.DataFrame]]:
    ds = Dataset.open(path)
    meta = {k: v for k, v in ds.meta.items() if k != "source"}
    return meta, {r: ds.frame(r) for r in ds.roles}


@pytest.mark.parametrize(
    "opts",
    [
        PrepareOptions(),
        PrepareOptions(read=ReadOptions(session_col=None, user_col="UserId"), session_gap=600.0, test_days=0.5),
        PrepareOptions(read=ReadOptions(user_col="UserId"), split="loo", min_item_support=2),
        PrepareOptions(drop_repeats=False, min_item_support=8, min_session_length=3, split_by="end"),
    ],
    ids=["default", "sessionize", "loo", "filters"],
)
def test_prepare_on_codes_equals_prepare_on_the_frame(shop_dir: Path, tmp_path: Path, opts: PrepareOptions) -> None:
    frame = read_clicks(shop_dir / "clicks", opts.read)
    if opts.split == "loo":
        frame = frame.drop("SessionId")
    prepare(frame, tmp_path / "a", opts)
    b_in = shop_dir / "clicks"
    if opts.split == "loo":
        b_in = tmp_path / "users.parquet"
        frame.write_parquet(b_in)
    prepare(b_in, tmp_path / "b", opts)
    meta_a, frames_a = _dataset(tmp_path / "a")
    meta_b, frames_b = _dataset(tmp_path / "b")
    assert json.dumps(meta_a, sort_keys=True) == json.dumps(meta_b, sort_keys=True)
    assert frames_a.keys() == frames_b.keys()
    for role in frames_a:
        assert frames_a[role].equals(frames_b[role]), role


def test_prepare_on_codes_keeps_string_ids(tmp_path: Path) -> None:
    rows = [(f"s{s}", f"item-{(s * 3 + j) % 5}", s * 1000.0 + j) for s in range(40) for j in range(4)]
    df = pl.DataFrame(rows, schema=["SessionId", "ItemId", "Time"], orient="row")
    df.write_csv(tmp_path / "log.csv")
    opts = PrepareOptions(min_item_support=1, test_days=0.2 / 86.4)
    prepare(read_clicks(tmp_path / "log.csv"), tmp_path / "a", opts)
    prepare(tmp_path / "log.csv", tmp_path / "b", opts)
    meta_a, frames_a = _dataset(tmp_path / "a")
    meta_b, frames_b = _dataset(tmp_path / "b")
    assert meta_a == meta_b
    assert frames_b["train"].get_column("ItemId").dtype == pl.String
    assert all(frames_a[r].equals(frames_b[r]) for r in frames_a)


def test_prepare_never_writes_into_its_input_directory(shop_dir: Path) -> None:
    with pytest.raises(NextclickError, match="inside the input directory"):
        prepare(shop_dir / "clicks", shop_dir / "clicks" / "prepared")


def test_generate_command_writes_parts(tmp_path: Path) -> None:
    import subprocess
    import sys

    args = ["generate", "--out", str(tmp_path / "shop"), "--n-sessions", "900", "--n-items", "200", "--chunk-sessions", "400"]
    p = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (tmp_path / "shop" / "clicks").iterdir()) == [f"part-0000{k}.parquet" for k in range(3)]
    cfg = ShopConfig(n_sessions=900, n_items=200)
    assert pl.read_parquet(tmp_path / "shop" / "clicks" / "part-00001.parquet").equals(shop_chunk(cfg, shop_catalogue(cfg), 1, 400))
