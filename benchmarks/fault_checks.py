"""What benchmarks/faults.py reads and checks: the services' /metrics, process memory, the load
client's record of every attempt, and the sessions' records against the clicks acknowledged."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


def scrape(url: str) -> dict[str, float]:
    """The service's /metrics as {'name{labels}': value}."""
    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def slow_clicks(before: dict, after: dict) -> str:
    """How many clicks the service itself took over 0.5 s to answer, from its latency histogram
    (tells a stall in the service from one in the client or the machine)."""
    n, le = 'nextclick_request_seconds_count{endpoint="clicks"}', 'nextclick_request_seconds_bucket{endpoint="clicks",le="0.5"}'
    slow = (after.get(n, 0) - before.get(n, 0)) - (after.get(le, 0) - before.get(le, 0))
    return f"{slow:.0f} clicks over 0.5 s inside the service"


def server_pct(a: dict, b: dict) -> str:
    """The service's own click time between two scrapes, p50 / p99, as the upper bounds of the
    histogram buckets holding them ("2 / 20 ms": p50 <= 2 ms, p99 <= 20 ms)."""
    pre = 'nextclick_request_seconds_bucket{endpoint="clicks",le="'
    les = sorted((float(k[len(pre):-2]), k) for k in b if k.startswith(pre) and "Inf" not in k)
    n = 'nextclick_request_seconds_count{endpoint="clicks"}'
    total = b.get(n, 0) - a.get(n, 0)
    out = []
    for q in (0.5, 0.99):
        le = next((f"{1e3 * x:g}" for x, k in les if b[k] - a.get(k, 0) >= q * total), ">1000")
        out.append(le)
    return " / ".join(out) + " ms"


def rss_mib(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def status_counts(res: dict) -> tuple[int, str]:
    """(200s, the other outcomes by status: '503: 12, conn error: 3')."""
    names = {-1: "conn error", -2: "client timeout (5 s)"}
    c = Counter(int(s) for s in res["status"])
    ok = c.pop(200, 0)
    failed = ", ".join(f"{names.get(k, str(k))}: {v:,}" for k, v in sorted(c.items())) or "none"
    return ok, failed


def load_held(res: dict, duration: float) -> str:
    return f"{len(res['status']) / duration:,.0f} req/s for {duration:g} s"


def lost_clicks(acked: list, stored: list, n_clicks: int, ordered: bool = True) -> int:
    """Acknowledged clicks missing from a session's record: ``stored`` holds the last clicks
    written (oldest first) out of ``n_clicks``, which may include clicks written but not
    acknowledged (a retry after a lost answer). The i-th acknowledged click was at least the i-th
    written, so those from index ``n_clicks - len(stored)`` on are surely within the record and
    must appear in it, in order (``ordered=False``: clicks sent at the same time, in any order);
    and the record must count at least as many clicks as were acknowledged."""
    must = acked[max(0, n_clicks - len(stored)):]
    short = max(0, len(acked) - n_clicks)
    if not ordered:
        return max(len(set(must) - set(stored)), short)
    i, missing = len(stored) - 1, 0
    for it in reversed(must):
        j = i
        while j >= 0 and stored[j] != it:
            j -= 1
        if j < 0:
            missing += 1
        else:
            i = j - 1
    return max(missing, short)


def verify_redis(redis_url: str, acked: dict[str, list], ordered: bool = True) -> tuple[int, int, int]:
    """(acknowledged clicks lost, clicks written without an acknowledgement, sessions checked),
    reading every session's record from Redis."""
    import inspect

    import redis

    from nextclick.serve.store import RedisStore, SessionRecord

    prefix = inspect.signature(RedisStore).parameters["prefix"].default
    sids = [s for s, a in acked.items() if a]
    r = redis.Redis.from_url(redis_url)
    pipe = r.pipeline(transaction=False)
    for s in sids:
        pipe.get(prefix + s)
    lost = extra = 0
    for sid, raw in zip(sids, pipe.execute()):
        if raw is None:
            lost += len(acked[sid])
            continue
        rec = SessionRecord.from_bytes(raw)
        lost += lost_clicks(acked[sid], rec.items, rec.n_clicks, ordered)
        extra += max(0, rec.n_clicks - len(acked[sid]))
    r.close()
    return lost, extra, len(sids)


def first_ok_after(res: dict, t: float) -> float:
    """Seconds from ``t`` (into the load) to the first 200 to a request sent after it."""
    done = res["t"] + res["lat"]
    sel = (res["status"] == 200) & (res["t"] > t)
    return float(done[sel].min() - t) if sel.any() else float("nan")


def all_visitors_back(res: dict, t: float) -> float:
    """Seconds from ``t`` until every visitor had had a click sent after it acknowledged."""
    done = res["t"] + res["lat"]
    last = 0.0
    for v in np.unique(res["visitor"]):
        sel = (res["visitor"] == v) & (res["status"] == 200) & (res["t"] > t)
        if not sel.any():
            return float("nan")
        last = max(last, float(done[sel].min()))
    return last - t


def pct(x: np.ndarray) -> str:
    return f"{1e3 * np.percentile(x, 50):.1f} / {1e3 * np.percentile(x, 99):.1f}" if x.size else "-"


def pair(x: tuple[float, float] | None) -> str:
    return "-" if x is None else f"{x[0]:.0f} / {x[1]:.0f}"


def errors(res: dict) -> str:
    """The notes every row ends with: clicks never acknowledged, and what an unexpected status said."""
    return f"; {res['given_up']} clicks never acknowledged" + "".join(f"; a {k} said: {v}" for k, v in res["errors"].items())
