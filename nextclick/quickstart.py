"""The main job on built-in data: generate the synthetic shop, prepare it, train every model,
print a leaderboard, replay one anonymous session click by click and write the HTML report
(``<out>/report.html``, :mod:`nextclick.report`) from the same evaluation."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nextclick.data.dataset import Dataset
from nextclick.data.preprocess import PrepareOptions, prepare
from nextclick.data.synthetic import Shop, ShopConfig, generate_shop
from nextclick.models import available_models, create_model
from nextclick.report import ModelRun, item_categories, run_model, write_report

log = logging.getLogger(__name__)

# brief training settings for the demo (full settings are the models' presets)
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "gru4rec": {"n_epochs": 3, "layers": (96,), "batch_size": 64, "n_sample": 512, "learning_rate": 0.1, "n_threads": 1},
    "sasrec": {"n_epochs": 3, "max_len": 20, "dropout": 0.2, "n_threads": 1, "progress": False},
    "narm": {"n_epochs": 3, "n_threads": 1, "progress": False},
    "stamp": {"n_epochs": 3, "n_threads": 1, "progress": False},
    "srgnn": {"n_epochs": 3, "n_threads": 1, "progress": False},
    "bert4rec": {"n_epochs": 5, "n_threads": 1, "progress": False},
}


#: served side by side in the demo the quickstart proposes, with the leaderboard's best: one model
#: per kind of explanation (attention, neighbours, click influence) and popularity
DEMO_MODELS = ("sasrec", "vsknn", "gru4rec", "pop")


@dataclass
class Row:
    model: str
    metrics: dict[str, float]
    train_seconds: float


def _quick(name: str) -> dict[str, Any]:
    import dataclasses

    from nextclick.models import get_model_class

    fields = {f.name for f in dataclasses.fields(get_model_class(name).Config)}
    return {k: v for k, v in QUICK_PARAMS.get(name, {}).items() if k in fields}


def run_quickstart(
    out: str | Path,
    shop_config: ShopConfig | None = None,
    models: list[str] | None = None,
    echo: Callable[[str], None] = print,
) -> tuple[list[Row], Shop]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shop = generate_shop(shop_config or ShopConfig())
    shop.clicks.write_parquet(out / "shop_clicks.parquet")
    shop.items.write_parquet(out / "shop_items.parquet")
    echo(
        f"synthetic shop: {shop.clicks.height:,} clicks, {shop.config.n_sessions:,} sessions, "
        f"{shop.config.n_items:,} items in {shop.config.n_categories} categories  ->  {out}/shop_clicks.parquet"
    )
    ds = prepare(shop.clicks.drop("UserId"), out / "data", PrepareOptions())
    for r in ds.meta["report"]:
        if r["removed_events"] or r["removed_sessions"]:
            echo(f"  {r['step']}: removed {r['removed_events']:,} events, {r['removed_sessions']:,} sessions")
    st = ds.meta["stats"]
    echo(
        f"  train {st['train']['events']:,} events / {st['train']['sessions']:,} sessions; "
        f"test {st['test']['events']:,} events / {st['test']['sessions']:,} sessions"
    )
    train, _ = ds.sessions("train")
    test, _ = ds.sessions("test")
    rows: list[Row] = []
    fitted = {}
    runs: list[ModelRun] = []
    cats = item_categories(train.vocab, shop.items.get_column("ItemId").to_numpy(), shop.items.get_column("Category").to_numpy())[0]
    for name in models or available_models():
        model = create_model(name, **_quick(name))
        model.fit(train)
        model.save(out / "models" / name)
        runs.append(run_model(model, test, categories=cats))  # evaluated once: the leaderboard and the report
        rows.append(Row(name, runs[-1].result.metrics, model.fit_seconds_))
        fitted[name] = model
    rows.sort(key=lambda r: -r.metrics["mrr@20"])
    echo("")
    echo(
        f"leaderboard (test: {rows[0].metrics['n_predictions']:,} next-click predictions, full ranking over "
        f"{rows[0].metrics['n_items']:,} items, conservative ties)"
    )
    echo(f"  {'model':<10} {'Recall@20':>9} {'MRR@20':>8} {'Recall@5':>9} {'train s':>8}")
    for r in rows:
        m = r.metrics
        echo(f"  {r.model:<10} {m['recall@20']:9.4f} {m['mrr@20']:8.4f} {m['recall@5']:9.4f} {r.train_seconds:8.2f}")
    best = rows[0].model
    replay(fitted[best], shop, ds, echo)
    report = _report(runs, shop, out)
    echo(f"\ndone in {time.perf_counter() - t0:.1f} s; models saved under {out}/models/")
    echo(f"report: {report}")
    demo = [r.model for r in rows if r.model == best or r.model in DEMO_MODELS]  # leaderboard order, the best first
    dirs = " ".join(str(out / "models" / name) for name in demo)
    echo(f"demo: nextclick serve {dirs} --items {out}/shop_items.parquet\n  then open http://127.0.0.1:8000/")
    return rows, shop


def _report(runs: list[ModelRun], shop: Shop, out: Path) -> Path:
    """The HTML report of the quickstart's models on the shop's test split."""
    c = shop.config
    context = [f"The synthetic shop ({c.n_items:,} items in {c.n_categories} categories, {c.n_sessions:,} sessions, seed "
               f"{c.seed}; a visitor switches category with probability {c.p_shift:g} per click), models trained briefly by "
               "`nextclick quickstart` (not tuned), evaluated on the test split. Item categories: shop_items.parquet."]
    return write_report(runs, out / "report.html", title="nextclick quickstart report", context=context)


def replay(model: Any, shop: Shop, ds: Dataset, echo: Callable[[str], None] = print, k: int = 5) -> None:
    """Replay a test session with a shift of intent, showing the top-k after every click."""
    test = ds.frame("test")
    sid = test.get_column("SessionId").to_numpy()
    items = test.get_column("ItemId").to_numpy()
    cats = shop.category_of(items)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ends = np.r_[starts[1:], sid.size]
    best = None
    for a, b in zip(starts, ends):  # a session of 6-10 clicks whose category changes once
        if 6 <= b - a <= 10:
            changes = int((cats[a + 1 : b] != cats[a : b - 1]).sum())
            if changes == 1:
                best = (a, b)
                break
    if best is None:
        return
    a, b = best
    echo(f"\nreplaying anonymous session {sid[a]} with {model.name} (top-{k} after each click):")
    for t in range(a, b):
        rec, _ = model.recommend(items[a : t + 1], k=k)
        rcats = shop.category_of(rec)
        same = float(np.mean(rcats == cats[t]))
        nxt = f"next: {items[t + 1]} ({cats[t + 1]})" if t + 1 < b else "end of session"
        hit = " <- hit" if t + 1 < b and items[t + 1] in set(rec.tolist()) else ""
        echo(f"  click {t - a + 1}: {items[t]} ({cats[t]})")
        echo(f"     recs: {', '.join(f'{r} ({c})' for r, c in zip(rec, rcats))}")
        echo(f"     {same:.0%} of recs in the current category; {nxt}{hit}")
