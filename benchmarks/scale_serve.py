"""Benchmark: the service at OTTO's catalogue size (about 1.9M items), GRU4Rec.

``--make`` trains the artifact it serves, as a user with a time budget would: GRU4Rec
(``official_rsc15``, one epoch, ``time_budget`` = ``--budget`` seconds) on the most recent
sessions of the full-size synthetic log (``nextclick generate --size otto``) that the budget
covers at ``--rate`` clicks per second (a rate measured on this machine), with consecutive
repeats dropped and sessions of one click removed, over the whole catalogue of
``items.parquet``. Training stops when the budget runs out even if the epoch has not ended
(the artifact records where). The script prints the clicks trained on, the items they touch
and the wall time.

Then, for the artifact: the time from starting ``nextclick serve`` (model in its own process,
in-memory store) to ``/readyz``; each process's memory from ``/proc`` (RSS, its private part
``RssAnon``, its file-backed part ``RssFile``, which holds the memory-mapped weights the two
processes share, and ``Pss``, which splits shared pages between the processes that map them);
wrk on loopback (one connection, then several), every request a click of a live anonymous
session, as ``serve_load.py`` does; the model's share of a lone click (server-side model time per
click at one connection, and the in-process GRU step and top-k).

    python benchmarks/scale_serve.py --make [--budget 3000] [--rate 10500] [--data runs/scale/otto] [--out runs/scale/gru4rec_otto_budget]
    python benchmarks/scale_serve.py runs/scale/gru4rec_otto_budget [--duration 10] [--connections 1,6] [--json PATH]

``--json PATH`` also writes the service's figures (part ``serve``: ready seconds, each process's
memory, each wrk run, the in-process lone click) as JSON (see ``scale.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import LUA, breakdown, cpu_seconds, micro, parse_wrk, server_sums  # noqa: E402

from tests.serve.servers import start_service, stop  # noqa: E402


def make(data: Path, out: Path, budget: float, rate: float) -> None:
    import polars as pl

    from nextclick.data.dataset import encode_clicks
    from nextclick.data.preprocess import drop_repeats
    from nextclick.data.vocab import ItemVocab
    from nextclick.models.gru4rec import GRU4Rec

    t0 = time.perf_counter()
    vocab = ItemVocab.fit(pl.read_parquet(data / "items.parquet", columns=["ItemId"])["ItemId"].to_numpy())
    log = pl.scan_parquet(sorted((data / "clicks").glob("*.parquet"))).select("SessionId", "ItemId", "Time")
    sessions = (
        log.group_by("SessionId").agg(pl.col("Time").min().alias("start"), pl.len().alias("n"))
        .sort("start", "SessionId", descending=True).collect(engine="streaming")
    )
    keep = sessions.filter(pl.col("n").cum_sum() <= budget * rate)["SessionId"]
    df, rep = drop_repeats(log.filter(pl.col("SessionId").is_in(keep.implode())).collect(engine="streaming"))
    df = df.filter(pl.len().over("SessionId") >= 2)
    train, _ = encode_clicks(df, vocab)
    first = df["Time"].min()
    del df, sessions
    seen = int((np.bincount(train.items, minlength=vocab.n_items + 1)[1:] > 0).sum())
    print(f"the most recent {train.n_sessions:,} sessions ({train.n_events:,} clicks, from {first}), "
          f"{rep.removed_events:,} repeats dropped; {seen:,} of {vocab.n_items:,} items clicked; read in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    m = GRU4Rec.from_preset("official_rsc15", n_epochs=1, n_threads=1, time_budget=budget)
    t1 = time.perf_counter()
    m.fit(train)
    fit_s = time.perf_counter() - t1
    m.save(out)
    done = m.training_.get("out_of_time", {}).get("events", train.n_events)
    print(f"trained GRU4Rec official_rsc15 on {done:,} clicks in {fit_s:.0f} s ({done / fit_s:,.0f} clicks/s; "
          f"budget {budget:g} s) -> {out}")


def memory(pid: int) -> dict[str, float]:
    """MB: RSS and its private / file-backed parts, and the proportional share (Pss)."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1]) / 1024
    return out


def serve(model_dir: str, duration: int, connections: list[int]) -> dict:
    """Measure the service of ``model_dir``, print the tables and return the figures printed."""
    import httpx

    from nextclick.models.base import Recommender

    m = Recommender.load(model_dir, mmap=True)
    ids = m.vocab_.ids[np.argsort(-m.popularity_[1:])[:2000]]
    del m
    lua = Path(tempfile.mkdtemp()) / "click.lua"
    lua.write_text(LUA % (",".join(str(int(x)) for x in ids), os.getpid()))
    t0 = time.perf_counter()
    proc, url = start_service(Path(model_dir), timeout=900)
    try:
        while httpx.get(f"{url}/readyz", timeout=30).status_code != 200:
            time.sleep(0.1)
        load_s = time.perf_counter() - t0
        model_pid = httpx.get(f"{url}/readyz").json().get("model_pid")
        pids = [proc.pid] + ([model_pid] if model_pid and model_pid != proc.pid else [])
        mem_idle = [memory(p) for p in pids]
        subprocess.run(["wrk", "-t1", "-c4", "-d3s", "-s", str(lua), url], capture_output=True, check=True)  # warm-up
        rows = []
        for c in connections:
            before, cpu0, t1 = server_sums(url), cpu_seconds(pids), time.perf_counter()
            out = subprocess.run(["wrk", "-t1", f"-c{c}", f"-d{duration}s", "--timeout", "2s", "--latency", "-s", str(lua), url],
                                 capture_output=True, text=True, check=True).stdout
            cpu = [(b - a) / (time.perf_counter() - t1) for a, b in zip(cpu0, cpu_seconds(pids))]
            rows.append((c, parse_wrk(out), breakdown(before, server_sums(url)), cpu))
        mem_load = [memory(p) for p in pids]
    finally:
        stop(proc)
    mic = micro(model_dir)
    res = {
        "model_dir": model_dir, "model": mic["model"], "items": mic["n_items"], "duration_s": duration, "ready_s": load_s,
        "memory": [{"process": name, "idle": a, "after_load": b}
                   for name, a, b in zip(("event loop", "model process"), mem_idle, mem_load)],
        "load": [{"connections": c, **w, **br, "cores": cpu} for c, w, br, cpu in rows],
        "in_process": {k: mic[k] for k in ("step_ms", "topk_ms", "store_ms")},
    }
    report(res)
    return res


def report(res: dict) -> None:
    """Print the figures of :func:`serve`: ready time, memory table, load table, in-process lone click."""
    print(f"\nGRU4Rec, {res['items']:,} items: service ready {res['ready_s']:.1f} s after start (snapshot copy, checksum, "
          "weights mapped, top-k index built)")
    print("\n| process | RSS MB (idle) | private (RssAnon) | file-backed, shared (RssFile) | Pss | RSS MB after load | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for m in res["memory"]:
        a, b = m["idle"], m["after_load"]
        print(f"| {m['process']} | {a['VmRSS']:,.0f} | {a['RssAnon']:,.0f} | {a['RssFile']:,.0f} | {a['Pss']:,.0f} | "
              f"{b['VmRSS']:,.0f} | {b['VmHWM']:,.0f} |")
    print(f"\nwrk on loopback, 1 wrk thread, {res['duration_s']} s per run, POST /v1/sessions/{{id}}/clicks k=20, in-memory store")
    print("| connections | req/s | p50 ms | p90 ms | p99 ms | errors | server ms/req | mean batch | model ms/click | "
          "cores: event loop / model |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in res["load"]:
        print(f"| {r['connections']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['errors']} | "
              f"{r['server_ms']:.2f} | {r['mean_batch']:.1f} | {r['model_ms_per_click']:.3f} | "
              f"{' / '.join(f'{x:.2f}' for x in r['cores'])} |")
    mic = res["in_process"]
    print(f"\nin-process lone click (batch of one, one thread): GRU step {mic['step_ms']:.3f} ms, top-k {mic['topk_ms']:.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?")
    ap.add_argument("--make", action="store_true", help="train the artifact first (into --out)")
    ap.add_argument("--data", default="runs/scale/otto", help="the full-size log: clicks/*.parquet and items.parquet")
    ap.add_argument("--out", default="runs/scale/gru4rec_otto_budget")
    ap.add_argument("--budget", type=float, default=3000.0, help="GRU4Rec's training budget in seconds")
    ap.add_argument("--rate", type=float, default=10500.0, help="GRU4Rec's training clicks per second at this size")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", default="1,6")
    ap.add_argument("--json", metavar="PATH", help="also write the service's figures as JSON to PATH")
    a = ap.parse_args()
    if a.json and not (a.model_dir or a.make):
        ap.error("--json needs a model to serve (MODEL_DIR or --make)")
    if a.make:
        make(Path(a.data), Path(a.out), a.budget, a.rate)
    target = a.model_dir or (a.out if a.make else None)
    if target:
        if shutil.which("wrk") is None:
            sys.exit("wrk is not installed: apt-get install wrk")
        res = serve(target, a.duration, [int(x) for x in a.connections.split(",")])
        if a.json:
            from scale import write_part

            write_part(a.json, "serve", res)


if __name__ == "__main__":
    main()
