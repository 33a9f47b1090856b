"""Benchmark: `prepare` on the synthetic shop at OTTO's size (a directory of Parquet parts).

Generates the log with `write_shop` when DATA/clicks is missing (not timed), then runs
`nextclick.data.prepare` on the whole directory in a fresh subprocess (its peak RSS is its own):
read, drop repeats, the 5/2 support filter, the 1-day test split and the 1-day valid split, write.
Then the same steps on a slice of the first parts (about --pandas-clicks clicks), once with
nextclick and once written in pandas, side by side: pandas holds the whole log in int64 columns
and does not fit the full size in this machine's memory.

    python benchmarks/scale_prepare.py [--data runs/scale/otto] [--size otto] [--sessionize] [--json PATH]

``--sessionize`` drops the session column and rebuilds sessions from each user's clicks (30 min gap).
``--json PATH`` also writes the table's rows (part ``prepare``) as JSON (see ``scale.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD_NEXTCLICK = r"""
import json, resource, sys, time
from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.io import ReadOptions
read = ReadOptions(session_col=None, user_col="UserId") if sys.argv[3] == "1" else ReadOptions()
t = time.perf_counter()
ds = prepare(sys.argv[1], sys.argv[2], PrepareOptions(read=read))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stats": ds.meta["stats"], "report": ds.meta["report"]}))
"""

CHILD_PANDAS = r"""
import json, resource, sys, time
import numpy as np
import pandas as pd
t = time.perf_counter()
files = sys.argv[3:]
df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
if sys.argv[2] == "1":
    df = df.drop(columns="SessionId", errors="ignore").sort_values(["UserId", "Time"], kind="stable")
    new = (df.UserId.values[1:] != df.UserId.values[:-1]) | (df.Time.values[1:] - df.Time.values[:-1] > 1800)
    df["SessionId"] = np.concatenate([[0], np.cumsum(new)])
else:
    df = df.drop(columns="UserId").sort_values(["SessionId", "Time"], kind="stable")
rep = (df.SessionId.values[1:] == df.SessionId.values[:-1]) & (df.ItemId.values[1:] == df.ItemId.values[:-1])
df = df[~np.concatenate([[False], rep])]
while True:
    n = len(df)
    df = df[df.groupby("SessionId").ItemId.transform("size") >= 2]
    df = df[df.groupby("ItemId").ItemId.transform("size") >= 5]
    if len(df) == n:
        break

def split(df):
    start = df.groupby("SessionId").Time.transform("min")
    cut = df.Time.max() - 86400
    train, test = df[df.Time < cut], df[start >= cut]  # strict: train keeps only clicks before the cut
    train = train[train.groupby("SessionId").ItemId.transform("size") >= 2]
    test = test[test.ItemId.isin(train.ItemId.unique())]
    return train, test[test.groupby("SessionId").ItemId.transform("size") >= 2]

train, test = split(df)
train_tr, valid = split(train)
out = sys.argv[1]
for name, f in {"train": train, "test": test, "train_tr": train_tr, "valid": valid}.items():
    f.to_parquet(f"{out}/{name}.parquet")
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "train_events": len(train), "test_events": len(test)}))
"""


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_log(data: Path, size: str) -> None:
    """Write the shop's parts to DATA/clicks unless they are there."""
    if (data / "clicks").is_dir() and any((data / "clicks").iterdir()):
        return
    from nextclick.data.synthetic import shop_size, write_shop

    t = time.perf_counter()
    counts = write_shop(shop_size(size, seed=1), data)
    print(f"generated {counts['clicks']:,} clicks in {counts['parts']} parts in {time.perf_counter() - t:.0f} s (not timed below)")


def slice_parts(data: Path, clicks: int, folder: Path) -> list[Path]:
    """Links in ``folder`` to the first parts of DATA/clicks holding about ``clicks`` clicks."""
    import pyarrow.parquet as pq

    chosen, total = [], 0
    for part in sorted((data / "clicks").glob("*.parquet")):
        if total >= clicks:
            break
        (folder / part.name).symlink_to(part.resolve())
        chosen.append(part)
        total += pq.ParquetFile(part).metadata.num_rows
    return chosen


def nextclick_row(name: str, kind: str, src: Path, out: Path, sessionize: bool) -> dict:
    """One run of ``prepare`` in a fresh process: its counts as read, seconds and peak RSS (MB), or its error."""
    res = run_child(CHILD_NEXTCLICK, str(src), str(out), "1" if sessionize else "0")
    if "error" in res:
        return {"run": name, "kind": kind, "error": res["error"]}
    read = res["report"][0]["details"]
    for r in res["report"]:
        print(f"  {r['step']:<16} removed {r['removed_events']:>12,} events {r['removed_sessions']:>11,} sessions")
    for role, st in res["stats"].items():
        print(f"  {role:<9} {st['events']:>12,} events {st['sessions']:>11,} sessions {st['items']:>9,} items")
    sessions = read.get("sessions", res["report"][1]["details"].get("sessions_built", "-"))
    return {"run": name, "kind": kind, "clicks": read["events"], "sessions": sessions, "items": read["items"],
            "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"]}


def print_table(rows: list[dict], sessionize: bool) -> None:
    steps = "read parts, " + ("sessionize 30 min, " if sessionize else "") + "drop repeats, 5/2 filter, 1-day split x2, write"
    print(f"| run ({steps}) | clicks | sessions | items | seconds | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fmt = lambda v: f"{v:,}" if isinstance(v, int) else v  # noqa: E731
        counts = " | ".join(fmt(r.get(k, "-")) for k in ("clicks", "sessions", "items"))
        sec = f"{r['seconds']:.1f}" if "seconds" in r else "-"
        rss = f"{r['peak_rss_mb']:,.0f}" if "peak_rss_mb" in r else "-"
        print(f"| {r['run']} | {counts} | {sec} | {rss} |" + (f" {r['error']}" if "error" in r else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/scale/otto"))
    ap.add_argument("--size", default="otto", help="named shop size written when DATA/clicks is missing")
    ap.add_argument("--pandas-clicks", type=int, default=22_000_000, help="clicks in the slice both tools run on")
    ap.add_argument("--sessionize", action="store_true", help="rebuild sessions from users (drop SessionId)")
    ap.add_argument("--skip-full", action="store_true", help="run only the slice")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    args = ap.parse_args()
    ensure_log(args.data, args.size)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        tmp_path = Path(tmp)
        if not args.skip_full:
            print("nextclick, whole log:")
            rows.append(nextclick_row("nextclick prepare, whole log", "full", args.data / "clicks", tmp_path / "full", args.sessionize))
        (tmp_path / "slice").mkdir()
        parts = slice_parts(args.data, args.pandas_clicks, tmp_path / "slice")
        print(f"nextclick, slice of {len(parts)} parts:")
        rows.append(nextclick_row(f"nextclick prepare, slice ({len(parts)} parts)", "slice", tmp_path / "slice", tmp_path / "s1",
                                  args.sessionize))
        (tmp_path / "s2").mkdir()
        res = run_child(CHILD_PANDAS, str(tmp_path / "s2"), "1" if args.sessionize else "0", *map(str, parts))
        same = {k: rows[-1][k] for k in ("clicks", "sessions", "items") if k in rows[-1]}
        pandas = {"run": "same steps in pandas, slice", "kind": "pandas", **same}
        if "error" in res:
            rows.append({**pandas, "error": res["error"]})
        else:
            rows.append({**pandas, "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"]})
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print_table(rows, args.sessionize)
    if args.json:
        from scale import write_part

        write_part(args.json, "prepare", {"sessionize": args.sessionize, "slice_parts": len(parts), "rows": rows})


if __name__ == "__main__":
    main()
