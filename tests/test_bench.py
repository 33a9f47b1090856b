"""The conformance suite's logic without training: tolerances, pass/fail, the table, progress, row
selection, the data check and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nextclick import bench
from nextclick.bench import Reference, Row, RowResult
from nextclick.errors import NextclickError
from tests.conftest import REPO_ROOT


def _row(name: str, refs: tuple[Reference, ...], quick: bool = True, dataset: str = "rsc15-100k") -> Row:
    return Row(name, dataset, "pop", None, refs, "a protocol", 7, quick=quick)


def test_default_tolerance_is_two_standard_errors_of_the_test() -> None:
    assert bench.default_tolerance(0.68, 10152) == 0.0093  # 2 * sqrt(.68 * .32 / 10152) = 0.00926, rounded up
    assert bench.default_tolerance(0.741, 30901) == 0.0050
    assert bench.default_tolerance(0.0, 10152) == 0.0
    assert bench.default_tolerance(0.5, 100) == 0.1
    assert bench.default_tolerance(0.5, 400) < bench.default_tolerance(0.5, 100)
    with pytest.raises(ValueError):
        bench.default_tolerance(0.5, 0)


def test_a_reference_is_a_bar_to_reach() -> None:
    ref = Reference("recall@20", 0.5, "paper", "a table", tolerance=0.01)
    assert bench.judge("r", ref, 0.49, 100).passed  # exactly reference - tolerance
    assert bench.judge("r", ref, 0.9, 100).passed  # beating the reference passes
    failed = bench.judge("r", ref, 0.4899, 100)
    assert failed.passed is False and failed.tolerance == 0.01 and failed.reference == 0.5
    derived = bench.judge("r", Reference("recall@20", 0.5, "ours", "recorded"), 0.45, 100)
    assert derived.tolerance == 0.1 and derived.passed  # 2 * sqrt(.25 / 100)
    shown = bench.judge("r", Reference("ndcg@10", None, "ours", "shown only"), 0.0, 100)
    assert shown.passed is None and shown.tolerance is None
    with pytest.raises(ValueError, match="kind"):
        Reference("recall@20", 0.5, "rumour", "somewhere")


def _fake_runner(measured: dict[str, dict[str, float]]) -> Any:
    def run(row: Row, data: dict[str, Any]) -> RowResult:
        assert data == {"dataset": row.dataset}
        checks = [bench.judge(row.name, r, measured[row.name][r.metric], 10152) for r in row.references]
        return RowResult(row, checks, fit_seconds=12.3, eval_seconds=0.5, n_predictions=10152)
    return run


def test_suite_table_progress_and_json_on_fake_rows(tmp_path: Path) -> None:
    good = _row("good", (Reference("recall@20", 0.679, "official", "official code"),
                         Reference("mrr@20", 0.366, "official", "official code")))
    bad = _row("bad", (Reference("sampled_hr@10", 0.741, "paper", "Table III"),
                       Reference("recall@10", None, "ours", "shown beside")))
    measured = {"good": {"recall@20": 0.7036, "mrr@20": 0.3570}, "bad": {"sampled_hr@10": 0.70, "recall@10": 0.06}}
    loads: list[str] = []

    def loader(name: str, folder: Path) -> dict[str, Any]:
        loads.append(name)
        return {"dataset": name}

    (tmp_path / "rsc15-100k").mkdir()
    for f in ("train_full.tsv", "test.tsv"):
        (tmp_path / "rsc15-100k" / f).write_text("")
    said: list[str] = []
    results = bench.run_suite([good, bad], tmp_path, say=said.append, runner=_fake_runner(measured), loader=loader)
    assert loads == ["rsc15-100k"]  # each dataset loaded once
    assert said[0].startswith("bench: 2 rows, expected about 14 s")
    assert any("[1/2] good on rsc15-100k: starting, expected about 7 s" in s for s in said)
    assert any("[2/2] bad: FAIL" in s for s in said)
    assert [r.passed for r in results] == [True, False]

    table = bench.format_markdown(results)
    lines = table.splitlines()
    assert lines[0].startswith("| row | data / protocol | metric | reference (source) | measured | tolerance | pass/fail | fit s |")
    assert "| good | rsc15-100k [1] | Recall@20 (full) | 0.679 (official: official code) | 0.7036 | 0.0093 | pass | 12 |" in lines
    assert "|  | rsc15-100k [1] | MRR@20 (full) | 0.366 (official: official code) | 0.3570 | 0.0096 | pass |  |" in lines
    assert "| bad | rsc15-100k [1] | HR@10 (sampled) | 0.741 (paper: Table III) | 0.7000 | 0.0087 | **FAIL** | 12 |" in lines
    assert "|  | rsc15-100k [1] | Recall@10 (full) | - | 0.0600 | - | - |  |" in lines
    assert "[1] a protocol." in lines
    assert lines[-1] == "2 of 3 checks pass; FAILED: bad sampled_hr@10."

    out = bench.as_json(results, wall_seconds=3.0)
    json.dumps(out)  # plain data
    assert out["passed"] is False and out["wall_seconds"] == 3.0
    assert [c["passed"] for c in out["rows"][1]["checks"]] == [False, None]


def test_row_selection() -> None:
    suite = (_row("a", ()), _row("b", (), quick=False), _row("c", ()))
    assert [r.name for r in bench.select_rows(quick=True, suite=suite)] == ["a", "c"]
    assert [r.name for r in bench.select_rows(names=["c", "b"], suite=suite)] == ["b", "c"]
    with pytest.raises(NextclickError, match="unknown row 'b'; rows of --quick: a, c"):
        bench.select_rows(quick=True, names=["b"], suite=suite)


def test_the_suite_as_defined() -> None:
    names = [r.name for r in bench.SUITE]
    assert len(set(names)) == len(names)
    quick = bench.select_rows(quick=True)
    assert {"pop", "vsknn:tuned_rsc15", "gru4rec:tuned_rsc15"} <= {r.name for r in quick}
    assert sum(r.expected_seconds for r in quick) < 180
    for row in bench.SUITE:
        assert row.dataset in bench.DATASET_FILES and row.references
        # sampled figures only ever beside full-ranking ones, and only with negatives drawn
        if any(m.startswith("sampled_") for m in row.metrics):
            assert row.sampled_negatives > 0
            assert any(not m.startswith("sampled_") for m in row.metrics)
    games = next(r for r in bench.SUITE if r.dataset == "amazon-games")
    assert {"sampled_hr@10": 0.741, "sampled_ndcg@10": 0.536}.items() <= {r.metric: r.value for r in games.references}.items()


def test_every_row_names_a_model_and_preset_that_exist() -> None:
    bench.check_presets(bench.SUITE)
    with pytest.raises(NextclickError, match="row x: model gru4rec has no preset 'nope'"):
        bench.check_presets([Row("x", "rsc15-100k", "gru4rec", "nope", (), "p", 1)])


def test_missing_data_names_the_files_expected_where(tmp_path: Path) -> None:
    with pytest.raises(NextclickError, match=r"dataset rsc15-100k not found: expected train_full.tsv, test.tsv in .*rsc15-100k"):
        bench.check_data(bench.SUITE, tmp_path)
    (tmp_path / "rsc15-100k").mkdir()
    for f in ("train_full.tsv", "test.tsv"):
        (tmp_path / "rsc15-100k" / f).write_text("")
    bench.check_data(bench.select_rows(quick=True), tmp_path)  # the quick rows need rsc15-100k only
    with pytest.raises(NextclickError, match="dataset amazon-games not found: expected sequences.txt"):
        bench.check_data(bench.SUITE, tmp_path)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTCLICK_DATA", "/some/where")
    assert bench.default_data_dir() == Path("/some/where")
    monkeypatch.delenv("NEXTCLICK_DATA")
    assert bench.default_data_dir() == Path("../shared/data")


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "nextclick", "bench", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env=env)


def test_cli_help_and_user_errors(tmp_path: Path) -> None:
    p = _cli("--help")
    assert p.returncode == 0
    for opt in ("--quick", "--rows", "--data-dir", "--out", "--json"):
        assert opt in p.stdout
    p = _cli("--quick", "--data-dir", str(tmp_path))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: bench: dataset rsc15-100k not found: expected train_full.tsv, test.tsv in {tmp_path / 'rsc15-100k'} "
        "(missing train_full.tsv; give --data-dir or set NEXTCLICK_DATA)"]
    p = _cli("--rows", "pop,nope")
    assert p.returncode == 2 and "unknown row 'nope'" in p.stderr and "Traceback" not in p.stderr


def test_the_pop_row_end_to_end_on_rsc15(shared_data: Path) -> None:
    row = next(r for r in bench.SUITE if r.name == "pop")
    res = bench.run_row(row, bench.load_dataset("rsc15-100k", shared_data))
    assert res.n_predictions == 10152 and res.passed
    assert [(c.metric, round(c.measured, 4)) for c in res.checks] == [("recall@20", 0.0894), ("mrr@20", 0.0264)]
