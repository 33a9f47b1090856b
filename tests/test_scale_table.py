"""benchmarks/scale.py's table from the parts' JSON files (small fake files, nothing run)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scale_bench", REPO_ROOT / "benchmarks" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, part: str, figures: dict[str, Any]) -> None:
    doc = {"part": part, "commit": "abc1234", "date": "2000-01-01T00:00:00+00:00", "command": f"python benchmarks/{part}.py",
           **figures}
    (folder / f"{part}.json").write_text(json.dumps(doc))


def _memory(process: str) -> dict[str, Any]:
    m = {"VmRSS": 1000.0, "RssAnon": 200.0, "RssFile": 800.0, "Pss": 600.0, "VmHWM": 1100.0}
    return {"process": process, "idle": m, "after_load": m}


def _load(connections: int, rps: float, p90: float, p99: float, model_ms: float) -> dict[str, Any]:
    return {"connections": connections, "rps": rps, "p50": 1.0, "p90": p90, "p99": p99, "requests": 100, "errors": 0,
            "server_ms": 2.0, "mean_batch": 1.0, "model_ms_per_click": model_ms, "cores": [0.5, 0.9]}


def test_met_missed_and_not_run_rows(scale: ModuleType, tmp_path: Path) -> None:
    run = {"sessions": 10, "items": 20}
    _write(tmp_path, "prepare", {"sessionize": False, "slice_parts": 6, "rows": [
        {"run": "whole", "kind": "full", "clicks": 216_000_000, **run, "seconds": 481.0, "peak_rss_mb": 13_000.0},
        {"run": "slice", "kind": "slice", "clicks": 25_000_000, **run, "seconds": 51.4, "peak_rss_mb": 1500.0},
        {"run": "pandas", "kind": "pandas", "clicks": 25_000_000, **run, "seconds": 53.9, "peak_rss_mb": 3600.0},
    ]})
    _write(tmp_path, "serve", {
        "model_dir": "m", "model": "gru4rec", "items": 1_855_603, "duration_s": 10, "ready_s": 35.0,
        "memory": [_memory("event loop"), _memory("model process")],
        "load": [_load(1, 247.0, 4.89, 6.76, 3.33), _load(6, 403.0, 15.47, 16.82, 2.45)],
        "in_process": {"step_ms": 0.13, "topk_ms": 2.19, "store_ms": 0.01},
    })
    rows = {r.measure: r for r in scale.table_rows(tmp_path)}
    wall = rows["prepare, whole log (216,000,000 clicks): wall time"]
    assert (wall.figure, wall.bar, wall.met) == ("481 s", "< 600 s", "met")
    assert wall.when == "abc1234, 2000-01-01T00:00:00+00:00" and wall.command == "`python benchmarks/prepare.py`"
    assert rows["prepare, whole log (216,000,000 clicks): peak RSS"].met == "missed by 1.14x"  # 13.63 GB against 12
    assert rows["prepare, slice of 25,000,000 clicks: the same steps in pandas"].met == ""

    at = "service at 1,855,603 items"
    assert rows[f"{at}: requests/s sustained (best of 2 connection counts)"].met == "missed by 2.48x"  # 1000 / 403
    assert rows[f"{at}: p90 latency, 1 connection"].met == "met"
    assert rows[f"{at}: p90 latency, 6 connections"].met == "missed by 8.47 ms"
    assert rows[f"{at}: p99 latency, 6 connections"].met == "met"
    assert rows[f"{at}: errors, all runs"].met == "met"
    assert rows[f"{at}: model's share of a lone click (model ms per click, 1 connection)"].met == "missed by 1.63 ms"
    assert rows[f"{at}: ready after start"].figure == "35.0 s"
    # a missed bar says where the time goes; a met one does not
    assert "top-k" in rows[f"{at}: model's share of a lone click (model ms per click, 1 connection)"].where
    assert "cores busy" in rows[f"{at}: requests/s sustained (best of 2 connection counts)"].where
    assert rows[f"{at}: p90 latency, 1 connection"].where == ""

    for measure in ("training at 1.9M items: SASRec, 1 and 2 processes", "evaluation at 1.9M items",
                    "accuracy on a ~10M-click slice: GRU4Rec, V-SKNN, popularity"):
        assert rows[measure].figure == "not run" and rows[measure].when == ""

    text = scale.table(tmp_path)
    assert text.count("| measure | figure | bar | met? | where the time goes (missed bars) | commit, date | command |") == 1
    assert len(text.splitlines()) == len(rows) + 2


def test_a_missing_part_with_a_bar_says_not_run(scale: ModuleType, tmp_path: Path) -> None:
    rows = scale.table_rows(tmp_path)
    assert {r.figure for r in rows} == {"not run"}
    assert [r.met for r in rows if r.bar] == ["not run"] * sum(1 for r in rows if r.bar)
    assert any(r.bar == "< 20 ms" for r in rows)
