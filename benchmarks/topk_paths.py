"""In-process time of one top-k call of nextclick.ranking.bounded.TopK (bounded, exact)
against exact float32 scoring of the whole catalogue, and optionally against another version of
the bounded top-k (to measure a change), interleaved in one process on one thread, as in the
service's model process.

Queries are GRU4Rec session states after 1-7 clicks on popular items; each call excludes the
session's clicks, k = 20. Every variant must return the same float32 scores up to summation order
(checked); items that differ (a near-tie at the k-th place) are counted.

    python benchmarks/topk_paths.py [MODEL_DIR]   # default runs/serve_bench/gru4rec_shop100k
    # (that artifact comes from `python benchmarks/serve_load.py --make`)
    python benchmarks/topk_paths.py --against 80f6f1b     # this TopK against that revision's
    python benchmarks/topk_paths.py --against /tmp/bounded_other.py   # or against a file
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
                    help="another TopK to compare with: a git revision (its bounded top-k and kernels) or a file")
    ap.add_argument("--calls", type=int, default=400, help="calls per batch size and variant")
    ap.add_argument("--batches", default="1,2,4,8,16,64", help="queries per call, comma-separated")
    ap.add_argument("--gaps", default="", metavar="MS,MS",
                    help="also time lone queries (this TopK) with these pauses between calls, in ms: a visitor's "
                         "clicks arrive apart, and the catalogue's half-precision copy leaves the cache meanwhile")
    args = ap.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too, as in the service's model process
    m = Recommender.load(args.model_dir)
    W, b = m.live().output_layer()
    variants = {"exact float32": TopK(W, b, mode="exact"), "this TopK": TopK(W, b)}
    if args.against:
        variants["--against"] = _other_topk(args.against)(W, b)
    rng = np.random.default_rng(0)
    Q, clicked = _queries(m, rng)
    names = list(variants)
    print(f"{m.name}, {m.n_items_:,} items, this TopK's mode {variants['this TopK'].mode}; "
          f"median ms per top-k call ({args.calls} calls each; the fp16 variants interleaved)")
    print("| queries | " + " | ".join(names) + " | this / exact | "
          + ("this / --against | " if args.against else "") + "items differing (ties at the cut) |")
    print("|---" * (len(names) + 3 + bool(args.against)) + "|")
    for B in (int(x) for x in args.batches.split(",")):
        calls = [rng.choice(len(clicked), B, replace=False) for _ in range(args.calls)]
        _time_batch(variants, Q, clicked, calls, B)
    tk = variants["this TopK"]
    if tk.mode == "fp16":
        print(f"this TopK: rank {tk.rank}, scan path {'on' if tk.scan else 'off'} (batches of up to {tk.scan_max}); "
              f"{tk.exact / max(tk.rows, 1):.0f} rows scored exactly per query; {tk.fallbacks} of {tk.rows} scan rows "
              f"gave up")
    if args.gaps:
        _time_gaps({n: v for n, v in variants.items() if n != "exact float32"}, Q, clicked, args.gaps, args.calls)


def _queries(m: Recommender, rng: np.random.Generator) -> tuple[torch.Tensor, list[np.ndarray]]:
    """300 query vectors (session states after 1-7 clicks on the 2,000 most popular items) and
    each session's clicks."""
    pop = np.argsort(-m.popularity_[1:])[:2000] + 1
    live = m.live()
    queries, clicked = [], []
    for _ in range(300):
        clicks = rng.choice(pop, int(rng.integers(1, 8)))
        st = live.start(1)
        for i in range(clicks.size):
            st = live.advance(st, clicks[i : i + 1])
        queries.append(live.queries(st, [clicks])[0].clone())
        clicked.append(np.asarray(clicks))
    return torch.stack(queries), clicked


def _time_batch(variants: dict, Q: torch.Tensor, clicked: list[np.ndarray], calls: list[np.ndarray], B: int) -> None:
    """Time every variant on the same ``calls`` (batches of ``B`` queries) and print one row."""
    names = list(variants)
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
    if "--against" in variants:
        ratio += f" | {med['this TopK'] / med['--against']:.2f}"
    print(f"| {B} | {cells} | {ratio} | {swapped} |")


def _time_gaps(lone: dict, Q: torch.Tensor, clicked: list[np.ndarray], gaps: str, n_calls: int) -> None:
    """Time lone queries of the bounded variants, alternating, with each pause of ``gaps`` (ms)
    before every call, and print one row per pause."""
    names = list(lone)
    print("\n| pause between lone queries (ms) | " + " | ".join(f"{n}, median ms | p90 ms" for n in names) + " |")
    print("|---" * (1 + 2 * len(names)) + "|")
    for gap in (float(x) for x in gaps.split(",")):
        ts: dict[str, list[float]] = {n: [] for n in names}
        for r in range(n_calls):
            i = r % len(clicked)
            for n in names[r % len(names) :] + names[: r % len(names)]:
                if gap:
                    time.sleep(gap / 1e3)
                t0 = time.perf_counter()
                lone[n].topk(Q[i : i + 1], 20, [clicked[i]])
                ts[n].append(time.perf_counter() - t0)
        print(f"| {gap:g} | " + " | ".join(f"{np.median(ts[n]) * 1e3:.3f} | {np.percentile(ts[n], 90) * 1e3:.3f}"
                                          for n in names) + " |")


if __name__ == "__main__":
    main()
