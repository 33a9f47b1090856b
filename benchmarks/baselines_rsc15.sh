#!/usr/bin/env bash
# Train and evaluate every baseline on rsc15-100k train_full -> test with the CLI.
# Usage: bash benchmarks/baselines_rsc15.sh [DATA_DIR] [OUT_DIR]
set -euo pipefail
DATA=${1:-../shared/data/rsc15-100k}
OUT=${2:-runs/bench_rsc15}
mkdir -p "$OUT"
echo "| model | preset | Recall@5 | MRR@5 | Recall@20 | MRR@20 | NDCG@20 | predictions | train s | eval s |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for spec in pop: spop: sr: sr:transitions vsknn: vsknn:tuned_rsc15; do
  model=${spec%%:*}; preset=${spec#*:}
  dir="$OUT/${model}${preset:+_$preset}"
  nextclick train "$model" --train "$DATA/train_full.tsv" --out "$dir" ${preset:+--preset "$preset"} >/dev/null 2>&1
  nextclick evaluate "$dir" --test "$DATA/test.tsv" --json | python -c "
import json,sys; m=json.load(sys.stdin); c=json.load(open('$dir/config.json'))
print(f\"| $model | ${preset:--} | {m['recall@5']:.4f} | {m['mrr@5']:.4f} | {m['recall@20']:.4f} | {m['mrr@20']:.4f} | {m['ndcg@20']:.4f} | {m['n_predictions']:,} | {c['fit_seconds']:.2f} | {m['eval_seconds']:.2f} |\")"
done
