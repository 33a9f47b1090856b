"""Benchmark: prepare a 10M-click synthetic log (sessionize, dedup, filter, split) end to end.

Also times the same core steps written with pandas+pyarrow, the alternative data path, so the
choice of polars rests on a measurement. Each timed run happens in a fresh subprocess so its peak
RSS is its own.

    python benchmarks/prepare_10m.py [--clicks 10000000] [--skip-pandas]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_POLARS = r"""
import json, resource, sys, time
from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.io import ReadOptions
t = time.perf_counter()
ds = prepare(sys.argv[1], sys.argv[2], PrepareOptions(read=ReadOptions(session_col=None, user_col="UserId")))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stats": ds.meta["stats"], "report": [(r["step"], r["removed_events"], r["removed_sessions"]) for r in ds.meta["report"]]}))
"""

# the same steps in pandas: scale_prepare's reference, sessionizing ("1"), on the one file
from scale_prepare import CHILD_PANDAS  # noqa: E402


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clicks", type=int, default=10_000_000)
    ap.add_argument("--skip-pandas", action="store_true")
    args = ap.parse_args()
    from nextclick.data.synthetic import ShopConfig, generate_shop

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "clicks.parquet"
        t = time.perf_counter()
        n_sessions = int(args.clicks / 6.0)
        shop = generate_shop(ShopConfig(n_sessions=n_sessions, n_items=100_000, n_categories=24, days=30, seed=1))
        shop.clicks.drop("SessionId").write_parquet(src)
        print(
            f"generated {shop.clicks.height:,} clicks, {shop.clicks['UserId'].n_unique():,} users, "
            f"100,000 items in {time.perf_counter() - t:.1f} s (not timed below)"
        )
        del shop
        rows = []
        (Path(tmp) / "polars").mkdir()
        res = run_child(CHILD_POLARS, str(src), str(Path(tmp) / "polars"))
        rows.append(("nextclick prepare (polars)", res["seconds"], res["peak_rss_mb"]))
        for step in res["report"]:
            print(f"  {step[0]:<16} removed {step[1]:>11,} events {step[2]:>10,} sessions")
        for role, st in res["stats"].items():
            print(f"  {role:<9} {st['events']:>11,} events {st['sessions']:>10,} sessions {st['items']:>8,} items")
        if not args.skip_pandas:
            (Path(tmp) / "pandas").mkdir()
            res = run_child(CHILD_PANDAS, str(Path(tmp) / "pandas"), "1", str(src))
            rows.append(("same steps in pandas+pyarrow", res["seconds"], res["peak_rss_mb"]))
    print(f"\nmachine: {platform.machine()}, {__import__('os').cpu_count()} cores, python {platform.python_version()}")
    print(
        f"| pipeline ({args.clicks / 1e6:.0f}M clicks: read parquet, sessionize 30 min, dedup, 5/2 filter, 1-day split x2, write) | seconds | peak RSS (MB) |"
    )
    print("|---|---|---|")
    for name, sec, rss in rows:
        print(f"| {name} | {sec:.1f} | {rss:,.0f} |")
    if len(rows) == 2:
        print(f"\npolars / pandas speed ratio: {rows[1][1] / rows[0][1]:.1f}x")


if __name__ == "__main__":
    main()
