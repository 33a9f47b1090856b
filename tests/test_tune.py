"""Hyper-parameter search (`nextclick tune`): plain results, validation data only, clear errors.

Cheap models (SR, V-SKNN) on a tiny synthetic dataset or a slice of rsc15, a few trials each.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pytest

from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.sessions import Sessions
from nextclick.data.synthetic import ShopConfig, generate_shop
from nextclick.errors import NextclickError
from nextclick.models.rules import SequentialRules
from nextclick.tune import BEST_FILE, TRIALS_FILE, load_tuning_data, parse_space, tune
from tests.conftest import REPO_ROOT

SR_SPACE = {"steps": {"low": 1, "high": 12}, "weighting": {"choices": ["div", "linear", "same"]}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prepared time-split dataset (train / test / train_tr / valid)."""
    shop = generate_shop(ShopConfig(n_sessions=1200, n_items=150, n_categories=4, days=6, seed=1))
    out = tmp_path_factory.mktemp("tune") / "shop"
    prepare(shop.clicks, out, PrepareOptions(min_item_support=2))
    return out


@pytest.fixture(scope="module")
def data(dataset: Path):
    return load_tuning_data(dataset)


def read_trials(out: Path) -> list[dict[str, str]]:
    with (out / TRIALS_FILE).open(newline="") as f:
        return list(csv.DictReader(f))


def test_results_are_plain_files_and_best_is_the_best_trial(data, tmp_path: Path) -> None:
    res = tune("sr", data, SR_SPACE, preset="transitions", fixed={"pop_tiebreak": 0.01}, n_trials=4, seed=0, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [BEST_FILE, TRIALS_FILE]
    rows = read_trials(tmp_path)
    assert [int(r["number"]) for r in rows] == [0, 1, 2, 3]
    assert {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["duration_s"]) >= 0 and set(json.loads(r["params"])) == {"steps", "weighting"} for r in rows)
    best = json.loads((tmp_path / BEST_FILE).read_text())
    values = [float(r["value"]) for r in rows]
    assert best["value"] == max(values) == res.best_value
    assert best["best_trial"] == values.index(max(values)) == res.best_trial
    assert best["metric"] == "mrr@20" and best["metrics"]["mrr@20"] == best["value"]
    # the tuned values override the preset's, the fixed one is kept
    assert best["params"] == {**best["tuned"], "pop_tiebreak": 0.01} == res.best_params
    assert best["data"]["train"].endswith("train_tr.parquet") and best["data"]["valid"].endswith("valid.parquet")
    assert best["n_trials"] == 4 and best["n_failed"] == 0


def test_never_reads_the_test_split(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(dataset, ds)
    (ds / "test.parquet").write_bytes(b"not a parquet file")  # any read would fail
    opened: list[str] = []
    real = pl.read_parquet

    def spy(source, *args, **kwargs):
        opened.append(Path(source).name)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(pl, "read_parquet", spy)
    res = tune("sr", load_tuning_data(ds), SR_SPACE, n_trials=2, out=tmp_path / "out")
    assert res.n_complete == 2
    assert sorted(opened) == ["train_tr.parquet", "valid.parquet"]
    # asked explicitly, the test split (and a time split's full train, which holds the validation
    # period) is refused
    with pytest.raises(NextclickError, match="test split"):
        load_tuning_data(train=ds / "train_tr.parquet", valid=ds / "test.parquet")
    with pytest.raises(NextclickError, match="train_tr"):
        load_tuning_data(train=ds / "train.parquet", valid=ds / "valid.parquet")


def test_refuses_training_that_holds_the_validation_sessions(dataset: Path, tmp_path: Path) -> None:
    pl.read_parquet(dataset / "train.parquet").write_csv(tmp_path / "train_full.tsv", separator="\t")
    pl.read_parquet(dataset / "valid.parquet").write_csv(tmp_path / "valid.tsv", separator="\t")
    with pytest.raises(NextclickError, match=r"of its \d+ sessions are in --train .*train_full.tsv in full"):
        load_tuning_data(train=tmp_path / "train_full.tsv", valid=tmp_path / "valid.tsv")


def test_same_seed_same_trials(data) -> None:
    def run(seed: int) -> list[tuple[dict, float]]:
        res = tune("sr", data, {**SR_SPACE, "pop_tiebreak": {"low": 0, "high": 0.1}}, n_trials=3, seed=seed)
        return [(t.params, t.value) for t in res.study.trials]

    first = run(7)
    assert run(7) == first
    assert run(8) != first


@dataclass
class PickyConfig:
    steps: int = 1
    weighting: Literal["div", "linear", "same"] = "same"
    pop_tiebreak: float = 0.0


class PickyRules(SequentialRules):
    """SR that rejects one setting the way models reject invalid combinations."""

    name = "picky"
    Config = PickyConfig

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        if self.config.steps == 2 and self.config.weighting == "div":
            raise NextclickError("picky: steps=2 with weighting=div is not allowed")
        super()._fit(train, valid)


def test_failed_trials_are_recorded_and_the_study_goes_on(data, tmp_path: Path) -> None:
    space = {"steps": {"choices": [1, 2]}, "weighting": {"choices": ["div"]}}
    res = tune(PickyRules, data, space, n_trials=6, seed=1, out=tmp_path)
    rows = read_trials(tmp_path)
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(rows) == 6 and failed and res.n_failed == len(failed) and res.n_complete == 6 - len(failed)
    assert all(json.loads(r["params"])["steps"] == 2 and "not allowed" in r["error"] and r["value"] == "" for r in failed)
    assert res.best_params["steps"] == 1
    with pytest.raises(NextclickError, match="all 2 trials failed; first error: picky"):
        tune(PickyRules, data, {"steps": {"choices": [2]}, "weighting": {"choices": ["div"]}}, n_trials=2)


def test_resume_from_storage_and_timeout(data, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'study.db'}"
    first = tune("sr", data, SR_SPACE, n_trials=2, storage=db, out=tmp_path)
    second = tune("sr", data, SR_SPACE, n_trials=None, timeout=1e-6, storage=db, out=tmp_path)  # exactly one more
    rows = read_trials(tmp_path)
    assert len(rows) == 3 and second.study.study_name == first.study.study_name
    assert json.loads((tmp_path / BEST_FILE).read_text())["value"] == max(float(r["value"]) for r in rows)
    with pytest.raises(NextclickError, match=r"tunes sr for mrr@20 \(maximize\), not sr for recall@20"):
        tune("sr", data, SR_SPACE, n_trials=1, storage=db, study_name=first.study.study_name, metric="recall@20")


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"nope": {"low": 1, "high": 2}}, "--space nope: unknown parameter of this model; known: steps, weighting"),
        ({"steps": {"low": 5, "high": 2}}, "--space steps: low=5 is greater than high=2"),
        ({"steps": {"low": 1.5, "high": 4}}, "--space steps: the parameter is an integer"),
        ({"weighting": {"low": 1, "high": 2}}, "--space weighting: the parameter is one of div, linear, same"),
        ({"weighting": {"choices": ["div", "cubic"]}}, '--space weighting: choice "cubic" does not fit'),
        ({"pop_tiebreak": {"low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
        ({"steps": {"min": 1}}, "unknown key(s) min"),
        ({"steps": 3}, "--space steps: expected an object"),
        ("{bad json", "invalid JSON at line 1 column 2"),
        ("missing.json", "--space missing.json: no such file"),
        ({}, "at least one parameter"),
    ],
)
def test_bad_space_names_the_argument(space, message: str) -> None:
    with pytest.raises(NextclickError) as e:
        parse_space(space, SequentialRules.Config)
    assert message in str(e.value)


def test_space_types_follow_the_config(tmp_path: Path) -> None:
    from nextclick.models.gru4rec.model import GRU4RecConfig  # the config only; no training

    spec = tmp_path / "space.json"
    spec.write_text(
        json.dumps(
            {
                "learning_rate": {"low": 0.01, "high": 0.3, "log": True},
                "dropout_p_hidden": {"low": 0, "high": 1},  # a float field: [0, 1], not {0, 1}
                "n_sample": {"choices": [512, 1024, 2048]},
                "layers": {"choices": [[100], [100, 100]]},
            }
        )
    )
    space = parse_space(spec, GRU4RecConfig)
    assert [space[n].kind for n in space] == ["float", "float", "choice", "choice"]
    assert space["layers"].values == ((100,), (100, 100))


def test_other_bad_arguments(data) -> None:
    with pytest.raises(NextclickError, match="unknown model 'nope'"):
        tune("nope", data, SR_SPACE)
    with pytest.raises(NextclickError, match="--metric 'hit@20'"):
        tune("sr", data, SR_SPACE, metric="hit@20")
    with pytest.raises(NextclickError, match="--param steps: is also in --space"):
        tune("sr", data, SR_SPACE, fixed={"steps": 3})
    with pytest.raises(NextclickError, match="no preset 'nope'"):
        tune("sr", data, SR_SPACE, preset="nope")
    with pytest.raises(NextclickError, match="--train .*: no such file"):
        load_tuning_data(train="missing.tsv", valid="missing_too.tsv")


def test_cli_tune_on_rsc15_files(shared_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nextclick.cli import app

    for name, n in (("train_tr.tsv", 3000), ("train_valid.tsv", 1000)):  # a slice: a few trials in well under a second
        lines = (shared_data / "rsc15-100k" / name).read_text().splitlines()[: n + 1]
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    space = '{"k": {"low": 20, "high": 300, "log": true}, "decay": {"choices": ["linear", "div", "same"]}}'
    args = ["tune", "vsknn", "--train", str(tmp_path / "train_tr.tsv"), "--valid", str(tmp_path / "train_valid.tsv")]
    args += ["--space", space, "-p", "pop_tiebreak=0.01", "--trials", "3", "--metric", "recall@20", "--out", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "best recall@20=" in r.output
    best = json.loads((out / BEST_FILE).read_text())
    assert best["metric"] == "recall@20" and best["params"]["pop_tiebreak"] == 0.01
    assert best["data"] == {"train": str(tmp_path / "train_tr.tsv"), "valid": str(tmp_path / "train_valid.tsv")}
    assert len(read_trials(out)) == 3


def test_cli_bad_space_exits_2_without_traceback(dataset: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    args = ["tune", "sr", "--data", str(dataset), "--space", '{"steps": {"low": 9, "high": 1}}', "--out", str(tmp_path)]
    p = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, cwd=REPO_ROOT, env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "--space steps: low=9 is greater than high=1" in p.stderr
    assert not list(tmp_path.iterdir())  # nothing was run or written


def test_train_with_the_tuned_parameters(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from nextclick.cli import app

    res = tune("sr", load_tuning_data(dataset), SR_SPACE, preset="transitions", fixed={"pop_tiebreak": 0.01},
               n_trials=3, seed=0, out=tmp_path / "t")

    def train(*extra: str) -> tuple[int, str]:
        r = CliRunner().invoke(app, ["train", *extra, "--train", str(dataset), "--out", str(tmp_path / "m")])
        if isinstance(r.exception, NextclickError):  # the entry point prints it in one line and exits 2
            return 2, str(r.exception)
        return r.exit_code, r.output

    code, out = train("sr", "--tuned", str(tmp_path / "t"), "-p", "steps=3")  # the folder; -p overrides
    assert code == 0, out
    config = json.loads((tmp_path / "m" / "config.json").read_text())["config"]
    assert config == {**config, **res.best_params, "steps": 3}
    code, out = train("sr", "--tuned", str(tmp_path / "t" / BEST_FILE))
    assert code == 0 and json.loads((tmp_path / "m" / "config.json").read_text())["config"]["steps"] == res.best_params["steps"]
    for extra, message in (
        (["vsknn", "--tuned", str(tmp_path / "t")], "tuned for model 'sr', not 'vsknn'"),
        (["sr", "--tuned", str(tmp_path / "nope.json")], "nope.json: no such file"),
        (["sr", "--tuned", str(tmp_path / "t" / TRIALS_FILE)], "not a readable JSON file"),
        (["sr", "--tuned", str(tmp_path / "t"), "--preset", "transitions"], "--preset or --tuned, not both"),
    ):
        code, out = train(*extra)
        assert code == 2 and message in out, out
