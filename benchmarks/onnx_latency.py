"""Latency of the exported ONNX graphs in onnxruntime against nextclick's own serving path, in one
process, one thread each, the two taking turns call by call.

Per model and batch size (1: a lone click; 64: a batch of sessions), one call is:

* ours: ``live.advance`` (GRU4Rec: the click's GRU step) + ``live.queries`` + the exact top-k of
  :class:`nextclick.ranking.bounded.TopK` (``--scoring``, default exact) -- what the service's model
  process does per batch, minus the session store;
* onnx: ``step.onnx`` (GRU4Rec) or ``query.onnx`` on the left-padded last T clicks (SASRec) in
  onnxruntime, then ``q @ W.T + b`` and a numpy partial-sort top-k -- what a user of the export does;

and each path's query alone (the network's part: ours ``advance`` + ``queries``, onnx the graph).

The sessions are real: test sessions of rsc15-100k, each timed at one of its clicks. Both paths
must return the same top-k items (mismatches, near-ties at float32 tolerance, are counted).

    python benchmarks/onnx_latency.py                          # trains small models on rsc15-100k
    python benchmarks/onnx_latency.py --gru4rec DIR --sasrec DIR --calls 500
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nextclick.data.batching import pad_arrays  # noqa: E402
from nextclick.data.dataset import load_sessions  # noqa: E402
from nextclick.models import create_model  # noqa: E402
from nextclick.models.base import Recommender  # noqa: E402
from nextclick.models.export import export_onnx  # noqa: E402
from nextclick.ranking.bounded import TopK  # noqa: E402
from nextclick.ranking.exact import top_k_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "rsc15-100k"


def train_small(name: str) -> Recommender:
    """A small model on rsc15-100k train_full.tsv: two epochs (latency does not depend on accuracy)."""
    tr, _ = load_sessions(DATA / "train_full.tsv", "train")
    params = {"gru4rec": dict(preset="official_rsc15", n_epochs=2),
              "sasrec": dict(preset="tuned_rsc15", n_epochs=2, max_len=20, patience=0, progress=False, valid_negatives=0)}[name]
    t = time.perf_counter()
    model = create_model(name, **params).fit(tr)
    print(f"trained {name} on {tr.n_events:,} clicks in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return model


def cases(model: Recommender, batch: int, calls: int, rng: np.random.Generator) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """``calls`` batches of ``batch`` (clicks so far, new click) from rsc15-100k's test sessions."""
    te, _ = load_sessions(DATA / "test.tsv", "test", vocab=model.vocab_)
    lists = [np.asarray(s, np.int64) for s in te.to_lists() if len(s) >= 1]
    out = []
    for _ in range(calls):
        pick = rng.integers(0, len(lists), size=batch)
        ends = [int(rng.integers(1, lists[i].size + 1)) for i in pick]
        clicks = [lists[i][:e] for i, e in zip(pick, ends)]
        out.append((np.array([c[-1] for c in clicks]), clicks))
    return out



def paths(model: Recommender, out: Path, k: int, scoring: str, ort) -> dict[str, Callable]:  # type: ignore[no-untyped-def]
    """The timed calls, each mapping (states before the click, new items, clicks so far) to its
    result: ``ours`` and ``onnx`` to the top-k ids, ``ours graph`` and ``onnx graph`` to the query
    vectors alone (the network's part of the call, without the scores and the top-k)."""
    meta = export_onnx(model, out)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(out / meta["graph"]), opts, providers=["CPUExecutionProvider"])
    live = model.live()
    W, b = live.output_layer()
    scorer = TopK(W, b, mode=scoring)
    Wn = W.numpy().T.copy()
    bn = np.zeros(Wn.shape[1], np.float32) if b is None else b.numpy()

    def numpy_topk(q: np.ndarray) -> np.ndarray:
        s = q @ Wn + bn
        s[:, 0] = -np.inf
        return top_k_rows(s, k)[0]

    if model.name == "gru4rec":
        def ours_q(st, items, clicks):  # type: ignore[no-untyped-def]
            return live.queries(live.advance(st, items), clicks)

        def onnx_q(st, items, clicks):  # type: ignore[no-untyped-def]
            return sess.run(None, {"state": st, "item": items})[1]
    else:
        T = meta["max_len"]

        def ours_q(st, items, clicks):  # type: ignore[no-untyped-def]
            return live.queries(None, clicks)

        def onnx_q(st, items, clicks):  # type: ignore[no-untyped-def]
            return sess.run(None, {"clicks": pad_arrays(clicks, T)[0]})[0]

    return {
        "ours": lambda *a: scorer.topk(ours_q(*a), k)[0],
        "onnx": lambda *a: numpy_topk(onnx_q(*a)),
        "ours graph": ours_q,
        "onnx graph": onnx_q,
    }


def gru_states(model: Recommender, clicks: list[np.ndarray]) -> np.ndarray | None:
    """The states before each session's last click (our path computes them; both paths start there)."""
    live = model.live()
    if not live.state_size:
        return None
    st = live.start(len(clicks))
    for r, c in enumerate(clicks):
        for it in c[:-1]:
            st[r : r + 1] = live.advance(st[r : r + 1], np.array([it]))
    return st


def measure(model: Recommender, batch: int, calls: int, k: int, scoring: str, ort, rng) -> dict:  # type: ignore[no-untyped-def]
    """Median and p90 µs of every path of :func:`paths`, taking turns in a rotating order, and
    how many top-k rows differ between ours and onnx."""
    fns = paths(model, Path(tempfile.mkdtemp(prefix="onnx_latency_")) / model.name, k, scoring, ort)
    work = [(gru_states(model, clicks), items, clicks) for items, clicks in cases(model, batch, calls, rng)]
    for args in work[:10]:  # warm-up
        for fn in fns.values():
            fn(*args)
    labels = list(fns)
    times: dict[str, list[float]] = {label: [] for label in labels}
    differ = 0
    for i, args in enumerate(work):
        got = {}
        for label in labels[i % len(labels) :] + labels[: i % len(labels)]:
            t = time.perf_counter_ns()
            got[label] = fns[label](*args)
            times[label].append((time.perf_counter_ns() - t) / 1e3)
        differ += int((np.asarray(got["ours"]) != np.asarray(got["onnx"])).any(axis=1).sum())
    return {label: (float(np.median(v)), float(np.percentile(v, 90))) for label, v in times.items()} | {"differ": differ}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gru4rec", type=Path, help="GRU4Rec artifact (default: train a small one on rsc15-100k)")
    ap.add_argument("--sasrec", type=Path, help="SASRec artifact (default: train a small one on rsc15-100k)")
    ap.add_argument("--calls", type=int, default=300, help="timed calls per path, model and batch size")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--scoring", default="exact", choices=["exact", "auto", "fp16"], help="our TopK's mode")
    args = ap.parse_args()
    import onnxruntime as ort
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    models = [Recommender.load(args.gru4rec) if args.gru4rec else train_small("gru4rec"),
              Recommender.load(args.sasrec) if args.sasrec else train_small("sasrec")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, one thread each, k={args.k}, {args.calls} calls per cell\n")
    print("| model | batch | what | ours median µs | ours p90 µs | onnx median µs | onnx p90 µs | onnx / ours (median) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    differ = []
    with threadpool_limits(1):
        for model in models:
            for batch in (1, 64):
                r = measure(model, batch, args.calls, args.k, args.scoring, ort, rng)
                for what, suffix in ((f"click -> top-{args.k}", ""), ("query only", " graph")):
                    (om, op), (xm, xp) = r["ours" + suffix], r["onnx" + suffix]
                    print(f"| {model.name} | {batch} | {what} | {om:,.0f} | {op:,.0f} | {xm:,.0f} | {xp:,.0f} | {xm / om:.2f} |",
                          flush=True)
                differ.append(f"{model.name} batch {batch}: {r['differ']} of {batch * args.calls}")
    print(f"\ntop-{args.k} rows where the two paths differ: " + "; ".join(differ))
    for m in models:
        W, _ = m.live().output_layer()
        print(f"\n{m.name}: {m.n_items_:,} items, d = {W.shape[1]}, config {m.config}")


if __name__ == "__main__":
    main()
