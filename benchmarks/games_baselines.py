"""The models that need no epochs (popularity, rules, the kNN family) on amazon-games, with the
protocol of ``benchmarks/sasrec_amazon.py``: leave-one-out, fitted on the training split, each
user's last click predicted once from the whole history before it, full-ranking Recall@10 /
NDCG@10 beside the paper's sampled HR@10 / NDCG@10 (100 unseen items, the same draw as the
networks'). These models are deterministic: one run each.

    python benchmarks/games_baselines.py --models pop,sr,vsknn:tuned_rsc15,stan:tuned_rsc15,vstan:tuned_rsc15
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sasrec_amazon import SHARED, load_games  # noqa: E402
from nextclick.evaluate import evaluate  # noqa: E402
from nextclick.models import get_model_class  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="pop,sr,vsknn:tuned_rsc15,stan:tuned_rsc15,vstan:tuned_rsc15",
                    help="comma-separated name or name:preset")
    ap.add_argument("--source", default=str(SHARED / "amazon-games" / "sequences.txt"))
    ap.add_argument("--prepared", help="keep the prepared dataset in this directory (default: a temp dir)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    train, _, test = load_games(args.source, args.prepared)
    print(f"amazon-games: {train.n_sessions:,} training sequences, {test.n_predictions():,} test users", flush=True)
    print("| model | fit s | test HR@10 (sampled) | test NDCG@10 (sampled) | test Recall@10 (full) | test NDCG@10 (full) |")
    print("|---|---|---|---|---|---|")
    out = []
    for spec in args.models.split(","):
        name, _, preset = spec.partition(":")
        model = get_model_class(name).from_preset(preset or None)
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        res = evaluate(model, test, cutoffs=(10,), sampled_negatives=100, seed=0)
        m, s = res.metrics, res.sampled
        out.append({"model": spec, "fit_seconds": fit_s, "test_sampled_hr@10": s["hr@10"], "test_sampled_ndcg@10": s["ndcg@10"],
                    "test_full_recall@10": m["recall@10"], "test_full_ndcg@10": m["ndcg@10"]})
        print(f"| {spec} | {fit_s:.1f} | {s['hr@10']:.4f} | {s['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
