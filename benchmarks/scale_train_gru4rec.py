"""Benchmark: GRU4Rec's training throughput and peak memory at OTTO's catalogue size (about 1.9M
items), the compiled CPU step against the torch step on the CPU, over a bounded number of steps.

Each engine trains in a fresh subprocess (its peak RSS is its own) on the same slice of the
synthetic shop at the ``otto`` size (``nextclick.data.synthetic``: the full catalogue, the first
``--sessions`` sessions of its first chunk), with the negatives drawn from the catalogue's own
popularity (the expected click counts of the full-size log), so the item matrices, their
optimiser state and the sample store have the full-size shapes. Two epochs over the slice: the
first loads the compiled loops (numba's disk cache), the second is the figure. The engines run
in turns, ``--repeats`` times each, as this shared machine's speed drifts. The peak RSS
includes the set-up (the catalogue, the initialisation's float64 draws); the RSS after training
is what the weights, their optimiser state and the training hold. The rsc15 preset has embedding
dropout, which the engines draw differently, so their losses differ a little.

    python benchmarks/scale_train_gru4rec.py [--sessions 3000] [--preset spec_rsc15] [--threads 1] [--engines compiled,torch] [--repeats 2] [--json PATH]

``--json PATH`` also writes every run's figures (part ``train_gru4rec``) as JSON (see ``scale.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys, time
import numpy as np
import polars as pl
from nextclick.data.sessions import Sessions
from nextclick.data.synthetic import shop_catalogue, shop_chunk, shop_size
from nextclick.models.gru4rec import GRU4Rec
from nextclick.models.gru4rec.fit import epochs

engine, n_sessions, preset, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
shop = shop_size("otto")
cat = shop_catalogue(shop)
n = shop.n_items
# the catalogue's popularity: a pick inside category c has probability cat_p[c] * (its share of c)
share = np.diff(cat.cat.global_cdf - cat.cat.cat_of, prepend=0.0)
first = np.r_[True, cat.cat.cat_of[1:] != cat.cat.cat_of[:-1]]
share[first] = (cat.cat.global_cdf - cat.cat.cat_of)[first]
counts = np.r_[0.0, np.maximum(np.round(220e6 * cat.cat.cat_p[cat.cat.cat_of] * share), 1.0)]
index = np.empty(n, np.int64)
index[(cat.item_ids - 100_000) // 7] = np.arange(n)  # shop id -> item index (ids are 100000 + 7 * a permutation)
df = shop_chunk(shop, cat, 0, n_sessions).sort(["SessionId", "Time"])
sid = df["SessionId"].to_numpy()
starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
train = Sessions(
    items=index[(df["ItemId"].to_numpy() - 100_000) // 7] + 1, offsets=np.r_[starts, sid.size], n_items=n,
    times=df["Time"].to_numpy().astype(np.float64),
)
cfg = GRU4Rec.from_preset(preset).config
cfg.engine, cfg.n_epochs, cfg.n_threads = engine, 2, threads
t = time.perf_counter()
net, run = epochs(cfg, train, counts, n)
setup = time.perf_counter() - t
eps = list(run)
print(json.dumps({
    "items": n, "events": eps[-1].n_events, "steps": -(-eps[-1].n_events // cfg.batch_size), "setup_s": setup,
    "first_epoch_s": eps[0].seconds, "events_per_s": eps[-1].n_events / eps[-1].seconds, "loss": eps[-1].loss,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_mb": int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20,
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=3000, help="sessions of the slice (about 16.8 clicks each)")
    ap.add_argument("--preset", default="spec_rsc15")
    ap.add_argument("--threads", type=int, default=1, help="n_threads of both engines")
    ap.add_argument("--engines", default="compiled,torch")
    ap.add_argument("--repeats", type=int, default=2, help="runs of every engine, taken in turns")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    args = ap.parse_args()
    rows = []
    for engine in args.engines.split(",") * args.repeats:
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, engine, str(args.sessions), args.preset, str(args.threads)],
            capture_output=True, text=True, check=False,
        )
        if out.returncode:
            sys.exit(f"{engine}: exit status {out.returncode}\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["engine"], r["wall_s"] = engine, time.perf_counter() - t
        rows.append(r)
    print(f"GRU4Rec training at {rows[0]['items']:,} items, preset {args.preset}, n_threads {args.threads}, CPU "
          f"({platform.processor() or platform.machine()}); second epoch over {rows[0]['events']:,} events "
          f"({rows[0]['steps']:,} steps)")
    print("| engine | events/s | first epoch (s) | set-up (s) | loss | RSS after training (MB) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['engine']} | {r['events_per_s']:,.0f} | {r['first_epoch_s']:.1f} | {r['setup_s']:.1f} | "
              f"{r['loss']:.4f} | {r['rss_mb']:,.0f} | {r['peak_rss_mb']:,.0f} |")
    if args.json:
        from scale import write_part

        write_part(args.json, "train_gru4rec", {"preset": args.preset, "threads": args.threads, "sessions": args.sessions,
                                                "rows": rows})


if __name__ == "__main__":
    main()
