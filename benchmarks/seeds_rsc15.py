"""Accuracy over seeds on rsc15-100k (train_full -> test, full ranking): each model trained once
per seed through the CLI (``nextclick train ... -p seed=S``, then ``nextclick evaluate --json``),
one table with every run and the mean and standard deviation per model. A model is ``name``,
``name:preset`` or ``name@DIR`` (trained with ``--tuned DIR``, a ``nextclick tune`` output); a
model without a ``seed`` setting (popularity, rules, the kNN family) is deterministic and runs
once. ``--jobs`` runs that many fits at a time (one torch thread each).

    python benchmarks/seeds_rsc15.py --models narm,stamp,srgnn,bert4rec --seeds 0,1,2
    python benchmarks/seeds_rsc15.py --jobs 2 --models vstan:tuned_rsc15,narm@runs/tune-nn/narm,sasrec:tuned_rsc15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("recall@20", "mrr@20", "ndcg@20")


def nextclick(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise SystemExit(f"nextclick {' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return p.stdout


def settings(model: str) -> set[str]:
    """The names of ``model``'s hyper-parameters."""
    from nextclick.models import get_model_class

    return {f.name for f in dataclasses.fields(get_model_class(model).Config)}


def parse(spec: str) -> tuple[str, str, str]:
    """``name[:preset]`` or ``name@DIR`` -> (name, preset or "", tune folder or "")."""
    model, _, preset = spec.partition(":")
    model, _, tuned = model.partition("@")
    return model, preset, tuned


def run(spec: str, seed: int | None, data: Path, work: Path, params: list[str]) -> dict:
    model, preset, tuned = parse(spec)
    out = work / f"{model}-{abs(hash(spec))}-{seed}"
    extra = [x for p in params for x in ("-p", p)]
    extra += ["--preset", preset] if preset else []
    extra += ["--tuned", str(ROOT / tuned)] if tuned else []
    extra += ["-p", f"seed={seed}"] if seed is not None else []
    t = time.perf_counter()
    nextclick("train", model, "--train", str(data / "train_full.tsv"), "--out", str(out), *extra)
    fit = time.perf_counter() - t
    res = json.loads(nextclick("evaluate", str(out), "--test", str(data / "test.tsv"), "--json"))
    cfg = json.loads((out / "config.json").read_text())
    curve = cfg.get("training", {}).get("curve", [])
    return {"model": spec, "seed": "-" if seed is None else seed, "fit_s": fit, "epochs": len(curve),
            **{m: res[m] for m in METRICS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="narm,stamp,srgnn,bert4rec")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "rsc15-100k"))
    ap.add_argument("--param", action="append", default=[], help="key=value for every model")
    ap.add_argument("--jobs", type=int, default=1, help="fits at a time")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = [(spec, seed) for spec in args.models.split(",")
            for seed in (seeds if "seed" in settings(parse(spec)[0]) else [None])]

    def one(job: tuple[str, int | None]) -> dict:
        spec, seed = job
        known = settings(parse(spec)[0])
        params = [p for p in ("n_threads=1", "progress=false") if p.partition("=")[0] in known] + args.param
        row = run(spec, seed, Path(args.data), Path(tmp), params)
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, todo))
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
            sd = f"{statistics.stdev(v):.4f}" if len(v) > 1 else "-"
            cells.append(f"{statistics.mean(v):.4f} ({sd})")
        print(f"| {model} | {len(rs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
