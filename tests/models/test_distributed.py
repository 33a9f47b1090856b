"""Data-parallel training under torchrun (two CPU processes, gloo) against one process.

The module doubles as the ranks' script: ``python -m torch.distributed.run --nproc-per-node 2
tests/models/test_distributed.py OUT`` trains the configurations of ``CASES`` on every rank and
each rank writes its weights to ``OUT/<case>.rank<r>.safetensors``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError

N_ITEMS, B = 40, 32
BASE = dict(max_len=8, hidden=16, n_blocks=1, n_heads=2, dropout=0.0, batch_size=B, progress=False, n_threads=1,
            seed=3, lr=0.01)
CASES: dict[str, dict] = {
    # one synchronous step: per-rank batch B/2 against one process's batch B
    "ce_one_step": dict(BASE, loss="ce", n_epochs=1),
    "sampled_ce_one_step": dict(BASE, loss="sampled_ce", n_negatives=16, n_epochs=1),
    # two epochs of two steps each, odd batch (ranks of 17 and 16 rows), the item table's L2
    "sampled_ce_two_epochs": dict(BASE, loss="sampled_ce", n_negatives=16, n_epochs=2, batch_size=33, l2=0.01),
    # the same with Adam on the rows each batch reads (sparse gradients gathered across ranks)
    "sparse_adam_two_epochs": dict(BASE, loss="sampled_ce", n_negatives=16, n_epochs=2, batch_size=33,
                                   item_optimizer="sparse_adam"),
}
AGREE = dict(BASE, loss="bce", dropout=0.3, n_epochs=4, eval_every=1, patience=1)  # ranks differ in draws


def sessions(n: int, seed: int = 0) -> Sessions:
    """``n`` sessions of 2..11 clicks walking the items in steps of 3 from random starts."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start, length = int(rng.integers(0, N_ITEMS)), int(rng.integers(2, 12))
        out.append([(start + 3 * j) % N_ITEMS + 1 for j in range(length)])
    return Sessions.from_lists(out, n_items=N_ITEMS)


def train_data(case: str) -> Sessions:
    """Exactly one batch per epoch for the one-step cases, two batches otherwise."""
    return sessions(B if case.endswith("one_step") else 61)


def _state(m) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v) for k, v in m._state().items()}


def worker(out: Path) -> None:
    from nextclick.models import distributed
    from nextclick.models.sasrec.model import SASRec

    rank = int(os.environ["RANK"])
    for case, cfg in CASES.items():
        save_file(_state(SASRec(**cfg).fit(train_data(case))), str(out / f"{case}.rank{rank}.safetensors"))
    m = SASRec(**AGREE).fit(sessions(61), sessions(20, seed=1))
    save_file(_state(m), str(out / f"agree.rank{rank}.safetensors"))
    (out / f"agree.rank{rank}.txt").write_text(f"{m.best_epoch_} {len(m.history_)} {m.history_[0]['loss']!r}")
    from nextclick.cli import main  # `nextclick train` as torchrun runs it on every rank

    sys.argv = ["nextclick", "train", "sasrec", "--train", str(out / "clicks.tsv"), "--out", str(out / "m"),
                "-p", "n_epochs=2", "-p", "hidden=16", "-p", "max_len=8", "-p", "progress=false"]
    try:
        main()
    except SystemExit as e:
        if e.code:
            raise
    distributed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, cwd: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    """Two CPU ranks on this machine through torchrun (gloo), on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def write_clicks(path: Path, s: Sessions) -> None:
    """``s`` as a SessionId / ItemId / Time file, shop ids = index + 1000."""
    sid = np.repeat(np.arange(s.n_sessions), s.lengths)
    rows = [f"{a}\t{1000 + b}\t{t}" for t, (a, b) in enumerate(zip(sid.tolist(), s.items.tolist()))]
    path.write_text("SessionId\tItemId\tTime\n" + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def launch(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ranks")
    write_clicks(out / "clicks.tsv", sessions(61))
    return out, torchrun(__file__, str(out))


@pytest.fixture(scope="module")
def ranks_out(launch: tuple[Path, subprocess.CompletedProcess]) -> Path:
    return launch[0]


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process(ranks_out: Path, case: str) -> None:
    from nextclick.models.sasrec.model import SASRec

    one = _state(SASRec(**CASES[case]).fit(train_data(case)))
    r0 = load_file(str(ranks_out / f"{case}.rank0.safetensors"))
    r1 = load_file(str(ranks_out / f"{case}.rank1.safetensors"))
    start = _state(SASRec(**dict(CASES[case], n_epochs=0)).fit(train_data(case)))
    assert one.keys() == r0.keys()
    d = BASE["hidden"]
    for k in one:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)  # the ranks agree exactly
        # the key half of kv.bias adds the same score to every key of a query: its gradient is
        # zero but for float noise, which Adam's first steps scale up to about lr; the rest agrees
        a, b = (r0[k][d:], one[k][d:]) if k.endswith("kv.bias") else (r0[k], one[k])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=k)
    # the step moved the weights by far more than the tolerance (the comparison is not vacuous)
    assert np.abs(one["item_emb.weight"] - start["item_emb.weight"]).max() > 1e-3


def test_ranks_keep_the_same_weights_and_stop_together(ranks_out: Path) -> None:
    # bce with dropout: each rank draws its own negatives and masks, rank 0 alone validates
    r0 = load_file(str(ranks_out / "agree.rank0.safetensors"))
    r1 = load_file(str(ranks_out / "agree.rank1.safetensors"))
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
    assert (ranks_out / "agree.rank0.txt").read_text() == (ranks_out / "agree.rank1.txt").read_text()


def test_cli_trains_on_two_ranks_and_rank0_writes(launch: tuple[Path, subprocess.CompletedProcess]) -> None:
    from nextclick.models.base import Recommender

    out, res = launch
    assert res.stdout.count("trained sasrec") == 1 and "items (2 ranks)" in res.stderr  # rank 0 alone prints
    items, scores = Recommender.load(out / "m").recommend([1001, 1004], k=5)
    assert len(items) == 5 and np.all(np.diff(scores) <= 0)


def test_cli_refuses_a_model_without_data_parallel_training(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from nextclick.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    res = CliRunner().invoke(app, ["train", "pop", "--train", str(tmp_path / "x.tsv"), "--out", str(tmp_path / "m")])
    assert isinstance(res.exception, NextclickError) and "does not train data-parallel" in str(res.exception)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
