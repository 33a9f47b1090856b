"""Benchmark: building the bounded top-k index (nextclick.ranking.bounded.TopK, fp16 mode) for a
dot-product artifact, as the model process does when it loads it: seconds, peak memory, and the
private memory the index keeps. The artifact is loaded with its weights memory-mapped, as served.

    python benchmarks/topk_build.py MODEL_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def rss() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmHWM", "RssAnon"):
            out[key] = int(val.split()[0]) / 1024
    return out


def main() -> None:
    import torch

    from nextclick.models.base import Recommender
    from nextclick.ranking.bounded import TopK

    torch.set_num_threads(1)
    m = Recommender.load(sys.argv[1], mmap=True)
    W, b = m.live().output_layer()
    float(W.sum())  # the mapped matrix read once, so the build does not pay for the page faults
    before = rss()
    t0 = time.perf_counter()
    scorer = TopK(W, b, mode="fp16")
    seconds = time.perf_counter() - t0
    after = rss()
    print(json.dumps({"items": m.n_items_, "rank": scorer.rank, "scan": scorer.scan, "build_s": round(seconds, 1),
                      "peak_rise_mb": round(after["VmHWM"] - before["VmHWM"]),
                      "kept_private_mb": round(after["RssAnon"] - before["RssAnon"])}))


if __name__ == "__main__":
    main()
