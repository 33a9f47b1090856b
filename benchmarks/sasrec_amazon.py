"""SASRec benchmarks: the paper's protocol on amazon-games, and rsc15-100k with the core evaluator.
``--model`` runs any network on SASRec's trainer (narm, stamp, srgnn, bert4rec) the same way.

amazon-games (Kang & McAuley 2018, Table III: HR@10 = 0.7410, NDCG@10 = 0.5360 with 100 sampled
negatives): prepares the data (leave-one-out, repeats kept, no filtering -- the same as
``nextclick prepare sequences.txt --split loo --keep-repeats --min-item-support 1
--min-session-length 1``), trains with early stopping on the VALIDATION split, then evaluates the
restored best model once on the test split. Prints per-epoch time, the training time until the
validation figures first reach the paper's, and a table of sampled HR@10 / NDCG@10 (labelled as
sampled) beside full-ranking Recall@10 / NDCG@10.

rsc15-100k: picks the number of epochs on train_tr -> train_valid (early stopping on Recall@20),
retrains on train_full for that many epochs and reports test Recall@20 / MRR@20 (full ranking).

Examples (run from the repository root)::

    python benchmarks/sasrec_amazon.py --loss bce --preset paper          # the paper's model
    python benchmarks/sasrec_amazon.py --loss ce --preset paper_ce --eval-every 1
    python benchmarks/sasrec_amazon.py --dataset rsc15 --param dropout=0.2
    python benchmarks/sasrec_amazon.py --speed 3                          # seconds per epoch only
    python benchmarks/sasrec_amazon.py --model srgnn --eval-every 1 --patience 3
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nextclick.data.dataset import load_sessions  # noqa: E402
from nextclick.data.preprocess import PrepareOptions, prepare  # noqa: E402
from nextclick.data.sessions import Sessions  # noqa: E402
from nextclick.evaluate import evaluate  # noqa: E402
from nextclick.models import get_model_class  # noqa: E402
from nextclick.models.base import parse_params  # noqa: E402
from nextclick.models.sasrec.model import SASRec  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
PAPER = {"hr@10": 0.7410, "ndcg@10": 0.5360}


def prepare_games(source: Path, out: Path) -> Path:
    if not (out / "meta.json").exists():
        opts = PrepareOptions(split="loo", drop_repeats=False, min_item_support=1, min_session_length=1)
        prepare(source, out, opts)
    return out


def load_games(source: str, prepared: str | None) -> tuple[Sessions, Sessions, Sessions]:
    """amazon-games' train, valid and test splits, prepared into ``prepared`` (kept) or a temp dir."""
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare_games(Path(source), Path(prepared) if prepared else Path(tmp) / "games")
        train, _ = load_sessions(data, "train")
        valid, _ = load_sessions(data, "valid", vocab=train.vocab)
        test, _ = load_sessions(data, "test", vocab=train.vocab)
    return train, valid, test


def build(args: argparse.Namespace, **extra) -> SASRec:
    cls = get_model_class(args.model)
    if not issubclass(cls, SASRec):
        raise SystemExit(f"--model {args.model}: not a network on SASRec's trainer")
    params = parse_params(cls.Config, args.param)
    params.update(extra)
    if args.loss:
        params["loss"] = args.loss
    if args.threads:
        params["n_threads"] = args.threads
    return cls.from_preset(args.preset, **params)


def first_reaching(history: list[dict], target: dict[str, float]) -> dict | None:
    for rec in history:
        v = rec.get("valid", {})
        if all(v.get(f"sampled_{k}", -1.0) >= x for k, x in target.items()):
            return rec
    return None


def run_games(args: argparse.Namespace) -> dict:
    train, valid, test = load_games(args.source, args.prepared)
    print(f"amazon-games: {train.n_sessions:,} training sequences, {train.n_events:,} clicks, "
          f"{train.n_items:,} items; {test.n_predictions():,} test users", flush=True)
    if args.speed:
        model = build(args, n_epochs=args.speed, patience=0)
        model.fit(train)
        times = [r["epoch_seconds"] for r in model.history_]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
        print(f"seconds per epoch ({model.config.loss}, {args.threads or torch.get_num_threads()} torch threads): "
              + ", ".join(f"{t:.2f}" for t in times) + f"; peak RSS {rss:.2f} GiB")
        return {"epoch_seconds": times, "peak_rss_gib": rss}
    extra = {"valid_metric": args.valid_metric, "eval_every": args.eval_every, "patience": args.patience}
    if args.epochs:
        extra["n_epochs"] = args.epochs
    model = build(args, **extra)
    print(f"config: {json.dumps(model.config.__dict__)}", flush=True)
    t0 = time.perf_counter()
    model.fit(train, valid)
    wall = time.perf_counter() - t0
    hist = model.history_
    for rec in hist:
        if "valid" in rec:
            v = rec["valid"]
            print(f"  epoch {rec['epoch']:>3}  loss {rec['loss']:.4f}  train {rec['train_seconds']:7.1f}s  valid: "
                  f"sampled HR@10 {v['sampled_hr@10']:.4f} NDCG@10 {v['sampled_ndcg@10']:.4f} | "
                  f"full Recall@10 {v['recall@10']:.4f} NDCG@10 {v['ndcg@10']:.4f}")
    reached = first_reaching(hist, PAPER)
    epoch_s = sum(r["epoch_seconds"] for r in hist) / len(hist)
    res = evaluate(model, test, cutoffs=(10, 20), sampled_negatives=100, seed=0)
    m, s = res.metrics, res.sampled
    out = {
        "model": args.model, "loss": model.config.loss, "preset": args.preset, "epochs_run": len(hist), "best_epoch": model.best_epoch_,
        "epoch_seconds": epoch_s, "fit_wall_seconds": wall,
        "train_seconds_to_paper_valid": reached["train_seconds"] if reached else None,
        "epoch_to_paper_valid": reached["epoch"] if reached else None,
        "test_sampled_hr@10": s["hr@10"], "test_sampled_ndcg@10": s["ndcg@10"],
        "test_full_recall@10": m["recall@10"], "test_full_ndcg@10": m["ndcg@10"],
        "test_full_recall@20": m["recall@20"], "test_full_mrr@20": m["mrr@20"],
    }
    print()
    print(f"per-epoch training time: {epoch_s:.2f} s ({args.threads or torch.get_num_threads()} torch threads); fit wall time "
          f"{wall:.0f} s for {len(hist)} epochs (best epoch {model.best_epoch_}, weights restored)")
    if reached:
        print(f"validation reached the paper's HR@10 >= {PAPER['hr@10']} and NDCG@10 >= {PAPER['ndcg@10']} (sampled) "
              f"at epoch {reached['epoch']}, after {reached['train_seconds']:.0f} s of training")
    else:
        print("validation never reached the paper's sampled HR@10 / NDCG@10")
    print()
    print("| model | loss | preset | epochs (best) | s/epoch | s to paper (valid) | sampled HR@10 | sampled NDCG@10 "
          "| full Recall@10 | full NDCG@10 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ttp = f"{out['train_seconds_to_paper_valid']:.0f}" if reached else "not reached"
    print(f"| {args.model} | {out['loss']} | {args.preset or '-'} | {len(hist)} ({model.best_epoch_}) | {epoch_s:.1f} | {ttp} "
          f"| {s['hr@10']:.4f} | {s['ndcg@10']:.4f} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |")
    if args.refit:
        # protocol variant (not the paper's): a fresh model trained on train + validation clicks for the
        # number of epochs chosen on validation, then tested once
        refit = build(args, n_epochs=model.best_epoch_, patience=0)
        t0 = time.perf_counter()
        refit.fit(valid)
        r2 = evaluate(refit, test, cutoffs=(10, 20), sampled_negatives=100, seed=0)
        m2, s2 = r2.metrics, r2.sampled
        out.update({"refit_seconds": time.perf_counter() - t0, "refit_test_sampled_hr@10": s2["hr@10"],
                    "refit_test_sampled_ndcg@10": s2["ndcg@10"], "refit_test_full_recall@10": m2["recall@10"],
                    "refit_test_full_ndcg@10": m2["ndcg@10"]})
        print(f"| {args.model} | {out['loss']} refit on train+valid | {args.preset or '-'} | {model.best_epoch_} | "
              f"{out['refit_seconds'] / model.best_epoch_:.1f} | - | {s2['hr@10']:.4f} | {s2['ndcg@10']:.4f} "
              f"| {m2['recall@10']:.4f} | {m2['ndcg@10']:.4f} |")
    print("(sampled = target ranked against 100 uniformly sampled items the user never interacted with, the paper's "
          "protocol; full = against all items)")
    return out


def run_rsc15(args: argparse.Namespace) -> dict:
    folder = Path(args.source)
    tr, _ = load_sessions(folder / "train_tr.tsv", "train")
    va, _ = load_sessions(folder / "train_valid.tsv", "valid", vocab=tr.vocab)
    extra = {"valid_metric": args.valid_metric, "eval_every": args.eval_every, "patience": args.patience,
             "valid_negatives": 0}
    if args.epochs:
        extra["n_epochs"] = args.epochs
    model = build(args, **extra).fit(tr, va)
    for rec in model.history_:
        if "valid" in rec:
            v = rec["valid"]
            print(f"  epoch {rec['epoch']:>3}  loss {rec['loss']:.4f}  {rec['epoch_seconds']:.1f}s  valid Recall@20 "
                  f"{v['recall@20']:.4f} MRR@20 {v['mrr@20']:.4f}", flush=True)
    n_epochs = model.best_epoch_
    best_valid = model.history_[n_epochs - 1]["valid"]
    print(f"best validation epoch {n_epochs}: Recall@20 {best_valid['recall@20']:.4f} MRR@20 {best_valid['mrr@20']:.4f}")
    train, _ = load_sessions(folder / "train_full.tsv", "train")
    test, _ = load_sessions(folder / "test.tsv", "test", vocab=train.vocab)
    final = build(args, n_epochs=n_epochs)
    t0 = time.perf_counter()
    final.fit(train)
    wall = time.perf_counter() - t0
    m = evaluate(final, test, cutoffs=(5, 20)).metrics
    print(f"\nrsc15-100k: epochs chosen on train_tr -> train_valid: {n_epochs}; train_full fit {wall:.0f} s")
    print("| model | loss | epochs | Recall@5 | MRR@5 | Recall@20 | MRR@20 | NDCG@20 | predictions | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {final.config.loss} | {n_epochs} | {m['recall@5']:.4f} | {m['mrr@5']:.4f} | {m['recall@20']:.4f} "
          f"| {m['mrr@20']:.4f} | {m['ndcg@20']:.4f} | {m['n_predictions']:,} | {wall:.0f} |")
    return {"epochs": n_epochs, "valid_recall@20": best_valid["recall@20"], "valid_mrr@20": best_valid["mrr@20"],
            **{k: m[k] for k in ("recall@20", "mrr@20", "ndcg@20")}, "fit_seconds": wall,
            "config": final.config.__dict__}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sasrec", help="sasrec or another network on its trainer (narm, stamp, srgnn, bert4rec)")
    ap.add_argument("--dataset", choices=["amazon-games", "rsc15"], default="amazon-games")
    ap.add_argument("--source", help="amazon-games: sequences.txt; rsc15: the rsc15-100k folder (default: ../shared/data)")
    ap.add_argument("--prepared", help="amazon-games: keep the prepared dataset in this directory (default: a temp dir)")
    ap.add_argument("--loss", choices=["bce", "ce", "sampled_ce", "gbce"])
    ap.add_argument("--preset", default=None, help="the model's preset, e.g. SASRec's paper or paper_ce")
    ap.add_argument("--epochs", type=int, default=0, help="maximum epochs (default: the preset's)")
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
    ap.add_argument("--valid-metric", default=None,
                    help="early-stopping metric on the validation split (default: sampled_ndcg@10 / recall@20)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--param", action="append", default=[], help="extra model parameter key=value (repeatable)")
    ap.add_argument("--refit", action="store_true",
                    help="amazon-games: also retrain on train + validation clicks for the chosen number of epochs "
                         "and test that model (a protocol variant, reported on its own row)")
    ap.add_argument("--speed", type=int, default=0, help="only time this many epochs of training (amazon-games)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("nextclick.models.sasrec").setLevel(logging.INFO)  # one line per epoch
    if args.dataset == "amazon-games":
        args.source = args.source or str(SHARED / "amazon-games" / "sequences.txt")
        args.valid_metric = args.valid_metric or "sampled_ndcg@10"
        out = run_games(args)
    else:
        args.source = args.source or str(SHARED / "rsc15-100k")
        args.valid_metric = args.valid_metric or "recall@20"
        out = run_rsc15(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
