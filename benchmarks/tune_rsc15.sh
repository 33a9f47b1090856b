#!/usr/bin/env bash
# The same Optuna budget for every network on rsc15-100k: 12 TPE trials (seed 0), each trained on
# train_tr (its own epoch cap, early stopping with patience 3 on its 10% hold-out) and scored by
# MRR@20 on train_valid; the test split is never read. Usage: bash benchmarks/tune_rsc15.sh [MODEL...]
# (default: narm stamp srgnn bert4rec, run concurrently, one torch thread each).
set -euo pipefail
D=${SHARED:-../shared}/data/rsc15-100k
TRIALS=${TRIALS:-12}
mkdir -p runs/tune-nn
for m in ${@:-narm stamp srgnn bert4rec}; do
  nextclick tune "$m" --train "$D/train_tr.tsv" --valid "$D/train_valid.tsv" \
    --space "benchmarks/spaces/$m.json" --trials "$TRIALS" --seed 0 --metric mrr@20 \
    -p patience=3 -p progress=false -p n_threads=1 \
    --storage "sqlite:///runs/tune-nn/$m.db" --out "runs/tune-nn/$m" > "runs/tune-nn/$m.log" 2>&1 &
done
wait
