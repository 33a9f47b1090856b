"""In-process time of one top-k call of nextclick.scoring.TopK (fp16 candidates, proven exact) for
small batches, the batched torch path against the row-by-row numpy path, interleaved in one
process (one thread, as in the service's model process).

Queries are GRU4Rec session states after 1-7 clicks on popular items; each call excludes the
session's clicks, k = 20. Both paths must return the same float32 scores up to summation order
(checked); items that differ between them (a near-tie at the k-th place) are counted.

    python benchmarks/topk_paths.py [MODEL_DIR]   # default runs/serve_bench/gru4rec_shop100k
    # (that artifact comes from `python benchmarks/serve_load.py --make`)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from nextclick.models.base import Recommender  # noqa: E402
from nextclick.scoring import TopK  # noqa: E402


def main() -> None:
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/serve_bench/gru4rec_shop100k"
    torch.set_num_threads(1)
    m = Recommender.load(model_dir)
    W, b = m.output_layer()
    sc = TopK(W, b)
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
    print(f"{m.name}, {m.n_items_:,} items, scoring mode {sc.mode}; median ms per top-k call (600 calls each)")
    print("| queries | batched torch path | row-by-row numpy path | ratio | items differing (ties at the cut) |")
    print("|---|---|---|---|---|")
    for B in (1, 2, 3, 4, 6, 8):
        times: dict[int, list[float]] = {0: [], 64: []}
        swapped = 0
        for r in range(600):
            idx = rng.choice(len(queries), B, replace=False)
            P, ex = Q[idx], [clicked[i] for i in idx]
            out = {}
            for few in (0, 64) if r % 2 else (64, 0):
                sc.few_rows = few
                t0 = time.perf_counter()
                out[few] = sc.topk(P, 20, ex)
                times[few].append(time.perf_counter() - t0)
            # the same float32 scores up to summation order, the same items (near-ties may swap)
            np.testing.assert_allclose(out[0][1], out[64][1], rtol=1e-5, atol=1e-6)
            diff = sum(len(set(a) ^ set(c)) for a, c in zip(out[0][0].tolist(), out[64][0].tolist()))
            swapped += diff
        a, f = np.median(times[0]) * 1e3, np.median(times[64]) * 1e3
        print(f"| {B} | {a:.3f} | {f:.3f} | {f / a:.2f} | {swapped} |")


if __name__ == "__main__":
    main()
