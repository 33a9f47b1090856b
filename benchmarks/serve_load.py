"""Load benchmark of `nextclick serve`: wrk (a separate process) on loopback, bounded in time.

For each model artifact: start the service (in-memory store), warm it up, then run wrk with one
connection and with several, each for --duration seconds, every request a click of a live
anonymous session (POST /v1/sessions/{id}/clicks, k=20; sessions of 1-10 clicks on real item ids).
Prints p50/p90/p99 latency, throughput and errors, plus where the time goes inside the service
(server-side request time, model time per click and batch size from /metrics, CPU cores used by
the event-loop process and the model process) and in-process micro-timings of one click (model
step, top-k, store round trip).

    python benchmarks/serve_load.py MODEL_DIR [MODEL_DIR ...] [--duration 10] [--connections 1,4,6,8,16,32]
        [--model-worker process,thread]
    python benchmarks/serve_load.py --make   # train the GRU4Rec/SASRec artifacts it needs first
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serve.servers import start_service, stop  # noqa: E402

LUA = r"""
local ids = {%s}
local n = #ids
math.randomseed(%d + os.time())
-- 1,000 live visitors; each request is the next click of a random one of them, and a visitor
-- whose session is over (1-10 clicks) is replaced by a new one. Concurrent requests therefore
-- belong to different sessions, as on a shop: clicks of ONE session are serialized by the
-- service (a per-session lock), so sharing a session between connections would measure that
-- lock, not the service.
local pool, left, next_sid = {}, {}, 0
for v = 1, 1000 do
  next_sid = next_sid + 1; pool[v] = next_sid; left[v] = math.random(1, 10)
end
local run = math.random(1, 1000000000)
request = function()
  local v = math.random(1, 1000)
  if left[v] <= 0 then
    next_sid = next_sid + 1; pool[v] = next_sid; left[v] = math.random(1, 10)
  end
  left[v] = left[v] - 1
  local item = ids[math.random(1, n)]
  local body = '{"item": ' .. item .. ', "k": 20}'
  return wrk.format("POST", "/v1/sessions/s" .. run .. "-" .. pool[v] .. "/clicks", {["Content-Type"] = "application/json"}, body)
end
"""


def parse_wrk(out: str) -> dict:
    def ms(v: str) -> float:
        num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
        return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        res[f"p{p}"] = ms(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return res


def server_sums(url: str) -> dict:
    """Cumulative sums of the service's own histograms (differences give one wrk run's share)."""
    import httpx

    text = httpx.get(f"{url}/metrics").text

    def val(pattern: str) -> float:
        m = re.search(pattern, text, re.M)
        return float(m.group(1)) if m else 0.0

    return {
        "req_sum": val(r'^nextclick_request_seconds_sum\{endpoint="clicks"\} (\S+)'),
        "req_n": val(r'^nextclick_request_seconds_count\{endpoint="clicks"\} (\S+)'),
        "model_sum": val(r"^nextclick_model_seconds_sum (\S+)"),
        "calls": val(r"^nextclick_model_seconds_count (\S+)"),
        "jobs": val(r"^nextclick_batch_size_sum (\S+)"),
    }


def breakdown(before: dict, after: dict) -> dict:
    d = {k: after[k] - before[k] for k in before}
    return {
        "server_ms": 1e3 * d["req_sum"] / max(d["req_n"], 1),  # inside the service, per request
        "mean_batch": d["jobs"] / max(d["calls"], 1),
        "model_ms_per_click": 1e3 * d["model_sum"] / max(d["jobs"], 1),  # model call time / jobs in it
    }


def cpu_seconds(pids: list[int]) -> list[float]:
    """user + system CPU seconds of each process so far (Linux /proc)."""
    out = []
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
        except (OSError, IndexError, ValueError):
            out.append(float("nan"))
    return out


def micro(model_dir: str, n: int = 300) -> dict:
    """In-process cost of one click as the service computes it (batch of one, one thread): model
    step (GRU step / SASRec forward, or the baselines' scores), top-k (for GRU4Rec/SASRec the
    fp16-candidate TopK of nextclick.ranking.bounded, otherwise a sort of the full score row), memory-store
    round trip."""
    import torch

    from nextclick.models.base import Recommender
    from nextclick.ranking import top_k
    from nextclick.ranking.bounded import TopK
    from nextclick.serve.store import MemoryStore, SessionRecord

    torch.set_num_threads(1)
    m = Recommender.load(model_dir, mmap=True)  # as the service loads it
    live = m.live()
    layer = live.output_layer()
    scorer = TopK(layer[0], layer[1]) if layer is not None else None
    rng = np.random.default_rng(0)
    items = rng.integers(1, m.n_items_ + 1, size=n)
    size = live.state_size
    st = np.zeros((1, size), np.float32) if size else None
    t_step = t_top = 0.0
    clicks: list[int] = []
    for i in range(n):
        clicks = [*clicks[-9:], int(items[i])]
        excl = [np.array(clicks)]
        t0 = time.perf_counter()
        st = live.advance(st, items[i : i + 1])
        if scorer is not None:
            q = live.queries(st, [np.array(clicks)])
            t1 = time.perf_counter()
            scorer.topk(q, 20, excl)
        else:
            sc = live.scores(st, [np.array(clicks)])
            t1 = time.perf_counter()
            top_k(sc, 20, excl)
        t2 = time.perf_counter()
        t_step += t1 - t0
        t_top += t2 - t1
    store = MemoryStore()
    rec = SessionRecord(items=list(range(10)), state=np.zeros(size, np.float32) if size else None, model_id="x")

    async def rt():
        t0 = time.perf_counter()
        for i in range(n):
            await store.put(f"s{i % 50}", rec)
            await store.get(f"s{i % 50}")
        return time.perf_counter() - t0

    t_store = asyncio.run(rt())
    return {"step_ms": 1e3 * t_step / n, "topk_ms": 1e3 * t_top / n, "store_ms": 1e3 * t_store / n, "n_items": m.n_items_, "model": m.name}


def make_artifacts(out: Path) -> list[str]:
    """Train the artifacts of the benchmark: GRU4Rec and SASRec on rsc15-100k and on a 100k-item shop."""
    from nextclick.data.dataset import load_sessions
    from nextclick.data.preprocess import PrepareOptions, prepare
    from nextclick.data.synthetic import ShopConfig, generate_shop
    from nextclick.models import available_models, create_model

    dirs = []
    rsc = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "rsc15-100k" / "train_full.tsv"
    tr, _ = load_sessions(rsc, "train")
    shop = generate_shop(ShopConfig(n_sessions=600_000, n_items=110_000, n_categories=24, zipf_a=0.9, seed=2))
    ds = prepare(shop.clicks.drop("UserId"), out / "shop100k", PrepareOptions(min_item_support=1))
    big, _ = ds.sessions("train")
    big = big.select(np.arange(big.n_sessions - 40_000, big.n_sessions))  # a brief fit; the catalogue stays 100k-ish
    quick = {"gru4rec": {"n_epochs": 1}, "sasrec": {"n_epochs": 1}}
    for name in ("gru4rec", "sasrec"):
        if name not in available_models():
            continue
        for tag, data in (("rsc15", tr), ("shop100k", big)):
            d = out / f"{name}_{tag}"
            preset = "spec_rsc15" if name == "gru4rec" else None
            params = dict(quick[name])
            if name == "sasrec" and tag == "shop100k":
                params["loss"] = "sampled_ce"  # full softmax over 100k items is the slow path; serving cost is the same
            if (d / "config.json").exists():
                dirs.append(str(d))
                continue
            create_model(name, preset=preset, **params).fit(data).save(d)
            dirs.append(str(d))
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dirs", nargs="*")
    ap.add_argument("--make", action="store_true", help="train the benchmark's GRU4Rec/SASRec artifacts first")
    ap.add_argument("--artifacts", default="runs/serve_bench", help="where --make writes them")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", default="1,4,6,8,16,32")
    ap.add_argument("--model-worker", default="process",
                    help="comma-separated `nextclick serve --model-worker` values to compare (process,thread)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    dirs = list(args.model_dirs)
    if args.make:
        dirs += make_artifacts(Path(args.artifacts))
    rows = []
    for d in dirs:
        import httpx

        from nextclick.models.base import Recommender

        m = Recommender.load(d)
        ids = m.vocab_.ids[np.argsort(-m.popularity_[1:])[:2000]]  # clicks on the head of the catalogue
        lua = Path(tempfile.mkdtemp()) / "click.lua"
        lua.write_text(LUA % (",".join(str(int(x)) for x in ids), os.getpid()))
        mic = micro(d)
        for mode in args.model_worker.split(","):
            proc, url = start_service(Path(d), "--model-worker", mode)
            try:
                model_pid = httpx.get(f"{url}/readyz").json().get("model_pid")
                pids = [proc.pid] + ([model_pid] if model_pid and model_pid != proc.pid else [])
                subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", str(lua), url], capture_output=True, check=True)  # warm-up
                for c in [int(x) for x in args.connections.split(",")]:
                    before, cpu0, t0 = server_sums(url), cpu_seconds(pids), time.perf_counter()
                    out = subprocess.run(
                        ["wrk", "-t1", f"-c{c}", f"-d{args.duration}s", "--timeout", "2s", "--latency", "-s", str(lua), url],
                        capture_output=True, text=True, check=True,
                    ).stdout
                    cpu = [(b - a) / (time.perf_counter() - t0) for a, b in zip(cpu0, cpu_seconds(pids))]
                    rows.append((m.name, m.n_items_, mode, c, parse_wrk(out), breakdown(before, server_sums(url)), cpu, mic))
            finally:
                stop(proc)
    print(f"\nwrk on loopback, 1 wrk thread, {args.duration} s per run, POST /v1/sessions/{{id}}/clicks k=20 "
          "(1,000 concurrent visitors), in-memory store")
    print("| model | items | model worker | connections | req/s | p50 ms | p90 ms | p99 ms | errors | server ms/req | "
          "mean batch | model ms/click | cores: event loop / model process | step ms (B=1) | top-k ms (B=1) | store ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n_items, mode, c, w, br, cpu, mic in rows:
        cores = " / ".join(f"{x:.2f}" for x in cpu)
        print(
            f"| {name} | {n_items:,} | {mode} | {c} | {w['rps']:,.0f} | {w['p50']:.2f} | {w['p90']:.2f} | {w['p99']:.2f} | "
            f"{w['errors']} | {br['server_ms']:.2f} | {br['mean_batch']:.1f} | {br['model_ms_per_click']:.3f} | {cores} | "
            f"{mic['step_ms']:.3f} | {mic['topk_ms']:.3f} | {mic['store_ms']:.3f} |"
        )
    print(json.dumps([{"model": r[0], "items": r[1], "worker": r[2], "c": r[3], **r[4]} for r in rows]))


if __name__ == "__main__":
    main()
