"""Benchmark: accuracy at OTTO's catalogue size after a bounded training budget, on a slice of
about ten million clicks of the full-size synthetic log, beside V-SKNN and popularity.

The slice is the first Parquet parts of ``nextclick generate --size otto`` up to ``--clicks``
clicks (each part holds sessions from the whole period). It is prepared as ``nextclick
prepare`` does by default (repeats dropped, 5 / 2 support filter, the leak-free last-day split),
and every model works over the whole catalogue of ``items.parquet`` (about 1.9M items), not only
the items of the slice. Models:

* ``pop``: training popularity;
* ``vsknn``: V-SKNN, ``tuned_rsc15`` with the ``--knn-sample`` most recent sessions per item;
* ``gru4rec``: ``official_rsc15``, one epoch on the most recent training sessions that fit the
  budget (``--budget`` seconds at ``--rate`` clicks per second, a rate measured on this machine),
  with ``time_budget`` = ``--budget``: training stops when the budget runs out.

Each is evaluated on the same random subset of test sessions (``--max-sessions``; a subset of
sessions, ranked against the full catalogue with conservative ties, not sampled negatives).

    python benchmarks/scale_accuracy.py [--data runs/scale/otto] [--clicks 10000000] [--budget 600] [--max-sessions 500] [--json PATH]

``--json PATH`` also writes the slice's counts and the table's rows (part ``accuracy``) as JSON
(see ``scale.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def load_slice(data: Path, clicks: int):
    import polars as pl

    frames, n = [], 0
    for part in sorted((data / "clicks").glob("*.parquet")):
        frames.append(pl.read_parquet(part, columns=["SessionId", "ItemId", "Time"]))
        n += frames[-1].height
        if n >= clicks:
            break
    return pl.concat(frames), len(frames)


def write_json(path: str, a: argparse.Namespace, slice_: dict, rows: list[tuple], res) -> None:
    """The slice's counts and the printed rows (``res``: the last evaluation, for its subset of test sessions)."""
    from scale import write_part

    sub = res.subset or {}
    slice_ = {**slice_, "evaluated_sessions": sub.get("n_sessions", slice_["test_sessions"])}
    keys = ("model", "trained_on", "fit_s", "recall@20", "mrr@20", "predictions", "eval_s")
    write_part(path, "accuracy", {"budget_s": a.budget, "rate": a.rate, "knn_sample": a.knn_sample,
                                  "max_sessions": a.max_sessions, "slice": slice_,
                                  "rows": [dict(zip(keys, r)) for r in rows]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="runs/scale/otto")
    ap.add_argument("--clicks", type=int, default=10_000_000)
    ap.add_argument("--budget", type=float, default=600.0, help="GRU4Rec's training budget in seconds")
    ap.add_argument("--rate", type=float, default=11500.0, help="GRU4Rec's training clicks per second at this size")
    ap.add_argument("--knn-sample", type=int, default=500)
    ap.add_argument("--max-sessions", type=int, default=500)
    ap.add_argument("--models", default="pop,vsknn,gru4rec", help="comma-separated subset to run")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    a = ap.parse_args()

    import polars as pl

    from nextclick.data.dataset import encode_clicks
    from nextclick.data.preprocess import PrepareOptions, prepare
    from nextclick.data.vocab import ItemVocab
    from nextclick.evaluate import evaluate
    from nextclick.models import create_model

    data = Path(a.data)
    t0 = time.perf_counter()
    df, n_parts = load_slice(data, a.clicks)
    n_clicks = df.height
    ds = prepare(df, Path(tempfile.mkdtemp()) / "slice", PrepareOptions())
    del df
    vocab = ItemVocab.fit(pl.read_parquet(data / "items.parquet", columns=["ItemId"])["ItemId"].to_numpy())
    train, _ = encode_clicks(ds.frame("train"), vocab)
    test, _ = encode_clicks(ds.frame("test"), vocab)
    print(f"slice: {n_parts} parts; train {train.n_events:,} clicks / {train.n_sessions:,} sessions, test "
          f"{test.n_events:,} clicks / {test.n_sessions:,} sessions; catalogue {vocab.n_items:,} items; "
          f"prepared in {time.perf_counter() - t0:.0f} s", flush=True)

    want = int(a.budget * a.rate)  # the most recent sessions (by first click) that fit the budget
    newest_first = np.argsort(-train.times[train.offsets[:-1]], kind="stable")
    cum = np.cumsum(train.lengths[newest_first])
    n_recent = int(np.searchsorted(cum, want) + 1) if cum.size and cum[-1] > want else train.n_sessions
    recent = train.select(np.sort(newest_first[:n_recent]))
    runs = [
        ("pop", create_model("pop"), train, "the whole train split"),
        ("vsknn", create_model("vsknn", "tuned_rsc15", sample_size=a.knn_sample), train, "the whole train split"),
        ("gru4rec", create_model("gru4rec", "official_rsc15", n_epochs=1, n_threads=1, time_budget=a.budget), recent,
         f"one epoch on the last {recent.n_sessions:,} sessions ({recent.n_events:,} clicks)"),
    ]
    rows = []
    for name, model, tr, what in [r for r in runs if r[0] in a.models.split(",")]:
        t1 = time.perf_counter()
        model.fit(tr)
        fit_s = time.perf_counter() - t1
        late = getattr(model, "training_", {}).get("out_of_time")
        if late:
            what += f", stopped by the budget after {late['events']:,} clicks"
        t2 = time.perf_counter()
        res = evaluate(model, test, cutoffs=(20,), max_sessions=a.max_sessions, seed=0)
        m = res.metrics
        rows.append((name, what, fit_s, m["recall@20"], m["mrr@20"], m["n_predictions"], time.perf_counter() - t2))
        print(f"{name}: fit {fit_s:.0f} s, Recall@20 {m['recall@20']:.4f}, MRR@20 {m['mrr@20']:.4f}, "
              f"{m['n_predictions']:,} predictions in {rows[-1][-1]:.0f} s", flush=True)
    sub = res.subset or {}
    print(f"\nfull ranking over {vocab.n_items:,} items, conservative ties; {sub.get('n_sessions', test.n_sessions):,} "
          f"random test sessions of {sub.get('of_sessions', test.n_sessions):,} (seed 0), the same for every model")
    print("| model | trained on | fit s | Recall@20 | MRR@20 | predictions | eval s |")
    print("|---|---|---|---|---|---|---|")
    for name, what, fit_s, r, mrr, n, ev in rows:
        print(f"| {name} | {what} | {fit_s:.0f} | {r:.4f} | {mrr:.4f} | {n:,} | {ev:.0f} |")
    if a.json:
        write_json(a.json, a, {"parts": n_parts, "clicks": n_clicks, "train_clicks": train.n_events,
                               "train_sessions": train.n_sessions, "test_clicks": test.n_events,
                               "test_sessions": test.n_sessions, "items": vocab.n_items}, rows, res)


if __name__ == "__main__":
    main()
