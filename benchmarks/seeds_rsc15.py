"""Accuracy over seeds on rsc15-100k (train_full -> test, full ranking): each model trained once
per seed through the CLI (``nextclick train ... -p seed=S``, then ``nextclick evaluate --json``),
one table with every run and the mean and standard deviation per model.

    python benchmarks/seeds_rsc15.py --models narm,stamp,srgnn,bert4rec --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("recall@20", "mrr@20", "ndcg@20")


def nextclick(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"nextclick {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def run(model: str, seed: int, data: Path, work: Path, params: list[str]) -> dict:
    out = work / f"{model}-{seed}"
    extra = [x for p in params for x in ("-p", p)]
    t = time.perf_counter()
    nextclick("train", model, "--train", str(data / "train_full.tsv"), "--out", str(out), "-p", f"seed={seed}", *extra)
    fit = time.perf_counter() - t
    res = json.loads(nextclick("evaluate", str(out), "--test", str(data / "test.tsv"), "--json"))
    cfg = json.loads((out / "config.json").read_text())
    curve = cfg.get("training", {}).get("curve", [])
    return {"model": model, "seed": seed, "fit_s": fit, "epochs": len(curve), **{m: res[m] for m in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="narm,stamp,srgnn,bert4rec")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "rsc15-100k"))
    ap.add_argument("--param", action="append", default=["n_threads=1", "progress=false"], help="key=value for every model")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(run(model, seed, Path(args.data), Path(tmp), args.param))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| model | seed | epochs | fit s | Recall@20 | MRR@20 | NDCG@20 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['seed']} | {r['epochs']} | {r['fit_s']:.0f} | "
              + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    print("\n| model | seeds | Recall@20 mean (sd) | MRR@20 mean (sd) | NDCG@20 mean (sd) |")
    print("|---|---|---|---|---|")
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == model]
        cells = []
        for m in METRICS:
            v = [r[m] for r in rs]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.4f} ({sd:.4f})")
        print(f"| {model} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
