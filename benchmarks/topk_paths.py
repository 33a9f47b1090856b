"""In-process time of one top-k call of nextclick.ranking.bounded.TopK (bounded, exact)
against exact float32 scoring of the whole catalogue, and optionally against another version of
``nextclick/scoring.py`` (to measure a change), interleaved in one process on one thread, as in
the service's model process.

Queries are GRU4Rec session states after 1-7 clicks on popular items; each call excludes the
session's clicks, k = 20. Every variant must return the same float32 scores up to summation order
(checked); items that differ (a near-tie at the k-th place) are counted.

    python benchmarks/topk_paths.py [MODEL_DIR]   # default runs/serve_bench/gru4rec_shop100k
    # (that artifact comes from `python benchmarks/serve_load.py --make`)
    python benchmarks/topk_paths.py --against 80f6f1b     # this TopK against that commit's
    git show f29f15a:nextclick/scoring.py > /tmp/scoring_before.py
    python benchmarks/topk_paths.py --against /tmp/scoring_before.py   # or against a scoring.py
    python benchmarks/topk_paths.py --batches 1 --gaps 0,0.5,2,5       # lone queries, paused between
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nextclick.models.base import Recommender  # noqa: E402
from nextclick.ranking.bounded import TopK  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _other_topk(what: str) -> type:
    """``TopK`` from another copy of the bounded top-k: a file, or a git revision (its
    nextclick/ranking/bounded.py and kernels.py, or before the package layout nextclick/scoring.py
    and nextclick/kernels.py), imported under a private name."""
    if Path(what).is_file():
        spec = importlib.util.spec_from_file_location("_scoring_other", what)
        if spec is None or spec.loader is None:
            raise SystemExit(f"--against: cannot import {what}")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.TopK
    pkg = Path(tempfile.mkdtemp(prefix="nextclick_against_")) / "_nextclick_against"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    layouts = [("nextclick/ranking/bounded.py", "nextclick/ranking/kernels.py"), ("nextclick/scoring.py", "nextclick/kernels.py")]
    for scoring, kernels in layouts:  # noqa: B007 (the pair found is used below)
        got = subprocess.run(["git", "show", f"{what}:{scoring}"], cwd=ROOT, capture_output=True, text=True)
        if got.returncode == 0:
            break
    else:
        raise SystemExit(f"--against: {what!r} is neither a file nor a git revision with a bounded top-k")
    for name, path in (("scoring.py", scoring), ("kernels.py", kernels)):
        got = subprocess.run(["git", "show", f"{what}:{path}"], cwd=ROOT, capture_output=True, text=True)
        if got.returncode:
            continue  # older revisions have no compiled loops
        text = got.stdout.replace("from nextclick.ranking import kernels", "from _nextclick_against import kernels")
        (pkg / name).write_text(text.replace("from nextclick import kernels", "from _nextclick_against import kernels"))
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module("_nextclick_against.scoring").TopK


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", nargs="?", default="runs/serve_bench/gru4rec_shop100k")
    ap.add_argument("--against", metavar="REV_OR_FILE",
                    help="another TopK to compare with: a git revision (its scoring.py and kernels.py) or a scoring.py")
    ap.add_argument("--calls", type=int, default=400, help="calls per batch size and variant")
    ap.add_argument("--batches", default="1,2,4,8,16,64", help="queries per call, comma-separated")
    ap.add_argument("--gaps", default="", metavar="MS,MS",
                    help="also time lone queries (this TopK) with these pauses between calls, in ms: a visitor's "
                         "clicks arrive apart, and the catalogue's half-precision copy leaves the cache meanwhile")
    args = ap.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too, as in the service's model process
    m = Recommender.load(args.model_dir)
    W, b = m.output_layer()
    variants = {"exact float32": TopK(W, b, mode="exact"), "this TopK": TopK(W, b)}
    if args.against:
        variants["--against"] = _other_topk(args.against)(W, b)
    rng = np.random.default_rng(0)
    pop = np.argsort(-m.popularity_[1:])[:2000] + 1
    queries, clicked = [], []
    for _ in range(300):
        clicks = rng.choice(pop, int(rng.integers(1, 8)))
        st = None
        for i in range(clicks.size):
            st, q = m.live_query(st, [clicks[: i + 1]], clicks[i : i + 1])
        queries.append(q[0].clone())
        clicked.append(np.asarray(clicks))
    Q = torch.stack(queries)
    names = list(variants)
    print(f"{m.name}, {m.n_items_:,} items, this TopK's mode {variants['this TopK'].mode}; "
          f"median ms per top-k call ({args.calls} calls each; the fp16 variants interleaved)")
    print("| queries | " + " | ".join(names) + " | this / exact | "
          + ("this / --against | " if args.against else "") + "items differing (ties at the cut) |")
    print("|---" * (len(names) + 3 + bool(args.against)) + "|")
    for B in (int(x) for x in args.batches.split(",")):
        calls = [rng.choice(len(queries), B, replace=False) for _ in range(args.calls)]
        times: dict[str, list[float]] = {n: [] for n in names}
        # exact scoring reads the whole float32 matrix, which would evict the others' packed
        # half-precision copies from the cache: timed on its own, first
        ref = []
        for idx in calls:
            t0 = time.perf_counter()
            ref.append(variants["exact float32"].topk(Q[idx], 20, [clicked[i] for i in idx]))
            times["exact float32"].append(time.perf_counter() - t0)
        swapped = 0
        fast = names[1:]
        for r, idx in enumerate(calls):
            P, ex = Q[idx], [clicked[i] for i in idx]
            for n in fast[r % len(fast) :] + fast[: r % len(fast)]:  # alternate the order
                t0 = time.perf_counter()
                ids, sc = variants[n].topk(P, 20, ex)
                times[n].append(time.perf_counter() - t0)
                # the same float32 scores up to summation order, the same items (near-ties may swap)
                np.testing.assert_allclose(sc, ref[r][1], rtol=1e-5, atol=1e-6)
                swapped += sum(len(set(a) ^ set(c)) for a, c in zip(ids.tolist(), ref[r][0].tolist()))
        med = {n: float(np.median(times[n])) * 1e3 for n in names}
        cells = " | ".join(f"{med[n]:.3f}" for n in names)
        ratio = f"{med['this TopK'] / med['exact float32']:.2f}"
        if args.against:
            ratio += f" | {med['this TopK'] / med['--against']:.2f}"
        print(f"| {B} | {cells} | {ratio} | {swapped} |")
    tk = variants["this TopK"]
    if tk.mode == "fp16":
        print(f"this TopK: rank {tk.rank}, scan path {'on' if tk.scan else 'off'} (batches of up to {tk.scan_max}); "
              f"{tk.exact / max(tk.rows, 1):.0f} rows scored exactly per query; {tk.fallbacks} of {tk.rows} scan rows "
              f"gave up")
    if args.gaps:
        lone = fast  # the bounded variants, alternating
        print("\n| pause between lone queries (ms) | " + " | ".join(f"{n}, median ms | p90 ms" for n in lone) + " |")
        print("|---" * (1 + 2 * len(lone)) + "|")
        for gap in (float(x) for x in args.gaps.split(",")):
            ts: dict[str, list[float]] = {n: [] for n in lone}
            for r in range(args.calls):
                i = r % len(queries)
                for n in lone[r % len(lone) :] + lone[: r % len(lone)]:
                    if gap:
                        time.sleep(gap / 1e3)
                    t0 = time.perf_counter()
                    variants[n].topk(Q[i : i + 1], 20, [clicked[i]])
                    ts[n].append(time.perf_counter() - t0)
            print(f"| {gap:g} | " + " | ".join(f"{np.median(ts[n]) * 1e3:.3f} | {np.percentile(ts[n], 90) * 1e3:.3f}"
                                              for n in lone) + " |")


if __name__ == "__main__":
    main()
