"""The command-line interface end to end, in real subprocesses, on real and synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    p = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    if ok:
        assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def assert_user_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    for n in needles:
        assert n in p.stderr, f"{n!r} not in stderr: {p.stderr}"


@pytest.fixture(scope="module")
def rsc15(shared_data: Path) -> Path:
    return shared_data / "rsc15-100k"


@pytest.fixture(scope="module")
def vsknn_dir(rsc15: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m") / "vsknn"
    run("train", "vsknn", "--train", str(rsc15 / "train_full.tsv"), "--out", str(out), "--preset", "tuned_rsc15")
    return out


def test_help_explains_every_command() -> None:
    out = run("--help").stdout
    for cmd in ("prepare", "train", "evaluate", "recommend", "quickstart"):
        assert cmd in out
    out = run("prepare", "--help").stdout
    for opt in (
        "--session-col",
        "--item-col",
        "--time-col",
        "--user-col",
        "--session-gap",
        "--min-item-support",
        "--split",
        "--test-days",
    ):
        assert opt in out


def test_option_choices_are_the_config_literals() -> None:
    """Each enum option offers exactly the values of the config field it fills, in order."""
    import typing

    from nextclick import cli
    from nextclick.data.io import ReadOptions
    from nextclick.data.preprocess import PrepareOptions
    from nextclick.serve.settings import Settings
    from nextclick.tune import tune

    for enum, owner, field in (
        (cli.Fmt, ReadOptions, "format"),
        (cli.TimeFmt, ReadOptions, "time_format"),
        (cli.Split, PrepareOptions, "split"),
        (cli.SplitBy, PrepareOptions, "split_by"),
        (cli.Direction, tune, "direction"),
        (cli.ScoringMode, Settings, "scoring"),
        (cli.ModelWorkerKind, Settings, "model_worker"),
        (cli.StoreKind, Settings, "store"),
    ):
        assert [m.value for m in enum] == list(typing.get_args(typing.get_type_hints(owner)[field]))
    out = run("serve", "--help").stdout
    assert "memory|redis" in out and "auto|exact|fp16" in out and "process|thread" in out


def test_cli_start_up_does_not_import_the_heavy_stack() -> None:
    # `nextclick --help` stays fast: commands import what they need when they run
    code = "import sys, nextclick.cli; print([m for m in ('torch', 'numba', 'polars', 'numpy') if m in sys.modules])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert p.stdout.strip() == "[]", p.stderr


def test_train_evaluate_json_on_rsc15(rsc15: Path, vsknn_dir: Path) -> None:
    assert sorted(p.name for p in vsknn_dir.iterdir()) == ["config.json", "vocab.json", "weights.safetensors"]
    p = run("evaluate", str(vsknn_dir), "--test", str(rsc15 / "test.tsv"), "--json")
    m = json.loads(p.stdout)
    assert m["n_predictions"] == 10_152
    for k in (1, 5, 10, 20):
        for name in ("recall", "mrr", "ndcg"):
            assert 0.0 <= m[f"{name}@{k}"] <= 1.0
    # the validation-tuned V-SKNN is at least as good as the reference V-SKNN on this split
    assert m["recall@20"] >= 0.674 and m["mrr@20"] >= 0.346


def test_evaluate_table_labels_sampled_metrics(rsc15: Path, vsknn_dir: Path) -> None:
    out = run("evaluate", str(vsknn_dir), "--test", str(rsc15 / "test.tsv"), "--sampled", "100", "--by-length").stdout
    assert "full-catalogue ranking" in out
    assert "SAMPLED" in out and "not full ranking" in out
    assert "by session length" in out


def test_recommend_shop_ids_unknown_and_fallback(rsc15: Path, vsknn_dir: Path) -> None:
    import polars as pl

    first = pl.read_csv(rsc15 / "train_full.tsv", separator="\t", n_rows=3)["ItemId"].to_list()
    p = run("recommend", str(vsknn_dir), *map(str, first), "999999999999", "abc", "--k", "5", "--json")
    r = json.loads(p.stdout)
    assert len(r["items"]) == 5 and r["scores"] == sorted(r["scores"], reverse=True)
    assert set(r["unknown"]) == {"999999999999", "abc"} and not r["fallback"]
    assert "unknown" in p.stderr
    vocab = set(json.loads((vsknn_dir / "vocab.json").read_text())["ids"])
    assert set(r["items"]) <= vocab
    p = run("recommend", str(vsknn_dir), "nope", "--k", "3", "--json")
    r = json.loads(p.stdout)
    assert r["fallback"] and len(r["items"]) == 3


def test_prepare_then_train_evaluate_on_dataset_dir(tmp_path: Path) -> None:
    clicks = tmp_path / "shop.csv"
    run("generate", "--out", str(clicks), "--n-sessions", "3000", "--n-items", "300", "--users-only")
    ds = tmp_path / "ds"
    out = run("prepare", str(clicks), "--out", str(ds), "--session-col", "", "--user-col", "UserId").stdout
    assert "sessionize" in out and "drop_repeats" in out and "min_support" in out and "time_split" in out
    meta = json.loads((ds / "meta.json").read_text())
    assert set(meta["files"]) == {"train", "test", "train_tr", "valid"}
    assert meta["report"][-2]["details"]["by"] == "strict"
    sr = str(tmp_path / "sr")
    # validation may hold neither test data nor sessions the model trains on
    p = run("train", "sr", "--train", str(ds), "--valid", str(ds), "--out", sr, ok=False)
    assert_user_error(p, "sessions are in --train", "in full", "train_tr.parquet")
    p = run("train", "sr", "--train", str(ds / "train_tr.parquet"), "--valid", str(ds / "test.parquet"), "--out", sr, ok=False)
    assert_user_error(p, "is the test split of")
    p = run("train", "sr", "--train", str(ds / "test.parquet"), "--out", sr, ok=False)
    assert_user_error(p, "--train", "is the test split of")
    run("train", "sr", "--train", str(ds / "train_tr.parquet"), "--valid", str(ds), "--out", sr, "--param", "steps=5")
    run("train", "sr", "--train", str(ds), "--out", sr, "--param", "steps=5")
    m = json.loads(run("evaluate", sr, "--test", str(ds), "--json").stdout)
    # the synthetic shop's sessions follow intents: sequential rules (0.90 when written) beat popularity (0.48)
    assert m["n_predictions"] > 500 and m["recall@20"] > 0.8


def test_prepare_amazon_leave_one_out(shared_data: Path, tmp_path: Path) -> None:
    out = run(
        "prepare",
        str(shared_data / "amazon-games" / "sequences.txt"),
        "--out",
        str(tmp_path / "ag"),
        "--split",
        "loo",
        "--keep-repeats",
        "--min-item-support",
        "1",
        "--min-session-length",
        "1",
    ).stdout
    meta = json.loads((tmp_path / "ag" / "meta.json").read_text())
    assert meta["stats"]["test"]["sessions"] + meta["report"][-1]["details"]["short_sequences_train_only"] == 31_013
    assert len(meta["vocab"]["ids"]) == 23_715
    assert "leave_one_out" in out


def test_user_errors_are_clear_without_traceback(tmp_path: Path, vsknn_dir: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("SessionId,ItemId,Time\n1,10,1400000000\n1,11,yesterday\n")
    assert_user_error(run("prepare", str(bad), "--out", str(tmp_path / "o"), ok=False), "bad.csv", "line 3", "'Time'")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("Session,ItemId,Time\n1,10,1\n")
    assert_user_error(run("prepare", str(nocol), "--out", str(tmp_path / "o"), ok=False), "nocol.csv", "'SessionId'")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_user_error(run("prepare", str(empty), "--out", str(tmp_path / "o"), ok=False), "empty.csv", "empty")
    nonnum = tmp_path / "nonnum.tsv"
    nonnum.write_text("SessionId\tItemId\tTime\n1\t10\t1\n1\tx7\t2\n")
    assert_user_error(run("evaluate", str(vsknn_dir), "--test", str(nonnum), ok=False), "nonnum.tsv", "line 3", "'ItemId'")
    assert_user_error(run("train", "nosuchmodel", "--train", str(bad), "--out", str(tmp_path / "m"), ok=False), "unknown model")
    assert_user_error(
        run("train", "sr", "--train", str(nonnum), "--out", str(tmp_path / "m"), "--param", "steps=x", ok=False), "steps"
    )
    assert_user_error(run("recommend", str(tmp_path / "nomodel"), "1", ok=False), "not a model directory")
    assert_user_error(run("recommend", str(vsknn_dir), "1", "--k", "0", ok=False), "--k")


def test_evaluate_refuses_bad_numbers_and_an_empty_test_set(tmp_path: Path, vsknn_dir: Path, rsc15: Path) -> None:
    test = str(rsc15 / "test.tsv")
    for args, needle in ((["--batch-size", "0"], "--batch-size"), (["--batch-size", "-5"], "--batch-size"),
                         (["--sampled", "-3"], "--sampled"), (["--max-sessions", "0"], "--max-sessions")):
        assert_user_error(run("evaluate", str(vsknn_dir), "--test", test, *args, ok=False), needle)
    empty = tmp_path / "unknown.tsv"  # every click on an item the model does not know
    empty.write_text("SessionId\tItemId\tTime\n1\t1\t1\n1\t2\t2\n")
    assert_user_error(run("evaluate", str(vsknn_dir), "--test", str(empty), "--json", ok=False), "no next-click prediction")


def test_prepare_refuses_to_write_over_its_input(tmp_path: Path) -> None:
    clicks = tmp_path / "dl" / "train.parquet"
    run("generate", "--out", str(clicks), "--n-sessions", "2000", "--n-items", "200")
    before = clicks.read_bytes()
    for extra in ([], ["--overwrite"]):
        p = run("prepare", str(clicks), "--out", str(clicks.parent), *extra, ok=False)
        assert_user_error(p, "would write over the input", "train.parquet")
    assert clicks.read_bytes() == before


def test_quickstart_runs_and_prints_leaderboard(tmp_path: Path) -> None:
    out = run("quickstart", "--out", str(tmp_path / "qs"), "--n-sessions", "4000", "-m", "pop", "-m", "sr").stdout
    assert "leaderboard" in out and "Recall@20" in out
    assert "replaying anonymous session" in out


def test_recommend_exclude_last_and_keep_last(rsc15: Path, vsknn_dir: Path) -> None:
    # rsc15's sessions keep consecutive repeats: the last click is kept unless asked
    assert json.loads((vsknn_dir / "config.json").read_text())["training"]["consecutive_repeats"] > 0
    kept = json.loads(run("recommend", str(vsknn_dir), "214536502", "--k", "5", "--json").stdout)["items"]
    assert 214536502 in kept
    left = json.loads(run("recommend", str(vsknn_dir), "214536502", "--k", "5", "--json", "--exclude-last").stdout)
    assert 214536502 not in left["items"] and left["items"] == [i for i in kept if i != 214536502] + left["items"][4:]
