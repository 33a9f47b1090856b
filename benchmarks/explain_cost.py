"""What one explanation costs (``GET /v1/sessions/{id}/explanations``): the time of
:func:`nextclick.models.explain.explain` for sessions of 5, 20 and 50 known clicks, in the
service's setting (one torch thread, the artifact memory-mapped), median of ``--repeats`` calls.

    python benchmarks/explain_cost.py runs/serve_bench/gru4rec_shop100k runs/serve_bench/sasrec_shop100k
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from nextclick.models.base import Recommender
from nextclick.models.explain import explain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--clicks", default="5,20,50")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("| artifact | model | items | clicks | ms per explanation (median) | what it holds |")
    print("|---|---|---|---|---|---|")
    for path in args.artifacts:
        m = Recommender.load(path, mmap=True)
        for n in (int(x) for x in args.clicks.split(",")):
            clicks = rng.integers(1, m.n_items_ + 1, n)
            item = int(rng.integers(1, m.n_items_ + 1))
            e = explain(m, clicks, item)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                explain(m, clicks, item)
                times.append(time.perf_counter() - t)
            parts = ["influence"] + [k for k in ("attention", "neighbours") if e[k] is not None]
            print(f"| {path.rstrip('/').split('/')[-1]} | {m.name} | {m.n_items_:,} | {n} | "
                  f"{1000 * float(np.median(times)):.1f} | {', '.join(parts)} |")


if __name__ == "__main__":
    main()
