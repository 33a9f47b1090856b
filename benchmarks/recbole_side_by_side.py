"""nextclick beside RecBole 1.2 (NARM, STAMP, SR-GNN, BERT4Rec, SASRec) on rsc15-100k, in one run.

Both libraries train on ``train_full.tsv`` and rank the FULL catalogue for every next click of
every ``test.tsv`` session (position t predicts click t+1 from clicks 1..t; 10,152 predictions),
reporting Recall@20 / MRR@20, seconds per training epoch and each process's peak RSS. The runs
alternate (RecBole model X, nextclick X, RecBole Y, ...) so that the machine's speed drift hits
both; every process runs with one torch thread (``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``).

RecBole is not a dependency of nextclick and this script never imports it: it runs in a
throwaway environment through a small driver script written to a temporary directory::

    python3 -m venv /tmp/rbenv
    /tmp/rbenv/bin/pip install torch==2.13.0 'numpy<2' recbole==1.2.0
    /tmp/rbenv/bin/pip install kmeans_pytorch 'pandas==2.1.4'

    .venv/bin/python benchmarks/recbole_side_by_side.py --epochs 3 --out /tmp/recbole_results.md
    .venv/bin/python benchmarks/recbole_side_by_side.py --epochs 3 --runs sized   # nextclick at RecBole's sizes
    .venv/bin/python benchmarks/recbole_side_by_side.py --epochs 10 --models stamp,narm,srgnn

The second install line: RecBole 1.2.0's model lookup imports every model module, one of which
needs ``kmeans_pytorch`` (not declared by the package), and its ID remapping fails under pandas 3
("Length of values (1) does not match length of index"); pandas 2.1.4 works. Nothing in RecBole
is patched.

Data for RecBole (written to ``--recbole-data``, never into the repository): RecBole's
``benchmark_filename`` mode reads pre-split atomic files and does NOT build prefixes itself (its
sequential data augmentation runs only without benchmark files), so every file holds one row per
prediction: ``session_id:token``, ``item_id_list:token_seq`` (the previous clicks of the session,
the last ``MAX_ITEM_LIST_LENGTH`` = 50 of them, RecBole's default), ``item_id:token`` (the click
to predict) and ``timestamp:float`` (its time, not loaded). That is what RecBole's augmentation
would produce from whole sessions, and for the test file it is exactly nextclick's protocol: every
position of every test session. The valid file is the last prediction of the last 100 training
sessions (a copy of training rows); it is never evaluated (``eval_step: 0``), it exists because
RecBole's data preparation expects three files.

RecBole runs with its own defaults (overall.yaml, the model's yaml and the sequential quick-start
yaml) except the overrides listed in :data:`RECBOLE_OVERRIDES` (the data fields, one thread on the
CPU, full ranking with Recall/MRR@20, no validation so the last epoch is tested, the epoch cap).
nextclick runs with its own defaults except ``n_epochs`` (the cap), ``patience=0`` (no early
stopping, hence no 10% hold-out: it trains on every click, like RecBole here), ``n_threads=1``
and ``progress=false``. A few epochs are NOT convergence: the accuracy columns compare the two
libraries after the same number of passes over the same data, nothing more.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "rsc15-100k"
NEXTCLICK = ROOT / ".venv" / "bin" / "nextclick"
RECBOLE_PY = Path("/tmp/rbenv/bin/python")
MAX_LIST = 50  # RecBole's default MAX_ITEM_LIST_LENGTH
RECBOLE_NAMES = {"narm": "NARM", "stamp": "STAMP", "srgnn": "SRGNN", "bert4rec": "BERT4Rec", "sasrec": "SASRec"}
DATASET = "rsc15-100k"

RECBOLE_OVERRIDES: dict[str, object] = {
    "USER_ID_FIELD": "session_id",
    "load_col": {"inter": ["session_id", "item_id_list", "item_id"]},
    "alias_of_item_id": ["item_id_list"],
    "benchmark_filename": ["train", "valid", "test"],
    "use_gpu": False,
    "show_progress": False,
    "eval_step": 0,
    "train_neg_sample_args": None,
    "metrics": ["Recall", "MRR"],
    "topk": [20],
    "valid_metric": "MRR@20",
}

# nextclick's hyper-parameters set to RecBole's defaults for the same model where both libraries
# have the knob (sizes, dropouts, lr, window); batch_size stays nextclick's: a nextclick batch holds
# windows with a prediction at every position, a RecBole batch one prediction per row. Not mapped:
# SASRec's feed-forward width (RecBole inner_size 256, nextclick hidden) and attention dropout.
AT_RECBOLE_SIZES: dict[str, list[str]] = {
    "stamp": ["hidden=64", "lr=0.001", "max_len=50"],
    "narm": ["hidden=64", "gru_hidden=128", "max_len=50"],
    "srgnn": ["hidden=64", "l2=0.0", "max_len=50"],
    "sasrec": ["hidden=64", "n_heads=2", "max_len=50"],
    "bert4rec": ["dropout=0.2", "max_len=50"],
}

DRIVER = '''
import json, os, sys, time
import torch
torch.set_num_threads(1)
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, get_trainer, init_seed

args = json.loads(open(sys.argv.pop(1)).read())  # popped: RecBole's Config parses the command line too
config = Config(model=args["model"], dataset=args["dataset"], config_dict=args["overrides"])
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train, valid, test = data_preparation(config, dataset)
model = get_model(config["model"])(config, train._dataset).to(config["device"])
trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
seconds = []
inner = trainer._train_epoch

def timed(*a, **k):
    t = time.perf_counter()
    out = inner(*a, **k)
    seconds.append(time.perf_counter() - t)
    return out

trainer._train_epoch = timed
trainer.fit(train, valid, saved=False, show_progress=False)
result = trainer.evaluate(test, load_best_model=False, show_progress=False)
keys = ["train_batch_size", "learning_rate", "MAX_ITEM_LIST_LENGTH", "embedding_size", "hidden_size", "n_layers",
        "n_heads", "dropout_probs", "hidden_dropout_prob", "step", "mask_ratio", "loss_type", "seed", "epochs"]
settings = {k: config[k] for k in keys if config[k] is not None}
print("RESULT " + json.dumps({"seconds": seconds, "recall": float(result["recall@20"]), "mrr": float(result["mrr@20"]),
                               "n_test": len(test.dataset), "n_items": dataset.item_num - 1, "settings": settings}))
'''


@dataclass
class Row:
    model: str
    library: str
    epochs: int
    seconds: list[float]
    rss_mib: float
    recall: float
    mrr: float
    settings: str


def prefixes(path: Path) -> list[tuple[str, str, str, str]]:
    """One row per next click of each session in a SessionId/ItemId/Time file: (session, previous items, item, time)."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    sess = np.array([r["SessionId"] for r in rows])
    items = [r["ItemId"] for r in rows]
    start = np.r_[True, sess[1:] != sess[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(sess)), 0))
    return [(sess[i], " ".join(items[max(int(first[i]), i - MAX_LIST):i]), items[i], rows[i]["Time"])
            for i in np.flatnonzero(~start)]


def write_recbole_data(out: Path) -> dict[str, int]:
    """The atomic files RecBole's benchmark mode reads; returns the row count of each."""
    d = out / DATASET
    d.mkdir(parents=True, exist_ok=True)
    train = prefixes(DATA / "train_full.tsv")
    test = prefixes(DATA / "test.tsv")
    valid_sessions = set(list(dict.fromkeys(r[0] for r in train))[-100:])
    valid = [r for i, r in enumerate(train) if r[0] in valid_sessions and (i + 1 == len(train) or train[i + 1][0] != r[0])]
    header = "session_id:token\titem_id_list:token_seq\titem_id:token\ttimestamp:float\n"
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        with (d / f"{DATASET}.{name}.inter").open("w") as f:
            f.write(header)
            f.writelines("\t".join(r) + "\n" for r in rows)
    return {"train": len(train), "valid": len(valid), "test": len(test)}


def run_measured(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[str, float]:
    """Run ``cmd`` to its end; its stdout+stderr and its peak RSS in MiB (os.wait4's ru_maxrss, KiB on Linux)."""
    with tempfile.TemporaryFile(mode="w+") as log:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        text = log.read()
    if p.returncode:
        raise RuntimeError(f"{cmd[:3]} exited {p.returncode}:\n{text[-3000:]}")
    return text, usage.ru_maxrss / 1024


def env_one_thread() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run_recbole(model: str, epochs: int, data: Path, work: Path) -> Row:
    driver = work / "recbole_driver.py"
    driver.write_text(DRIVER)
    overrides = {**RECBOLE_OVERRIDES, "data_path": str(data), "epochs": epochs, "checkpoint_dir": str(work / "saved")}
    arg = work / f"recbole_{model}.json"
    arg.write_text(json.dumps({"model": RECBOLE_NAMES[model], "dataset": DATASET, "overrides": overrides}))
    text, rss = run_measured([str(RECBOLE_PY), str(driver), str(arg)], env_one_thread(), work)
    res = json.loads(next(ln for ln in text.splitlines() if ln.startswith("RESULT "))[7:])
    if res["n_test"] != 10152:
        raise RuntimeError(f"RecBole ranked {res['n_test']} test predictions, expected 10152")
    if res["n_items"] != 2933:
        raise RuntimeError(f"RecBole's catalogue has {res['n_items']} items, train_full.tsv has 2933")
    settings = ", ".join(f"{k}={v}" for k, v in res["settings"].items() if k != "epochs")
    return Row(model, "RecBole 1.2.0", epochs, res["seconds"], rss, res["recall"], res["mrr"], settings)


def run_nextclick(model: str, epochs: int, work: Path, params: list[str], label: str = "nextclick") -> Row:
    out = Path(tempfile.mkdtemp(dir=work)) / model
    ps = [f"n_epochs={epochs}", "patience=0", "n_threads=1", "progress=false", *params]
    train_cmd = [str(NEXTCLICK), "train", model, "--train", str(DATA / "train_full.tsv"), "--out", str(out)]
    for p in ps:
        train_cmd += ["-p", p]
    _, rss_train = run_measured(train_cmd, env_one_thread(), ROOT)
    text, rss_eval = run_measured([str(NEXTCLICK), "evaluate", str(out), "--test", str(DATA / "test.tsv"), "--json"],
                                  env_one_thread(), ROOT)
    metrics = json.loads(text[text.index("{"):text.rindex("}") + 1])
    cfg = json.loads((out / "config.json").read_text())
    curve = cfg["training"]["curve"]
    hp = {k: v for k, v in cfg.get("params", cfg.get("config", {})).items()
          if k in ("max_len", "hidden", "gru_hidden", "batch_size", "lr", "dropout", "dropout_context", "n_blocks", "n_heads",
                   "loss", "steps", "mask_prob", "l2", "seed")}
    settings = ", ".join(f"{k}={v}" for k, v in hp.items()) + f"; train RSS {rss_train:.0f} MiB, evaluate RSS {rss_eval:.0f} MiB"
    return Row(model, label, epochs, [float(c["seconds"]) for c in curve], max(rss_train, rss_eval),
               float(metrics["recall@20"]), float(metrics["mrr@20"]), settings)


def table(rows: list[Row]) -> str:
    lines = ["| model | library | epochs run | s/epoch (median; all) | peak RSS MiB | Recall@20 | MRR@20 | settings |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        secs = "; ".join(f"{s:.1f}" for s in r.seconds)
        lines.append(f"| {r.model} | {r.library} | {len(r.seconds)} | {float(np.median(r.seconds)):.1f} ({secs}) | {r.rss_mib:.0f} | "
                     f"{r.recall:.4f} | {r.mrr:.4f} | {r.settings} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="stamp,narm,srgnn,sasrec,bert4rec")
    ap.add_argument("--epochs", type=int, default=3, help="epochs for both libraries (a cap, not convergence)")
    ap.add_argument("--recbole-data", type=Path, default=Path("/tmp/recbole_data"))
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    ap.add_argument("--nextclick-param", action="append", default=[], help="extra -p key=value for nextclick (repeatable)")
    ap.add_argument("--runs", default="recbole,nextclick",
                    help="which runs, in turn for each model: recbole, nextclick, sized (nextclick at RecBole's default "
                         "sizes, AT_RECBOLE_SIZES)")
    args = ap.parse_args()
    counts = write_recbole_data(args.recbole_data)
    print(f"RecBole atomic files in {args.recbole_data / DATASET}: {counts} rows", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model in args.models.split(","):
            for runner in args.runs.split(","):
                t = time.perf_counter()
                if runner == "recbole":
                    row = run_recbole(model, args.epochs, args.recbole_data, work)
                elif runner == "nextclick":
                    row = run_nextclick(model, args.epochs, work, args.nextclick_param)
                elif runner == "sized":
                    row = run_nextclick(model, args.epochs, work, [*AT_RECBOLE_SIZES[model], *args.nextclick_param],
                                        "nextclick at RecBole's sizes")
                else:
                    raise SystemExit(f"--runs: unknown run {runner!r} (expected recbole, nextclick or sized)")
                rows.append(row)
                print(f"{time.strftime('%H:%M:%S', time.gmtime())} UTC {model} {row.library}: {time.perf_counter() - t:.0f} s wall, "
                      f"s/epoch {row.seconds}, RSS {row.rss_mib:.0f} MiB, R@20 {row.recall:.4f}, MRR@20 {row.mrr:.4f}", flush=True)
    notes = ("RecBole overrides of its defaults: " + json.dumps(RECBOLE_OVERRIDES) + f", epochs={args.epochs}, data_path, "
             "checkpoint_dir; nextclick overrides of its defaults: n_epochs, patience=0, n_threads=1, progress=false"
             + (", " + ", ".join(args.nextclick_param) if args.nextclick_param else "")
             + ("; nextclick at RecBole's sizes adds " + json.dumps(AT_RECBOLE_SIZES) if "sized" in args.runs else "")
             + ". Both: one torch thread, CPU. Accuracy after a fixed number of epochs, not at convergence.")
    text = table(rows) + "\n\n" + notes + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
