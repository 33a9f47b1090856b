"""The shop-scale benchmarks as one table: each bar of the shop-scale issue, its figure, and whether it is met.

Runs the selected parts, each in its own subprocess from the repository root, each writing its
figures with ``--json`` to ``RESULTS/<part>.json`` (default ``runs/scale/results``), then prints one
markdown table built from those files (the parts' own output goes to stderr, so stdout is the
table). A part whose file is missing shows "not run"; a part that fails keeps its earlier file,
whose commit and date the table shows. The parts and the commands run for them (defaults):

    prepare        python benchmarks/scale_prepare.py --data runs/scale/otto --json runs/scale/results/prepare.json
    train_sasrec   python benchmarks/scale_train.py --steps 100 --json runs/scale/results/train_sasrec.json
    train_gru4rec  python benchmarks/scale_train_gru4rec.py --sessions 3000 --repeats 2 --json runs/scale/results/train_gru4rec.json
    evaluate       python benchmarks/scale_evaluate.py --json runs/scale/results/evaluate.json
    accuracy       python benchmarks/scale_accuracy.py --data runs/scale/otto --budget 600 --json runs/scale/results/accuracy.json
    serve          python benchmarks/scale_serve.py runs/scale/gru4rec_otto_budget --duration 10 --connections 1,6 --json runs/scale/results/serve.json

``serve`` adds ``--make --out DIR --data DATA`` in place of the model folder when ``--serve-model``
DIR does not exist (scale_serve.py then trains it first). ``python`` is the interpreter running
this script. Usage:

    python benchmarks/scale.py                                # every part, then the table
    python benchmarks/scale.py --parts evaluate,serve         # these parts, then the table of all stored files
    python benchmarks/scale.py --table                        # the table of the stored files, nothing run

The other scripts import :func:`write_part` from here for their ``--json`` files: the part's name,
``commit`` (``git rev-parse --short HEAD``), ``date`` (UTC, ISO 8601) and ``command`` (``python``
and the script's arguments as run) beside the part's own figures.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("prepare", "train_sasrec", "train_gru4rec", "evaluate", "accuracy", "serve")
Doc = dict[str, Any]


def write_part(path: str | Path, part: str, figures: Doc) -> None:
    """Write ``figures`` with the part's name, commit, UTC date and command line to ``path`` as JSON."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    doc = {"part": part, "commit": git.stdout.strip() or "unknown",
           "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "command": "python " + " ".join(sys.argv), **figures}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=plain) + "\n")


def plain(value: Any) -> Any:
    """JSON for numpy's scalars and arrays (their Python values)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass
class Row:
    measure: str
    figure: str
    bar: str = ""
    met: str = ""
    when: str = ""
    command: str = ""
    where: str = ""  # for a missed bar: where the time or memory goes


def below(value: float, limit: float, unit: str = "") -> str:
    """``met`` when ``value < limit``; otherwise by how much: in ``unit`` when given (``ms``), else as a ratio."""
    if value < limit:
        return "met"
    return f"missed by {value - limit:.2f} {unit}" if unit else f"missed by {value / limit:.2f}x"


def at_least(value: float, limit: float) -> str:
    if value >= limit:
        return "met"
    return f"missed by {limit / value:.2f}x" if value > 0 else f"missed ({value:g})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def gb(mib: float) -> str:
    return f"{mib * 2**20 / 1e9:.2f} GB"


def prepare_rows(doc: Doc) -> list[Row]:
    runs = {r.get("kind"): r for r in doc["rows"]}
    full, rows = runs.get("full"), []
    if full is None or "seconds" not in full:
        why = full["error"] if full else "not measured (--skip-full)"
        rows += [Row("prepare, whole log: wall time", why, "< 600 s"), Row("prepare, whole log: peak RSS", why, "< 12 GB")]
    else:
        size = f"prepare, whole log ({full['clicks']:,} clicks)"
        rows += [Row(f"{size}: wall time", f"{full['seconds']:.0f} s", "< 600 s", below(full["seconds"], 600)),
                 Row(f"{size}: peak RSS", gb(full["peak_rss_mb"]), "< 12 GB", below(full["peak_rss_mb"] * 2**20 / 1e9, 12))]
    for kind, who in (("slice", "nextclick"), ("pandas", "the same steps in pandas")):
        r = runs.get(kind, {})
        fig = f"{r['seconds']:.1f} s, peak RSS {gb(r['peak_rss_mb'])}" if "seconds" in r else r.get("error", "not measured")
        clicks = r.get("clicks")
        rows.append(Row(f"prepare, slice of {clicks:,} clicks: {who}" if isinstance(clicks, int) else f"prepare, slice: {who}", fig))
    return rows


def sasrec_rows(doc: Doc) -> list[Row]:
    if doc.get("mode") != "throughput":
        return [Row("training: SASRec", "not run (the file holds the rsc15 accuracy check)")]
    return [Row(f"training at {r['items']:,} items: SASRec ({r['item_optimizer']}), {plural(r['processes'], 'process')}",
                f"{r['positions_per_s']:,.0f} positions/s; peak RSS {max(r['peak_rss_gb_per_rank']):.2f} GB per process")
            for r in doc["rows"]]


def gru4rec_rows(doc: Doc) -> list[Row]:
    rows = []
    for engine in dict.fromkeys(r["engine"] for r in doc["rows"]):
        runs = [r for r in doc["rows"] if r["engine"] == engine]
        name = {"compiled": "compiled", "torch": "torch, CPU"}.get(engine, engine)
        rate = " / ".join(f"{r['events_per_s']:,.0f}" for r in runs)
        rows.append(Row(f"training at {runs[0]['items']:,} items: GRU4Rec {name}",
                        f"{rate} events/s; peak RSS {gb(max(r['peak_rss_mb'] for r in runs))} "
                        f"({gb(max(r['rss_mb'] for r in runs))} after training)"))
    return rows


def evaluate_rows(doc: Doc) -> list[Row]:
    top = max(r["items"] for r in doc["rows"])
    rows = []
    for r in (r for r in doc["rows"] if r["items"] == top and r["path"] == "chunked"):
        checks = [c for c in doc["rows"] if c["model"] == r["model"] and c["same_as_rows"] not in ("-", None)]
        same = "; same metrics as whole rows at " + ", ".join(f"{c['items']:,} items: {c['same_as_rows']}" for c in checks)
        model = {"gru4rec": "GRU4Rec", "sasrec": "SASRec"}.get(r["model"], r["model"])
        rows.append(Row(f"evaluation at {top:,} items, {model}-shaped",
                        f"{r['per_1000']:.1f} s per 1,000 predictions; exact full ranking; peak RSS {gb(r['peak_mb'])}"
                        + (same if checks else "")))
    return rows


def accuracy_rows(doc: Doc) -> list[Row]:
    s = doc["slice"]
    where = f"accuracy on a {s['clicks']:,}-click slice, {s['items']:,} items"
    names = {"pop": "popularity", "vsknn": "V-SKNN", "gru4rec": f"GRU4Rec, budget {doc['budget_s']:g} s"}
    return [Row(f"{where}: {names.get(r['model'], r['model'])}",
                f"Recall@20 {r['recall@20']:.4f}, MRR@20 {r['mrr@20']:.4f} ({r['predictions']:,} predictions; "
                f"trained on {r['trained_on']}, fit {r['fit_s']:.0f} s)") for r in doc["rows"]]


def memory_figure(m: Doc) -> str:
    idle, load = m["idle"], m["after_load"]
    return (f"RSS {idle['VmRSS']:,.0f} MB idle (private {idle['RssAnon']:,.0f}, file-backed {idle['RssFile']:,.0f}, "
            f"Pss {idle['Pss']:,.0f}), {load['VmRSS']:,.0f} MB after load, peak {load['VmHWM']:,.0f} MB")


def serve_rows(doc: Doc) -> list[Row]:
    at, load = f"service at {doc['items']:,} items", doc["load"]
    best = max(load, key=lambda r: r["rps"])
    rows = [Row(f"{at}: requests/s sustained (best of {len(load)} connection counts)",
                f"{best['rps']:,.0f} ({plural(best['connections'], 'connection')})", ">= 1,000", at_least(best["rps"], 1000))]
    for p, limit in (("p90", 7.0), ("p99", 20.0)):
        rows += [Row(f"{at}: {p} latency, {plural(r['connections'], 'connection')}", f"{r[p]:.2f} ms", f"< {limit:g} ms",
                     below(r[p], limit, "ms") if not math.isnan(r[p]) else "not measured") for r in load]
    errors = sum(r["errors"] for r in load)
    rows.append(Row(f"{at}: errors, all runs", f"{errors:,}", "0", "met" if errors == 0 else f"missed by {errors:,} errors"))
    lone = next((r for r in load if r["connections"] == 1), None)
    rows.append(Row(f"{at}: model's share of a lone click (model ms per click, 1 connection)",
                    f"{lone['model_ms_per_click']:.2f} ms" if lone else "not measured (no 1-connection run)", "< 1.7 ms",
                    below(lone["model_ms_per_click"], 1.7, "ms") if lone else "-"))
    mic = doc["in_process"]
    inside = f"in the model process a lone click is top-k {mic['topk_ms']:.2f} ms + step {mic['step_ms']:.2f} ms"
    for r in rows:
        if not r.met.startswith("missed"):
            continue
        if "requests/s" in r.measure:
            cores = best.get("cores") or []
            r.where = (f"the model process: {cores[-1]:.2f} cores busy, {best['model_ms_per_click']:.2f} ms of model time per "
                       f"click at a mean batch of {best['mean_batch']:.1f}; {inside}") if cores else inside
        elif "share" in r.measure and lone:
            r.where = f"{inside}; the other {max(lone['model_ms_per_click'] - mic['topk_ms'] - mic['step_ms'], 0):.2f} ms is outside the step and the top-k as timed alone"
        else:
            r.where = f"waiting for the model process; {inside}"
    rows.append(Row(f"{at}: in process, a lone click", f"step {mic['step_ms']:.2f} ms, top-k {mic['topk_ms']:.2f} ms"))
    rows.append(Row(f"{at}: ready after start", f"{doc['ready_s']:.1f} s"))
    rows += [Row(f"{at}: memory, {m['process']}", memory_figure(m)) for m in doc["memory"]]
    return rows


BUILD = {"prepare": prepare_rows, "train_sasrec": sasrec_rows, "train_gru4rec": gru4rec_rows,
         "evaluate": evaluate_rows, "accuracy": accuracy_rows, "serve": serve_rows}
NOT_RUN = {
    "prepare": [("prepare, whole log: wall time", "< 600 s"), ("prepare, whole log: peak RSS", "< 12 GB"),
                ("prepare, slice: nextclick and the same steps in pandas", "")],
    "train_sasrec": [("training at 1.9M items: SASRec, 1 and 2 processes", "")],
    "train_gru4rec": [("training at 1.9M items: GRU4Rec compiled and torch CPU", "")],
    "evaluate": [("evaluation at 1.9M items", "")],
    "accuracy": [("accuracy on a ~10M-click slice: GRU4Rec, V-SKNN, popularity", "")],
    "serve": [("service at 1.9M items: requests/s sustained", ">= 1,000"), ("service: p90 latency, every connection count", "< 7 ms"),
              ("service: p99 latency, every connection count", "< 20 ms"), ("service: errors", "0"),
              ("service: model's share of a lone click", "< 1.7 ms"), ("service: ready time, memory of both processes", "")],
}


def table_rows(results: Path) -> list[Row]:
    """The table's rows from ``results/<part>.json``, in the order of PARTS; "not run" for a missing file."""
    rows: list[Row] = []
    for part in PARTS:
        path = results / f"{part}.json"
        if not path.exists():
            rows += [Row(m, "not run", bar, "not run" if bar else "") for m, bar in NOT_RUN[part]]
            continue
        doc = json.loads(path.read_text())
        for i, row in enumerate(BUILD[part](doc)):
            row.when, row.command = f"{doc['commit']}, {doc['date']}", f"`{doc['command']}`" if i == 0 else "as above"
            rows.append(row)
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| measure | figure | bar | met? | where the time goes (missed bars) | commit, date | command |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = (r.measure, r.figure, r.bar or "-", r.met or "-", r.where or "-", r.when or "-", r.command or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def table(results: Path) -> str:
    return markdown(table_rows(results))


def commands(a: argparse.Namespace) -> dict[str, list[str]]:
    """The command line of each part, relative to the repository root (without the interpreter)."""
    out = {p: ["--json", str(Path(a.results) / f"{p}.json")] for p in PARTS}
    model = [a.serve_model] if Path(ROOT, a.serve_model).is_dir() else ["--make", "--out", a.serve_model, "--data", a.data]
    return {
        "prepare": ["benchmarks/scale_prepare.py", "--data", a.data, *out["prepare"]],
        "train_sasrec": ["benchmarks/scale_train.py", "--steps", "100", *out["train_sasrec"]],
        "train_gru4rec": ["benchmarks/scale_train_gru4rec.py", "--sessions", "3000", "--repeats", "2", *out["train_gru4rec"]],
        "evaluate": ["benchmarks/scale_evaluate.py", *out["evaluate"]],
        "accuracy": ["benchmarks/scale_accuracy.py", "--data", a.data, "--budget", "600", *out["accuracy"]],
        "serve": ["benchmarks/scale_serve.py", *model, "--duration", "10", "--connections", "1,6", *out["serve"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset of: " + ", ".join(PARTS))
    ap.add_argument("--table", action="store_true", help="only print the table of the stored files")
    ap.add_argument("--results", default="runs/scale/results", help="folder of the parts' JSON files")
    ap.add_argument("--data", default="runs/scale/otto", help="the full-size log (prepare writes it when missing)")
    ap.add_argument("--serve-model", default="runs/scale/gru4rec_otto_budget", help="the artifact the service part serves")
    a = ap.parse_args()
    parts = [p for p in a.parts.split(",") if p]
    if unknown := [p for p in parts if p not in PARTS]:
        ap.error(f"unknown parts: {', '.join(unknown)}")
    failed = []
    if not a.table:
        cmds = commands(a)
        for part in parts:
            print(f"== {part}: python {' '.join(cmds[part])}", file=sys.stderr, flush=True)
            rc = subprocess.run([sys.executable, *cmds[part]], cwd=ROOT, stdout=sys.stderr).returncode
            if rc:
                failed.append(part)
                print(f"== {part} failed (exit status {rc}); the table shows its earlier file, if any", file=sys.stderr)
    print(table(ROOT / a.results))
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
