#!/usr/bin/env bash
# The same Optuna budget for every model on rsc15-100k: 12 TPE trials (seed 0), each trained on
# train_tr and scored by MRR@20 on train_valid; the test split is never read. The networks on
# SASRec's trainer run to their own epoch cap with early stopping (patience 3) on their 10%
# hold-out; GRU4Rec trains its fixed 10 epochs from the official rsc15 setting with 512 negatives
# (its earlier 30-trial search); the kNN models are deterministic. Searches run concurrently, one
# torch thread each. Usage: bash benchmarks/tune_rsc15.sh [MODEL...] (default: the six below).
set -euo pipefail
D=${SHARED:-../shared}/data/rsc15-100k
TRIALS=${TRIALS:-12}
OUT=${OUT:-runs/tune-nn}
mkdir -p "$OUT"
for m in ${@:-narm stamp srgnn bert4rec sasrec gru4rec}; do
  case $m in
    gru4rec) fixed=(--preset official_rsc15 -p n_sample=512 -p n_threads=1) ;;
    vsknn | stan | vstan) fixed=() ;;
    *) fixed=(-p patience=3 -p progress=false -p n_threads=1) ;;
  esac
  nextclick tune "$m" --train "$D/train_tr.tsv" --valid "$D/train_valid.tsv" \
    --space "benchmarks/spaces/$m.json" --trials "$TRIALS" --seed 0 --metric mrr@20 "${fixed[@]}" \
    --storage "sqlite:///$OUT/$m.db" --out "$OUT/$m" > "$OUT/$m.log" 2>&1 &
done
wait
