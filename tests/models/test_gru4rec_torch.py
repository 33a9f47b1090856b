"""GRU4Rec's torch training path (``engine="torch"``): the same steps as the compiled path from
the same start, on the CPU; the same fit; data-parallel steps across two processes (torchrun,
gloo) equal to one process's step; CUDA when there is one.

Run as a script (``--worker DIR``) it is one rank of the data-parallel test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nextclick.errors import NextclickError  # noqa: E402
from nextclick.models.gru4rec.config import GRU4RecConfig, check_config  # noqa: E402
from nextclick.models.gru4rec.model import GRU4Rec  # noqa: E402
from nextclick.models.gru4rec.net import Net  # noqa: E402
from nextclick.models.gru4rec.train import Trainer  # noqa: E402
from nextclick.models.gru4rec.train_torch import TorchTrainer  # noqa: E402

MODES = {
    "constrained": dict(constrained_embedding=True),
    "embedding": dict(constrained_embedding=False, embedding=3),
    "onehot": dict(constrained_embedding=False, embedding=0),
}
N_ITEMS = 12
COUNTS = np.array([0.0] + [float(3 + (i * 7) % 11) for i in range(N_ITEMS)])  # popularity of items 1..12


def _config(loss: str, mode: str, momentum: float, batch_size: int = 4, **kw) -> GRU4RecConfig:
    return GRU4RecConfig(
        layers=(6, 5), loss=loss, batch_size=batch_size, logq=1.0 if loss == "cross-entropy" else 0.0, sample_alpha=0.5,
        bpreg=0.7, elu_param=0.5, learning_rate=0.2, momentum=momentum, **MODES[mode], **kw,
    )


def _start(cfg: GRU4RecConfig) -> Net:
    net = Net.create(cfg, N_ITEMS, np.random.default_rng(0))
    net.dense.add_(torch.randn(net.dense.shape, generator=torch.Generator().manual_seed(1)) * 0.3)  # non-zero biases
    return net


def _batches(n_steps: int, b: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Steps of (inputs, targets, negatives): inputs and negatives repeat items, negatives hit targets."""
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randint(1, N_ITEMS + 1, (b,), generator=g), torch.randint(1, N_ITEMS + 1, (b,), generator=g),
         torch.randint(1, N_ITEMS + 1, (7,), generator=g, dtype=torch.int32))
        for _ in range(n_steps)
    ]


def _weights(net: Net) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in net.arrays().items()}


def _assert_same_weights(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float = 2e-6) -> None:
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=atol, err_msg=k)


# ------------------------------------------------------------------------------ equality with the compiled step
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.4, False), (0.4, True)])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_torch_steps_equal_compiled_steps(loss: str, mode: str, momentum: float, nesterov: bool) -> None:
    cfg = _config(loss, mode, momentum, nesterov=nesterov)
    a, b = _start(cfg), _start(cfg)
    assert b.arrays().keys() == a.arrays().keys()
    compiled, tt = Trainer(a, cfg, COUNTS), TorchTrainer(b, cfg, COUNTS)
    Ha = [torch.randn(4, d, generator=torch.Generator().manual_seed(2)) * 0.5 for d in cfg.layers]
    Hb = [h.clone() for h in Ha]
    with torch.no_grad():
        for x, y, neg in _batches(4, 4):
            la, lb = compiled.step(x, y, neg, Ha), tt.step(x, y, neg, Hb)
            assert lb == pytest.approx(la, rel=1e-5)
            for ha, hb in zip(Ha, Hb):
                np.testing.assert_allclose(hb.numpy(), ha.numpy(), rtol=1e-5, atol=1e-6)
    _assert_same_weights(_weights(b), _weights(a))
    # the optimiser's state too: the accumulators of the item rows a step touched, and no others
    acc_a, acc_b = compiled.opt.acc[id(a.out)], tt.opt.acc[id(b.out)].numpy()
    np.testing.assert_allclose(acc_b, acc_a, rtol=1e-5)
    assert (acc_b[0] == cfg.adagrad_eps).all() and (acc_b[1:] != cfg.adagrad_eps).any()


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_a_step_without_negatives_equals_the_compiled_step(loss: str) -> None:
    cfg = _config(loss, "embedding", 0.3, n_sample=0)
    a, b = _start(cfg), _start(cfg)
    x, y = torch.tensor([1, 5, 7, 5]), torch.tensor([2, 7, 3, 12])
    H = [torch.zeros(4, d) for d in cfg.layers]
    with torch.no_grad():
        la = Trainer(a, cfg, COUNTS).step(x, y, None, [h.clone() for h in H])
        lb = TorchTrainer(b, cfg, COUNTS).step(x, y, None, [h.clone() for h in H])
    assert lb == pytest.approx(la, rel=1e-5)
    _assert_same_weights(_weights(b), _weights(a))


@pytest.mark.parametrize("kw", [dict(loss="cross-entropy", logq=1.0), dict(loss="bpr-max", momentum=0.3, **MODES["embedding"])])
def test_a_torch_fit_equals_the_compiled_fit(chain_data, kw) -> None:
    # the same batches, the same negatives from the same sample store, no dropout: the same epochs
    base = dict(layers=(16,), batch_size=8, n_sample=8, learning_rate=0.1, n_epochs=3, sample_alpha=0.5, seed=1)
    compiled = GRU4Rec(GRU4Rec.Config(**base, **kw)).fit(chain_data.train)
    torch_fit = GRU4Rec(GRU4Rec.Config(**base, **kw, engine="torch")).fit(chain_data.train)
    np.testing.assert_allclose(torch_fit.epoch_losses_, compiled.epoch_losses_, rtol=1e-5)
    # ~150 steps: Adagrad's division by small accumulators lets rounding grow a little
    _assert_same_weights(_weights(torch_fit.net_), _weights(compiled.net_), atol=2e-5)


def test_torch_dropout_drops_p_and_scales_the_rest() -> None:
    cfg = _config("bpr-max", "constrained", 0.0, dropout_p_hidden=0.3)
    tt = TorchTrainer(_start(cfg), cfg, COUNTS)
    h = tt._dropout(torch.ones(400, 50), 0.3)
    kept = torch.unique(h).tolist()
    assert kept[0] == 0.0 and kept[1:] == [pytest.approx(1 / 0.7)]
    assert (h == 0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    # a step's new hidden states are the dropped-out outputs (zeros where dropped), new masks each step
    x, y, neg = _batches(1, 4)[0]
    H1, H2 = [torch.zeros(4, d) for d in cfg.layers], [torch.zeros(4, d) for d in cfg.layers]
    tt.gradients(x, y, neg, H1)
    tt.gradients(x, y, neg, H2)
    assert any((h == 0).any() for h in H1)
    assert any(((a == 0) != (b == 0)).any() for a, b in zip(H1, H2))


def test_engine_and_device_are_checked() -> None:
    with pytest.raises(NextclickError, match="engine"):
        check_config(GRU4RecConfig(engine="jax"))  # type: ignore[arg-type]
    with pytest.raises(NextclickError, match="device"):
        check_config(GRU4RecConfig(device="tpu"))
    with pytest.raises(NextclickError, match="device"):
        check_config(GRU4RecConfig(device="cuda"))  # the compiled engine runs on the CPU only
    check_config(GRU4RecConfig(engine="torch", device="cuda:1"))


def test_the_compiled_engine_refuses_a_torchrun_launch(chain_data, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before joining a group
    with pytest.raises(NextclickError, match="engine='torch' under torchrun"):
        GRU4Rec(GRU4Rec.Config(layers=(8,), n_epochs=1)).fit(chain_data.train)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_device_says_so(chain_data) -> None:
    with pytest.raises(NextclickError, match="no CUDA device"):
        GRU4Rec(GRU4Rec.Config(layers=(8,), n_epochs=1, engine="torch", device="cuda")).fit(chain_data.train)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_cuda_steps_equal_cpu_steps(loss: str) -> None:
    cfg = _config(loss, "constrained", 0.4)
    a, b = _start(cfg), _start(cfg)
    cpu, gpu = TorchTrainer(a, cfg, COUNTS, "cpu"), TorchTrainer(b, cfg, COUNTS, "cuda")
    Ha = [torch.zeros(4, d) for d in cfg.layers]
    Hb = [h.cuda() for h in Ha]
    with torch.no_grad():
        for x, y, neg in _batches(3, 4):
            assert gpu.step(x, y, neg, Hb) == pytest.approx(cpu.step(x, y, neg, Ha), rel=1e-4)
    assert Hb[0].device.type == "cuda"
    gpu.sync()
    _assert_same_weights(_weights(b), _weights(a))


# ------------------------------------------------------------------------------ data-parallel
DP_CASES = [("cross-entropy", "constrained", 0.4), ("bpr-max", "embedding", 0.4), ("cross-entropy", "onehot", 0.0)]
B = 6  # slots of the one-process step; each of two ranks takes B / 2


def _dp_steps(cfg: GRU4RecConfig, slots: slice) -> tuple[list[float], dict[str, np.ndarray]]:
    """Two steps on ``slots`` of the batches (same negatives everywhere); the losses and weights."""
    net = _start(cfg)
    tt = TorchTrainer(net, cfg, COUNTS)
    H = [torch.zeros(slots.stop - slots.start, d) for d in cfg.layers]
    losses = []
    with torch.no_grad():
        for x, y, neg in _batches(2, B):
            losses.append(tt.step(x[slots], y[slots], neg, H))
    return losses, _weights(net)


FIT = dict(layers=(16,), batch_size=4, n_sample=8, learning_rate=0.1, n_epochs=2, momentum=0.3, seed=1, engine="torch")


def _worker(out: Path) -> None:
    from nextclick.models import distributed

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conftest import make_chain_data

    rank, world = distributed.init(torch.device("cpu"))
    half = B // world
    for i, (loss, mode, momentum) in enumerate(DP_CASES):
        losses, w = _dp_steps(_config(loss, mode, momentum, batch_size=half), slice(rank * half, (rank + 1) * half))
        np.savez(out / f"case{i}_rank{rank}.npz", losses=np.array(losses), **w)
    model = GRU4Rec(GRU4Rec.Config(**FIT)).fit(make_chain_data().train)  # its own shard of the sessions
    np.savez(out / f"fit_rank{rank}.npz", losses=np.array(model.epoch_losses_), **_weights(model.net_))
    # a time budget that runs out on rank 0 only: both ranks must stop at the same step
    budget = dict(FIT, batch_size=1, n_epochs=3, time_budget=1e-9 if rank == 0 else 1e9)
    model = GRU4Rec(GRU4Rec.Config(**budget)).fit(make_chain_data().train)
    late = model.training_.get("out_of_time", {})
    np.savez(out / f"budget_rank{rank}.npz", epochs=np.array([len(model.epoch_losses_)]),
             late_epoch=np.array([late.get("epoch", 0)]), **_weights(model.net_))
    distributed.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard_steps(train, world: int) -> list[int]:
    """Session-parallel steps of each rank's shard in a data-parallel fit with ``FIT``'s batch size."""
    from nextclick.data.batching import SessionParallelBatches
    from nextclick.models import distributed
    from nextclick.models.gru4rec.fit import EpochPlan

    if train.times is not None:
        train = train.select(np.argsort(train.times[train.offsets[:-1]], kind="stable"))
    shards = [train.select(distributed.shard(np.arange(train.n_sessions), r, world)) for r in range(world)]
    return [len(EpochPlan.build(SessionParallelBatches(t, FIT["batch_size"], order="given")).size) for t in shards]


def test_two_ranks_step_as_one_process_with_both_batches(tmp_path: Path, chain_data) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), __file__, "--worker", str(tmp_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for i, (loss, mode, momentum) in enumerate(DP_CASES):
        want_losses, want = _dp_steps(_config(loss, mode, momentum, batch_size=B), slice(0, B))
        ranks = [dict(np.load(tmp_path / f"case{i}_rank{r}.npz", allow_pickle=False)) for r in range(2)]
        for got in ranks:  # every rank holds the same weights, those of the one-process step
            np.testing.assert_allclose(got.pop("losses"), want_losses, rtol=1e-5)
            _assert_same_weights(got, want)
        # which a rank alone on its half would not reach
        _, alone = _dp_steps(_config(loss, mode, momentum, batch_size=B // 2), slice(0, B // 2))
        assert not np.allclose(alone["item_out"], want["item_out"], rtol=2e-5, atol=2e-6)
    # a two-rank fit: shards of unequal step counts (the shorter one takes part in empty steps),
    # both ranks end with the same weights, and the fit learns
    fits = [dict(np.load(tmp_path / f"fit_rank{r}.npz", allow_pickle=False)) for r in range(2)]
    steps = _shard_steps(chain_data.train, 2)
    assert steps[0] != steps[1], steps
    for f in fits:
        losses = f.pop("losses")
        assert losses[-1] < losses[0]
    assert fits[0].keys() == fits[1].keys()
    for k in fits[0]:  # the same gathered gradients in the same order: bit for bit
        np.testing.assert_array_equal(fits[1][k], fits[0][k], err_msg=k)
    # the budget ran out on rank 0 alone, and both ranks stopped in the first epoch with the same weights
    budgets = [dict(np.load(tmp_path / f"budget_rank{r}.npz", allow_pickle=False)) for r in range(2)]
    for b in budgets:
        assert b.pop("epochs")[0] == 1 and b.pop("late_epoch")[0] == 1
    for k in budgets[0]:
        np.testing.assert_array_equal(budgets[1][k], budgets[0][k], err_msg=k)


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
