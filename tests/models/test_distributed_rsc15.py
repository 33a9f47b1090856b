"""A short data-parallel fit on real data: two CPU ranks under torchrun (gloo) reach the accuracy
of one process on rsc15-100k, within noise, for SASRec and for GRU4Rec's torch engine.

Each fit runs through the command line, as a user launches it; both are evaluated on the test
split (10,152 next clicks, full ranking). "Within noise": the two Recall@20 and MRR@20 figures
differ by at most two standard errors of a difference of two such means.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models.test_distributed import torchrun

pytest.importorskip("torch")

# SASRec's batch_size is the batch of all ranks together; GRU4Rec's is per rank (half of one
# process's 32 slots each, so a step sees as many sessions as one process's)
RUNS = {
    "sasrec": (["--preset", "tuned_rsc15", "-p", "n_epochs=2", "-p", "progress=false"], []),
    "gru4rec": (["--preset", "tuned_rsc15", "-p", "engine=torch", "-p", "n_epochs=1"], ["-p", "batch_size=16"]),
}


def nextclick(*args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def metrics(model: Path, test: Path) -> dict[str, float]:
    return json.loads(nextclick("evaluate", str(model), "--test", str(test), "--json", "--cutoffs", "20").stdout)


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_reach_one_process_accuracy(name: str, shared_data: Path, tmp_path: Path) -> None:
    data = shared_data / "rsc15-100k"
    common, per_rank = RUNS[name]
    train = ["train", name, "--train", str(data / "train_full.tsv")]
    nextclick(*train, "--out", str(tmp_path / "one"), *common)
    torchrun("-m", "nextclick", *train, "--out", str(tmp_path / "two"), *common, *per_rank, timeout=600)
    one, two = metrics(tmp_path / "one", data / "test.tsv"), metrics(tmp_path / "two", data / "test.tsv")
    n = one["n_predictions"]
    for key in ("recall@20", "mrr@20"):
        se = math.sqrt(one[key] * (1 - one[key]) / n)
        assert abs(two[key] - one[key]) <= 2 * math.sqrt(2) * se, (key, one[key], two[key])
