"""SASRec training at shop scale: throughput and peak memory with a 1.9M-item catalogue.

Sessions come from the synthetic shop (:func:`nextclick.data.synthetic.generate_shop`) with OTTO's
catalogue size and ``steps x batch_size`` sessions, so one epoch is a bounded number of steps;
every item of the catalogue has a row in the model (and can be drawn as a negative), seen or not.
Each configuration runs in fresh processes: one process, or ``torchrun`` ranks on this machine
(gloo; ``batch_size`` is the batch of all ranks together). The table reports positions trained
(next-click targets) per second of the epoch, the peak RSS of each rank, and the size of the item
table with Adam's two moments and, for ``item_optimizer=adam``, its dense gradient (the floor
the memory is bounded by; ``sparse_adam`` updates only the rows a batch reads).

    python benchmarks/scale_train.py                                # 1 and 2 processes, sampled_ce
    python benchmarks/scale_train.py --ranks 1 --steps 50 --n-negatives 2048

With ``--rsc15 DIR`` (a folder holding rsc15-100k's ``train_full.tsv`` and ``test.tsv``) it checks
accuracy instead: ``nextclick train sasrec --preset tuned_rsc15`` for ``--epochs`` epochs in one process
and in two ranks (torchrun), for each of ``--seeds``, then ``nextclick evaluate`` on the test split;
the spread over seeds in one process is the noise the two-rank figures are read against.

    python benchmarks/scale_train.py --rsc15 ../shared/data/rsc15-100k --epochs 8 --seeds 0,1

``--json PATH`` also writes the table's rows (part ``train_sasrec``; ``mode`` ``throughput`` or
``rsc15``) as JSON (see ``scale.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def shop_sessions(n_items: int, n_sessions: int, seed: int):
    """The synthetic shop's sessions (sorted clicks) over its whole catalogue of ``n_items``."""
    import polars as pl

    from nextclick.data.sessions import Sessions
    from nextclick.data.synthetic import generate_shop

    shop = generate_shop(n_items=n_items, n_sessions=n_sessions, n_categories=64, seed=seed)
    ids = shop.items.get_column("ItemId").to_numpy()  # sorted
    clicks = shop.clicks.sort(["SessionId", "Time"], maintain_order=True)
    items = np.searchsorted(ids, clicks.get_column("ItemId").to_numpy()) + 1
    counts = clicks.group_by("SessionId", maintain_order=True).agg(pl.len()).get_column("len").to_numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Sessions(items=items, offsets=offsets, n_items=ids.size)


def rss_gb() -> float:
    """Peak RSS of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def worker(a: argparse.Namespace) -> None:
    """Train one epoch of ``steps`` batches in this process (one rank) and write its figures."""
    import torch

    from nextclick.models import distributed
    from nextclick.models.sasrec.model import SASRec

    rank = int(os.environ.get("RANK", "0"))
    t0 = time.perf_counter()
    train = shop_sessions(a.n_items, a.steps * a.batch_size, a.seed)
    data_s, rss_data = time.perf_counter() - t0, rss_gb()
    cfg = dict(loss=a.loss, n_negatives=a.n_negatives, hidden=a.hidden, max_len=a.max_len, batch_size=a.batch_size,
               n_epochs=1, dropout=0.2, progress=False, n_threads=a.threads, seed=a.seed,
               item_optimizer=a.item_optimizer, in_batch_negatives=a.in_batch)
    m = SASRec(**cfg).fit(train)
    V, D = train.n_items + 1, a.hidden
    rec = dict(rank=rank, n_items=train.n_items, sessions=train.n_sessions,
               positions=int(np.minimum(train.lengths - 1, a.max_len).clip(0).sum()),
               epoch_s=m.history_[0]["epoch_seconds"], fit_s=m.fit_seconds_, data_s=data_s,
               rss_data_gb=rss_data, rss_peak_gb=rss_gb(),
               table_gb=(3 if a.item_optimizer == "sparse_adam" else 4) * V * D * 4 / 1e9,
               threads=torch.get_num_threads())
    Path(a.worker, f"rank{rank}.json").write_text(json.dumps(rec))
    distributed.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(a: argparse.Namespace, ranks: int, out: Path) -> list[dict]:
    """Run :func:`worker` in ``ranks`` fresh processes (torchrun for more than one)."""
    skip = ("worker", "ranks", "item_optimizers", "rsc15", "epochs", "seeds", "in_batch", "json")
    args = [__file__, "--worker", str(out), *(["--in-batch"] if a.in_batch else [])]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in skip]
    if ranks == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", f"--nproc-per-node={ranks}",
               "--master-addr", "127.0.0.1", f"--master-port={free_port()}", *args]
    subprocess.run(cmd, check=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


def accuracy(a: argparse.Namespace) -> list[dict]:
    """Test Recall@20 / MRR@20 of SASRec (rsc15 preset) fitted in one process and in two ranks; the rows printed."""
    data = Path(a.rsc15)
    rows = []
    print(f"SASRec --preset tuned_rsc15, {a.epochs} epochs, train_full -> test of {data}")
    print("| processes | seed | Recall@20 | MRR@20 | fit s |")
    print("|---|---|---|---|---|")
    for ranks in (int(r) for r in a.ranks.split(",")):
        for seed in a.seeds.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                train = ["-m", "nextclick", "train", "sasrec", "--train", str(data / "train_full.tsv"), "--out",
                         f"{tmp}/m", "--preset", "tuned_rsc15", "-p", f"n_epochs={a.epochs}", "-p", f"seed={seed}",
                         "-p", "progress=false"]
                if ranks > 1:
                    train = ["-m", "torch.distributed.run", "--nnodes", "1", f"--nproc-per-node={ranks}",
                             "--master-addr", "127.0.0.1", f"--master-port={free_port()}", *train]
                subprocess.run([sys.executable, *train], check=True, capture_output=True)
                cfg = json.loads(Path(tmp, "m", "config.json").read_text())
                res = subprocess.run([sys.executable, "-m", "nextclick", "evaluate", f"{tmp}/m", "--test",
                                      str(data / "test.tsv"), "--json"], check=True, capture_output=True, text=True)
            r = json.loads(res.stdout)
            print(f"| {ranks} | {seed} | {r['recall@20']:.4f} | {r['mrr@20']:.4f} | {cfg['fit_seconds']:.0f} |",
                  flush=True)
            rows.append({"processes": ranks, "seed": int(seed), "recall@20": r["recall@20"], "mrr@20": r["mrr@20"],
                         "fit_s": cfg["fit_seconds"]})
    return rows


def throughput(a: argparse.Namespace) -> list[dict]:
    """Positions per second and peak RSS per rank of every item optimizer and process count; the rows printed."""
    print(f"SASRec {a.loss} ({a.n_negatives} negatives{' + in-batch' if a.in_batch else ''}), d={a.hidden}, T={a.max_len}, batch {a.batch_size} "
          f"(all ranks), {a.steps} steps, {a.threads} thread(s) per process")
    print("| item optimizer | processes | items | positions | epoch s | positions/s | peak RSS per rank (GB) "
          "| item table + moments (+ dense grad) (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for opt in a.item_optimizers.split(","):
        a.item_optimizer = opt
        for ranks in (int(r) for r in a.ranks.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                recs = launch(a, ranks, Path(tmp))
            secs = max(r["epoch_s"] for r in recs)
            pos = recs[0]["positions"]
            rss = " / ".join(f"{r['rss_peak_gb']:.2f}" for r in recs)
            print(f"| {opt} | {ranks} | {recs[0]['n_items']:,} | {pos:,} | {secs:.1f} | {pos / secs:,.0f} | {rss} | "
                  f"{recs[0]['table_gb']:.2f} |", flush=True)
            rows.append({"item_optimizer": opt, "processes": ranks, "items": recs[0]["n_items"], "positions": pos,
                         "epoch_s": secs, "positions_per_s": pos / secs,
                         "peak_rss_gb_per_rank": [r["rss_peak_gb"] for r in recs], "table_gb": recs[0]["table_gb"]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2", help="comma-separated process counts")
    p.add_argument("--n-items", type=int, default=1_900_000)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--loss", default="sampled_ce", choices=["sampled_ce", "gbce", "bce"])
    p.add_argument("--n-negatives", type=int, default=1024)
    p.add_argument("--in-batch", action="store_true", help="sampled_ce: in-batch negatives too")
    p.add_argument("--hidden", type=int, default=50)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--item-optimizers", default="adam,sparse_adam", help="comma-separated item_optimizer values")
    p.add_argument("--item-optimizer", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rsc15", help="rsc15-100k folder: compare test accuracy of 1 and 2 processes instead")
    p.add_argument("--epochs", type=int, default=8, help="--rsc15: epochs per fit")
    p.add_argument("--seeds", default="0,1", help="--rsc15: comma-separated seeds")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    a = p.parse_args()
    if a.worker:
        return worker(a)
    if a.rsc15:
        mode, rows = "rsc15", accuracy(a)
        settings = {"rsc15": a.rsc15, "epochs": a.epochs, "preset": "tuned_rsc15"}
    else:
        mode, rows = "throughput", throughput(a)
        settings = {"loss": a.loss, "n_negatives": a.n_negatives, "in_batch": a.in_batch, "hidden": a.hidden,
                    "max_len": a.max_len, "batch_size": a.batch_size, "steps": a.steps, "threads": a.threads}
    if a.json:
        from scale import write_part

        write_part(a.json, "train_sasrec", {"mode": mode, **settings, "rows": rows})

if __name__ == "__main__":
    main()
