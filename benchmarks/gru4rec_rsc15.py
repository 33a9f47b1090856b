"""GRU4Rec on rsc15-100k (train_full -> test): accuracy, training speed and peak memory per preset,
printed beside the official implementation's reference figures (measured on this kind of machine,
quoted from the GRU4Rec issue; the official code is not run here).

Each configuration is trained in a fresh subprocess so its peak RSS is its own. The speed of
this shared virtual machine drifts by tens of percent over minutes, so before each configuration
the script also measures a fixed float32 matrix product (numpy, one and two threads) and prints
it in the last column: compare training times only between rows with similar calibration.

    python benchmarks/gru4rec_rsc15.py [--seeds 42,1,2] [--configs spec_rsc15,spec_rsc15_n512,official_rsc15,official_retailrocket]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from nextclick.data.dataset import load_sessions
from nextclick.evaluate import evaluate
from nextclick.models.gru4rec.model import GRU4Rec
preset, seed, extra = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
p = "../shared/data/rsc15-100k/"
tr, _ = load_sessions(p + "train_full.tsv", "train")
te, _ = load_sessions(p + "test.tsv", "test", vocab=tr.vocab)
m = GRU4Rec.from_preset(preset, seed=seed, **extra)
t = time.perf_counter(); m.fit(tr); fit = time.perf_counter() - t
r = evaluate(m, te).metrics
events = int((tr.lengths - 1).sum()) * m.config.n_epochs
print(json.dumps({"fit": fit, "ev_s": events / fit, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "r20": r["recall@20"], "m20": r["mrr@20"], "r5": r["recall@5"], "m5": r["mrr@5"], "eval_s": r["eval_seconds"]}))
"""

CALIBRATE = r"""
import json, time, numpy as np
from threadpoolctl import threadpool_limits
a = np.random.default_rng(0).random((512, 512), dtype=np.float32)
out = {}
for th in (1, 2):
    with threadpool_limits(th, user_api="blas"):
        a @ a
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < 0.5:
            a @ a
            n += 1
        out[th] = 2 * 512**3 * n / (time.perf_counter() - t) / 1e9
print(json.dumps(out))
"""


def calibrate() -> str:
    """GFLOP/s of a 512 x 512 float32 product with one and two BLAS threads, right now."""
    out = subprocess.run([sys.executable, "-c", CALIBRATE], capture_output=True, text=True, check=True)
    g = json.loads(out.stdout)
    return f"{g['1']:.0f} / {g['2']:.0f}"


# name: (preset, extra params, label, official reference row from the GRU4Rec issue or None)
REF_XE2048 = (0.676, 0.357, 0.509, 0.339, 71, 7.4, 1.1)
REF_XE512 = (0.679, 0.366, 0.516, 0.349, 47, 11, 0.86)
REF_BPR = (0.687, 0.366, 0.522, 0.349, 83, 6.3, 1.2)
CONFIGS = {
    "spec_rsc15": ("spec_rsc15", {}, "cross-entropy, the first specification's RSC15 values, n_sample 2048", REF_XE2048),
    "official_rsc15": ("official_rsc15", {}, "cross-entropy, official rsc15 paramfile, n_sample 2048", REF_XE2048),
    "spec_rsc15_n512": ("spec_rsc15", {"n_sample": 512}, "cross-entropy, the first specification's RSC15 values, n_sample 512", REF_XE512),
    "official_rsc15_n512": ("official_rsc15", {"n_sample": 512}, "cross-entropy, official rsc15 paramfile, n_sample 512", REF_XE512),
    "tuned_rsc15": ("tuned_rsc15", {}, "cross-entropy, tuned_rsc15 (chosen on train_tr -> valid), n_sample 512", REF_XE512),
    "official_retailrocket": ("official_retailrocket", {}, "BPR-max, RetailRocket preset", REF_BPR),
    "tuned_rsc15_bprmax": ("tuned_rsc15_bprmax", {}, "BPR-max, tuned_rsc15_bprmax (chosen on train_tr -> valid)", REF_BPR),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=1, help="n_threads: threads of the training step's compiled phases")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print("| run | seeds | Recall@20 | MRR@20 | Recall@5 | MRR@5 | training s | events/s | x official | peak RSS GB | eval s | GFLOP/s 1 / 2 threads |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    per_seed = []
    for name in args.configs.split(","):
        preset, extra, label, ref = CONFIGS[name]
        extra = {**extra, "n_threads": args.threads}
        res = []
        cal = calibrate()
        for seed in seeds:
            out = subprocess.run([sys.executable, "-c", CHILD, preset, str(seed), json.dumps(extra)], capture_output=True, text=True, check=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
        mean = {k: sum(r[k] for r in res) / len(res) for k in res[0]}
        ratio = f"{mean['ev_s'] / (ref[5] * 1000):.2f}" if ref else "-"
        print(f"| nextclick: {label} | {','.join(map(str, seeds))} | {mean['r20']:.4f} | {mean['m20']:.4f} | {mean['r5']:.4f} | {mean['m5']:.4f} | "
              f"{mean['fit']:.1f} | {mean['ev_s'] / 1000:.1f}k | {ratio} | {max(r['rss_mb'] for r in res) / 1024:.2f} | {mean['eval_s']:.2f} | {cal} |")
        if ref:
            print(f"| official (reference): {label.split(',')[0]}, issue table | - | {ref[0]:.3f} | {ref[1]:.3f} | {ref[2]:.3f} | {ref[3]:.3f} | {ref[4]} | {ref[5]}k | 1 | {ref[6]} | - | - |")
        per_seed.append(f"{name}: " + ", ".join(f"{s} {r['r20']:.4f}/{r['m20']:.4f} ({r['fit']:.1f} s)" for s, r in zip(seeds, res)))
    print("\nper seed (Recall@20/MRR@20, training s): " + "; ".join(per_seed))


if __name__ == "__main__":
    main()
