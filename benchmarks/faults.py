"""Faults injected into `nextclick serve` under a bounded load on loopback.

Redis and the services run as processes of their own on free ports; the load comes from another
process (benchmarks/fault_load.py: paced visitors, each clicking through sessions one click at a
time, a session's clicks alternating between the replicas). The faults, each on fresh sessions:

- ``pairs`` (no fault): two replicas share one Redis, and each session's clicks come two at a
  time, one on each replica (both read the same record; neither click may be lost);
- ``replica``: one of the two replicas is killed with SIGKILL mid-load (clients fail over);
- ``redis-kill``: Redis (AOF, ``appendfsync always``) is killed with SIGKILL mid-load and started again;
- ``redis-stop``: Redis is stopped with SIGSTOP for a while (it accepts connections but answers
  nothing) and continued;
- ``model``: the model process of the surviving replica is killed with SIGKILL mid-load;
- ``flood``: a service with the in-memory store is flooded with unique session ids.

Every click answered 200 is recorded per session, in order; afterwards each session's record is
read back (from Redis, or for the in-memory store through the API) and every acknowledged click
must be there. Prints one markdown table (and writes it with --out).

    python benchmarks/faults.py [--model DIR] [--quick] [--out FILE] [--faults pairs,replica,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.fault_checks import (  # noqa: E402
    all_visitors_back,
    errors,
    first_ok_after,
    load_held,
    pair,
    pct,
    rss_mib,
    scrape,
    server_pct,
    slow_clicks,
    status_counts,
    verify_redis,
)
from tests.serve.servers import free_port, wait_port  # noqa: E402

LOAD = Path(__file__).resolve().parent / "fault_load.py"
FAULTS = ("pairs", "replica", "redis-kill", "redis-stop", "model", "flood")


@dataclass
class Row:
    fault: str
    load: str
    ok: int
    failed: str
    recover: str
    lost: int
    notes: str


class Cluster:
    """The processes of one run (Redis, services): started here, all stopped by :meth:`close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def _start(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "a")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        log.close()
        self.procs.append(p)
        return p

    def redis(self, port: int) -> subprocess.Popen:
        """Redis with an append-only file fsynced before each reply, so a crash keeps every write it acknowledged."""
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        p = self._start([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                         "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)], "redis")
        wait_port(port, p)
        return p

    def service(self, model: str, name: str, *args: str) -> tuple[subprocess.Popen, str]:
        port = free_port()
        p = self._start([sys.executable, "-m", "nextclick", "serve", model, "--port", str(port), *args], name)
        wait_port(port, p, timeout=60)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        return p, url

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def wait_ready(url: str, timeout: float = 60.0, every: float = 0.02) -> float:
    """Poll /readyz until 200; the monotonic time it first answered 200."""
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as c:
        while time.monotonic() - t0 < timeout:
            try:
                if c.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(every)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def wait_not_ready(url: str, timeout: float = 10.0) -> float:
    """Poll /readyz until it is not 200; the monotonic time then."""
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as c:
        while time.monotonic() - t0 < timeout:
            if c.get(f"{url}/readyz").status_code != 200:
                return time.monotonic()
            time.sleep(0.005)
    raise TimeoutError(f"{url} still ready {timeout} s after its model process was killed")


class Load:
    """One run of the load client (a process of its own), started ``lead`` seconds from now."""

    def __init__(self, workdir: Path, tag: str, urls: list[str], items: list[int], rate: float, duration: float,
                 visitors: int, lead: float = 1.0, **extra: object) -> None:
        self.start_at = time.monotonic() + lead
        self.duration = duration
        hosts = [(u.split("//")[1].split(":")[0], int(u.rsplit(":", 1)[1])) for u in urls]
        spec = {"urls": hosts, "rate": rate, "duration": duration, "visitors": visitors, "start_at": self.start_at,
                "items": items, "prefix": f"{tag}-", **extra}
        self.spec_path, self.out_path = workdir / f"{tag}.spec.json", workdir / f"{tag}.out.json"
        self.spec_path.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, str(LOAD), str(self.spec_path), str(self.out_path)])

    def at(self, t: float) -> float:
        """Sleep until ``t`` seconds into the load; the monotonic time then."""
        time.sleep(max(0.0, self.start_at + t - time.monotonic()))
        return time.monotonic()

    def rel(self, mono: float) -> float:
        return mono - self.start_at

    def result(self) -> dict:
        if self.proc.wait(self.duration + 120) != 0:
            raise RuntimeError(f"the load client failed (exit {self.proc.returncode})")
        res = json.loads(self.out_path.read_text())
        a = np.array(res["attempts"], dtype=float).reshape(-1, 5)
        res["t"], res["lat"], res["status"], res["replica"], res["visitor"] = a.T
        return res


# ---------------------------------------------------------------------- the faults
def concurrent_clicks(cl: Cluster, a: str, b: str, redis_url: str, opt: argparse.Namespace) -> Row:
    """No fault: a session's clicks two at a time, one on each replica (as a page sending two
    events at once). Both replicas read the same record; only one may write it back unchanged."""
    before = [scrape(u) for u in (a, b)]
    load = Load(cl.workdir, "pairs", [a, b], opt.items, opt.rate, opt.seconds, opt.visitors, pairs=True, seed=6)
    res = load.result()
    lost, extra, n = verify_redis(redis_url, res["acked"], ordered=False)
    ok, failed = status_counts(res)
    key = "nextclick_session_conflicts_total"
    redone = sum(scrape(u).get(key, 0) - m.get(key, 0) for u, m in zip((a, b), before))
    notes = (f"{n:,} sessions / {sum(map(len, res['acked'].values())):,} acknowledged clicks checked in Redis "
             f"(in any order within a pair); {key} +{redone:.0f} (clicks redone on the record the other replica "
             f"wrote); {extra} clicks written without an acknowledgement; max latency {1e3 * res['lat'].max():.0f} ms")
    return Row("none: a session's clicks two at a time, one on each replica", load_held(res, opt.seconds), ok, failed,
               "-", lost, notes + errors(res))


def replica_kill(cl: Cluster, a: str, pa: subprocess.Popen, b: str, redis_url: str, opt: argparse.Namespace) -> Row:
    before = scrape(b)
    load = Load(cl.workdir, "replica", [a, b], opt.items, opt.rate, opt.seconds, opt.visitors, seed=1)
    t_kill = load.rel(load.at(opt.seconds * 0.4))
    os.kill(pa.pid, signal.SIGKILL)
    pa.wait()
    res = load.result()
    lost, extra, n = verify_redis(redis_url, res["acked"])
    ok, failed = status_counts(res)
    on_a = int(((res["replica"] == 0) & (res["status"] == -1)).sum())
    in_flight = int(((res["replica"] == 0) & (res["t"] <= t_kill) & (res["t"] + res["lat"] >= t_kill)).sum())
    back = all_visitors_back(res, t_kill)
    notes = (f"replica A SIGKILLed at {t_kill:.1f} s with {in_flight} requests in flight; its {on_a} failed attempts "
             f"(those, and later probes of A) were retried on B at once; "
             f"{n:,} sessions / {sum(map(len, res['acked'].values())):,} acknowledged clicks checked in Redis; "
             f"{extra} clicks written twice (A wrote them, its answer was lost, the client sent them again to B); "
             f"max latency {1e3 * res['lat'].max():.0f} ms ({slow_clicks(before, scrape(b))} B)")
    return Row("replica SIGKILL (2 replicas, 1 Redis)", load_held(res, opt.seconds), ok, failed,
               f"{back:.2f} (every visitor acked again on B)", lost, notes + errors(res))


def redis_fault(cl: Cluster, b: str, pb: subprocess.Popen, redis: subprocess.Popen, port: int, opt: argparse.Namespace,
                pause: bool) -> tuple[Row, subprocess.Popen]:
    """Under load on replica B: Redis killed (SIGKILL) and started again, or stopped (SIGSTOP:
    connections open, nothing answers, each store call waits for its socket timeout) and continued."""
    redis_url, key = f"redis://127.0.0.1:{port}/0", "nextclick_store_unavailable_total"
    before = scrape(b)
    load = Load(cl.workdir, "pause" if pause else "restart", [b], opt.items, opt.rate, opt.seconds, opt.visitors,
                seed=5 if pause else 2)
    t_fault = load.rel(load.at(opt.seconds * 0.3))
    redis.send_signal(signal.SIGSTOP if pause else signal.SIGKILL)
    load.at(t_fault + opt.redis_down)
    if pause:
        redis.send_signal(signal.SIGCONT)
    else:
        redis.wait()
        redis = cl.redis(port)  # the same port and data directory: it loads its append-only file
    t_back = load.rel(time.monotonic())
    res = load.result()
    after = scrape(b)
    unavailable = after.get(key, 0) - before.get(key, 0)
    lost, extra, n = verify_redis(redis_url, res["acked"])
    ok, failed = status_counts(res)
    away = (res["t"] >= t_fault) & (res["t"] <= t_back)
    what = "stopped (SIGSTOP)" if pause else "SIGKILLed"
    notes = (f"Redis {what} at {t_fault:.1f} s, {'continued' if pause else 'serving again (restart + AOF load)'} "
             f"{t_back - t_fault:.1f} s later; max latency {1e3 * res['lat'].max():.0f} ms overall, "
             f"{1e3 * res['lat'][away].max(initial=0):.0f} ms while it was away{' (the 1 s socket timeout, then 503)' if pause else ''} "
             f"({slow_clicks(before, after)}); "
             f"{key} +{unavailable:.0f} ({int((res['status'] == 503).sum())} 503s seen); "
             f"service {'not restarted (same process)' if pb.poll() is None else 'DIED'}; {n:,} sessions checked in Redis "
             f"afterwards; {extra} clicks written without an acknowledgement")
    recover = (f"{first_ok_after(res, t_back):.2f} (first 200 after Redis was back); "
               f"{all_visitors_back(res, t_back):.2f} (every visitor)")
    row = Row("Redis SIGSTOP, SIGCONT" if pause else "Redis SIGKILL, restart", load_held(res, opt.seconds), ok, failed, recover, lost,
              notes + errors(res))
    return row, redis


def model_kill(cl: Cluster, b: str, redis_url: str, opt: argparse.Namespace) -> Row:
    pid = httpx.get(f"{b}/readyz").json()["model_pid"]
    before = scrape(b)
    load = Load(cl.workdir, "model", [b], opt.items, opt.rate, opt.seconds, opt.visitors, seed=3)
    t0 = load.at(opt.seconds * 0.3)
    os.kill(pid, signal.SIGKILL)
    t_noticed = wait_not_ready(b)
    t_ready = wait_ready(b, timeout=60, every=0.01)
    new_pid = httpx.get(f"{b}/readyz").json()["model_pid"]
    res = load.result()
    lost, extra, n = verify_redis(redis_url, res["acked"])
    ok, failed = status_counts(res)
    t_kill = load.rel(t0)
    during = (res["t"] >= t_kill) & (res["t"] <= load.rel(t_ready))
    notes = (f"model process {pid} SIGKILLed at {t_kill:.1f} s (/readyz 503 {1e3 * (t_noticed - t0):.0f} ms later), "
             f"replaced by {new_pid}; "
             f"{int((res['status'][during] != 200).sum())} of {int(during.sum())} requests failed until /readyz said ready; "
             f"first 200 to a request sent after that at +{first_ok_after(res, load.rel(t_noticed)) + (t_noticed - t0):.2f} s "
             f"from the kill; max latency {1e3 * res['lat'].max():.0f} ms ({slow_clicks(before, scrape(b))}); "
             f"{n:,} sessions checked in Redis; {extra} clicks written without an acknowledgement")
    return Row("model process SIGKILL", load_held(res, opt.seconds), ok, failed,
               f"{t_ready - t0:.2f} (to /readyz 200)", lost, notes + errors(res))


def flood(cl: Cluster, opt: argparse.Namespace) -> Row:
    m = opt.max_sessions
    pc, c = cl.service(opt.model, "flood", "--max-sessions", str(m))
    model_pid = httpx.get(f"{c}/readyz").json()["model_pid"]
    rss0, before = (rss_mib(pc.pid), rss_mib(model_pid)), scrape(c)
    live = max(opt.visitors // 6, 1)
    load = Load(cl.workdir, "flood", [c], opt.items, opt.flood_rate, opt.flood_seconds, opt.visitors + live,
                flood_visitors=opt.visitors, seed=4)
    full_at, rss_full, peak = None, None, 0.0
    samples, snaps = [], []  # RSS, and (seconds into the load, /metrics), every second
    while time.monotonic() < load.start_at + opt.flood_seconds:
        time.sleep(1.0)
        met = scrape(c)
        snaps.append((load.rel(time.monotonic()), met))
        peak = max(peak, met.get("nextclick_sessions", 0))
        samples.append((rss_mib(pc.pid), rss_mib(model_pid)))
        if full_at is None and met.get("nextclick_sessions_evicted_total", 0) > 0:
            full_at, rss_full = load.rel(time.monotonic()), samples[-1]
    res = load.result()
    met = scrape(c)
    at = lambda t: next((m for s, m in snaps if s >= t), met)  # noqa: E731  (the first scrape from t on)
    inside = (f"inside the service {server_pct(at(5), at(full_at or opt.flood_seconds))} and "
              f"{server_pct(at(0.8 * opt.flood_seconds), met)}")
    rss_end = (rss_mib(pc.pid), rss_mib(model_pid))
    lost, held = _verify_memory(c, res, m)
    ok, failed = status_counts(res)
    lat, t = res["lat"][res["status"] == 200], res["t"][res["status"] == 200]
    early = lat[(t >= 5) & (t < (full_at or opt.flood_seconds))]
    late = lat[t >= 0.8 * opt.flood_seconds]
    sessions = sum(1 for sid in res["acked"] if res["acked"][sid])
    rss_peak = max(s[0] for s in samples) if samples else float("nan")
    notes = (f"in-memory store, --max-sessions {m:,}: {sessions:,} sessions written ({opt.visitors} visitors with "
             f"one-click sessions, {live} with 5-30 clicks), nextclick_sessions_evicted_total "
             f"{met.get('nextclick_sessions_evicted_total', 0):,.0f}, nextclick_sessions at most {peak:,.0f}; "
             f"store full at {full_at if full_at is None else round(full_at, 1)} s; RSS MiB service / model process: "
             f"{rss0[0]:.0f} / {rss0[1]:.0f} before, {pair(rss_full)} when full, {rss_end[0]:.0f} / {rss_end[1]:.0f} at the end "
             f"(service peak {rss_peak:.0f}); click p50 / p99 ms from 5 s until the store was full "
             f"{pct(early)}, last fifth {pct(late)} ({inside}; {slow_clicks(before, met)}); {held:,} sessions the store must still hold checked via the API")
    return Row("flood of unique session ids", load_held(res, opt.flood_seconds), ok, failed, "-", lost,
               notes + errors(res))


def _verify_memory(url: str, res: dict, m: int) -> tuple[int, int]:
    """(acknowledged clicks lost, sessions checked) among the sessions the LRU must still hold:
    the most recently written, short of the bound by a margin for writes in flight at the end."""
    recent = sorted(res["last_ack"], key=res["last_ack"].get, reverse=True)[: max(m - 200, 0)]
    live = [s for s in recent if "-v" in s]
    seen = set(live)
    check = live + [s for s in recent[:2000] if s not in seen]
    lost = 0
    with httpx.Client(base_url=url, timeout=10) as c:
        for sid in check:
            n = c.get(f"/v1/sessions/{sid}/recommendations", params={"k": 1}).json()["n_clicks"]
            lost += max(0, len(res["acked"][sid]) - n)
    return lost, len(check)


# ---------------------------------------------------------------------- the run
def make_model(out: Path) -> str:
    """A small GRU4Rec (a state per session, stored with its clicks) on a synthetic shop: seconds to train."""
    from nextclick.data.preprocess import PrepareOptions, prepare
    from nextclick.data.synthetic import ShopConfig, generate_shop
    from nextclick.models import create_model

    shop = generate_shop(ShopConfig(n_sessions=20_000, n_items=3_000, n_categories=12, seed=7))
    train, _ = prepare(shop.clicks.drop("UserId"), out / "data", PrepareOptions()).sessions("train")
    return str(create_model("gru4rec", n_epochs=1, layers=(64,), batch_size=64, n_sample=256).fit(train).save(out / "gru4rec"))


def table(rows: list[Row]) -> str:
    out = ["| fault | load held | requests ok | failed (status: count) | time to recover (s) | acknowledged clicks lost | notes |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r.fault} | {r.load} | {r.ok:,} | {r.failed} | {r.recover} | {r.lost} | {r.notes} |" for r in rows]
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="artifact to serve (default: a small GRU4Rec trained first, in seconds)")
    ap.add_argument("--quick", action="store_true", help="shorter runs, a smaller store bound")
    ap.add_argument("--out", help="also write the table (with the command, date and commit) to this file")
    ap.add_argument("--rate", type=float, default=200, help="requests/s of the first three faults")
    ap.add_argument("--seconds", type=float, default=20, help="load per fault (first three)")
    ap.add_argument("--visitors", type=int, default=32)
    ap.add_argument("--redis-down", type=float, default=2.0, help="seconds Redis stays away")
    ap.add_argument("--flood-rate", type=float, default=600)
    ap.add_argument("--flood-seconds", type=float, default=60)
    ap.add_argument("--max-sessions", type=int, default=15_000, help="the flooded in-memory store's bound")
    ap.add_argument("--faults", default=",".join(FAULTS), help=f"which to run, in this order: {','.join(FAULTS)}")
    opt = ap.parse_args()
    opt.faults = opt.faults.split(",")
    if not set(opt.faults) <= set(FAULTS):
        ap.error(f"--faults: choose among {','.join(FAULTS)}")
    if opt.quick:
        opt.seconds, opt.flood_seconds, opt.flood_rate, opt.max_sessions = 10, 25, 400, 4_000
    return opt


def main() -> None:
    opt = parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    from nextclick.models.base import Recommender

    workdir = Path(tempfile.mkdtemp(prefix="nextclick-faults-"))
    opt.model = opt.model or make_model(workdir)
    m = Recommender.load(opt.model)
    opt.items = [int(x) for x in m.vocab_.ids[np.argsort(-m.popularity_[1:])[:1000]]]
    cl = Cluster(workdir)
    rows = []
    load_avg, started = os.getloadavg(), time.gmtime()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    commit += " (with uncommitted changes)" if dirty else ""
    try:
        if set(opt.faults) - {"flood"}:  # two replicas on one Redis
            port = free_port()
            redis, url = cl.redis(port), f"redis://127.0.0.1:{port}/0"
            args = ("--store", "redis", "--redis-url", url)
            (pa, a), (pb, b) = cl.service(opt.model, "a", *args), cl.service(opt.model, "b", *args)
        if "pairs" in opt.faults:
            rows.append(concurrent_clicks(cl, a, b, url, opt))
        if "replica" in opt.faults:
            rows.append(replica_kill(cl, a, pa, b, url, opt))
        for pause in [p for p, name in ((False, "redis-kill"), (True, "redis-stop")) if name in opt.faults]:
            row, redis = redis_fault(cl, b, pb, redis, port, opt, pause)
            rows.append(row)
        if "model" in opt.faults:
            rows.append(model_kill(cl, b, url, opt))
        if "flood" in opt.faults:
            rows.append(flood(cl, opt))
    finally:
        cl.close()
    out = table(rows)
    print(out)
    if opt.out:
        head = (f"`python benchmarks/faults.py {' '.join(sys.argv[1:])}` at {commit}, "
                f"started {time.strftime('%Y-%m-%d %H:%M UTC', started)}, model {m.name} ({m.n_items_:,} items), "
                f"{os.cpu_count()} cores, load average {load_avg[0]:.1f} before / {os.getloadavg()[0]:.1f} after\n\n")
        Path(opt.out).write_text(head + out + "\n")
    print(f"logs in {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
