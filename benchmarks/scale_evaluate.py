"""Evaluation at shop scale: seconds per 1,000 exact next-click predictions and peak RSS.

A GRU4Rec-shaped and a SASRec-shaped model (their ``rsc15`` presets: 100-dimensional item
vectors) are built with random weights through their configs (:func:`build`) over a catalogue of ``--items`` items, and
evaluated on random test sessions (2 to 8 clicks) holding about ``--predictions`` next-click
targets: full-catalogue ranking with conservative ties, every prediction exact. ``chunked`` is
:func:`nextclick.evaluate.evaluate`'s default (catalogue chunks of ``--chunk-items`` columns from
the models' query vectors); ``rows`` is whole score rows (``chunk_items=None``), run only at
catalogues where a batch of whole rows fits in memory (``--rows-items``), and its metrics are
compared with the chunked ones of the same model and sessions.

Each configuration runs in a fresh process. Its peak RSS is that of the evaluation (Linux's
VmHWM, reset once the model is built: the resident weights included), beside the RSS before it
and the size of the item matrix; build time is not counted.

    python benchmarks/scale_evaluate.py                       # 1.9M items chunked, 200k both ways
    python benchmarks/scale_evaluate.py --items 1900000 --rows-items 200000 --predictions 1000

``--json PATH`` also writes every configuration's figures (part ``evaluate``), each with the flag of
the last column (``same_as_rows``), as JSON (see ``scale.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def build(kind: str, n_items: int, seed: int = 0):
    """A ``kind`` model (``gru4rec`` or ``sasrec``, preset ``rsc15``) with random weights over
    ``n_items``. GRU4Rec: the GRU weights of its own initialisation, item vectors ~ U(-a, a) with
    its ``a`` drawn in place in float32 (no float64 copy of the catalogue), output bias ~ N(0, 0.01)."""
    import torch

    from nextclick.data.vocab import ItemVocab

    if kind == "gru4rec":
        from nextclick.models.gru4rec.model import GRU4Rec
        from nextclick.models.gru4rec.net import Net, mode

        m = GRU4Rec.from_preset("spec_rsc15")
        D = m.config.layers[-1]
        small = Net.create(m.config, 1, np.random.default_rng(seed))
        m.net_ = Net(n_items, m.config.layers, mode(m.config), m.config.embedding)
        m.net_.dense.copy_(small.dense)
        gen = torch.Generator().manual_seed(seed)
        a = float(np.sqrt(6.0 / (n_items + D)))
        m.net_.out[1:, :D].uniform_(-a, a, generator=gen)
        m.net_.out[1:, D].normal_(0.0, 0.01, generator=gen)
    else:
        from nextclick.models.sasrec.model import SASRec

        m = SASRec.from_preset("tuned_rsc15")
        m.n_items_ = n_items
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m._build()
            m.net_.reset_parameters()
        m.net_.eval()
    m.n_items_ = n_items
    m.vocab_ = ItemVocab(np.arange(1, n_items + 1))
    m.popularity_ = np.random.default_rng(seed + 2).zipf(1.5, n_items + 1).clip(max=10**6).astype(np.float32)
    m.popularity_[0] = 0
    return m


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last :func:`reset_peak`) of this process, MB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start a new peak RSS (``VmHWM``) from the current RSS (Linux: ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def random_sessions(n_items: int, n_predictions: int, seed: int = 3):
    """Random sessions of 2 to 8 clicks holding about ``n_predictions`` targets."""
    from nextclick.data.sessions import Sessions

    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, size=n_predictions)
    lengths = lengths[: int(np.searchsorted(np.cumsum(lengths - 1), n_predictions)) + 1]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Sessions(items=rng.integers(1, n_items + 1, size=int(offsets[-1])), offsets=offsets, n_items=n_items)


def one(kind: str, n_items: int, path: str, n_predictions: int, chunk_items: int) -> dict:
    """Evaluate one configuration in this process; its figures as a dict. The peak RSS is that of
    the evaluation alone (the weights, already resident, included)."""
    from nextclick.evaluate import evaluate

    model = build(kind, n_items)
    test = random_sessions(n_items, n_predictions)
    before = rss_mb("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    res = evaluate(model, test, chunk_items=None if path == "rows" else chunk_items)
    seconds = time.perf_counter() - t0
    m = res.metrics
    return {
        "model": kind, "items": n_items, "path": path, "predictions": m["n_predictions"], "seconds": seconds,
        "per_1000": 1000 * seconds / m["n_predictions"], "rss_before_mb": before, "peak_mb": rss_mb("VmHWM"),
        "items_mb": (n_items + 1) * 100 * 4 / 2**20, "metrics": {k: v for k, v in m.items() if "@" in k},
    }


def same(a: dict, b: dict) -> str:
    """``yes`` for equal metrics; ``yes*`` when only popularity@K differs, in its last digits."""
    if a == b:
        return "yes"
    close = all(a[k] == b[k] or (k.startswith("popularity") and abs(a[k] - b[k]) <= 1e-12 * abs(b[k])) for k in a)
    return "yes*" if close else "NO"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_900_000, help="catalogue of the chunked-only runs")
    ap.add_argument("--rows-items", type=int, default=200_000, help="catalogue of the chunked vs whole-rows runs")
    ap.add_argument("--predictions", type=int, default=1000)
    ap.add_argument("--chunk-items", type=int, default=None, help="default: nextclick.evaluate.CHUNK_ITEMS")
    ap.add_argument("--models", default="gru4rec,sasrec")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "ITEMS", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.chunk_items is None:
        from nextclick.evaluate import CHUNK_ITEMS

        a.chunk_items = CHUNK_ITEMS
    if a.threads is not None:
        import torch

        torch.set_num_threads(a.threads)
    else:
        import torch

        a.threads = torch.get_num_threads()
    if a.one:
        print(json.dumps(one(a.one[0], int(a.one[1]), a.one[2], a.predictions, a.chunk_items)))
        return
    runs = []
    for kind in a.models.split(","):
        for n_items, path in ((a.rows_items, "rows"), (a.rows_items, "chunked"), (a.items, "chunked")):
            cmd = [sys.executable, __file__, "--one", kind, str(n_items), path,
                   "--predictions", str(a.predictions), "--chunk-items", str(a.chunk_items), "--threads", str(a.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(f"  done {kind} {n_items:,} {path}", file=sys.stderr, flush=True)
    rows = {(r["model"], r["items"]): r for r in runs if r["path"] == "rows"}
    report(runs, rows, a)
    if a.json:
        from scale import write_part

        write_part(a.json, "evaluate", {"chunk_items": a.chunk_items, "threads": a.threads, "batch_size": 512,
                                        "rows": [{**r, "same_as_rows": flag(r, rows)} for r in runs]})


def flag(r: dict, rows: dict) -> str:
    """The last column of a run: ``-`` without a whole-rows run of its model and catalogue (or for that run)."""
    ref = rows.get((r["model"], r["items"]))
    return "-" if ref is None or ref is r else same(r["metrics"], ref["metrics"])


def report(runs: list[dict], rows: dict, a: argparse.Namespace) -> None:
    """Print the table; ``rows``: the whole-rows run of each (model, catalogue)."""
    print(f"exact full-catalogue evaluation, conservative ties, chunk_items={a.chunk_items:,}, batch_size=512, "
          f"torch threads {a.threads}")
    print(f"{'model':8} {'items':>10} {'path':8} {'predictions':>11} {'s/1000 pred':>11} {'RSS before MB':>13} "
          f"{'peak RSS MB':>11} {'item matrix MB':>14} {'recall@20':>9}  same metrics as rows")
    for r in runs:
        print(f"{r['model']:8} {r['items']:>10,} {r['path']:8} {r['predictions']:>11,} {r['per_1000']:>11.2f} "
              f"{r['rss_before_mb']:>13,.0f} {r['peak_mb']:>11,.0f} {r['items_mb']:>14,.0f} "
              f"{r['metrics']['recall@20']:>9.4f}  {flag(r, rows)}")
    if any(flag(r, rows) == "yes*" for r in runs):
        print("yes*: popularity@K differs in its last digits only: summed over other batches (SASRec's whole rows "
              "come in batches capped by the size of their score block)")

if __name__ == "__main__":
    main()
