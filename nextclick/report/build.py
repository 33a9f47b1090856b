"""The report's sections, from the kept predictions of every model (:class:`ModelRun`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclick.errors import NextclickError
from nextclick.report import stats
from nextclick.report.html import Section, page
from nextclick.report.predictions import ModelRun
from nextclick.report.stats import Estimate

log = logging.getLogger(__name__)


@dataclass
class ReportOptions:
    """What the report computes: the list length ``k`` of its headline metrics, the longest K of
    the curves, the offsets after a shift and the positions shown, the bootstrap."""

    k: int = 20
    max_k: int = 50
    max_offset: int = 8
    position_cap: int = 10  # positions from this one on are pooled ("10+")
    n_boot: int = 1000
    seed: int = 0
    follow_share: float = 0.5  # "clicks to follow": the share of the top-k in the new category to reach


def _fmt(e: Estimate, i: int, j: int) -> str:
    if np.isnan(e.value[i, j]):
        return "-"
    return f"{e.value[i, j]:.4f} [{e.lo[i, j]:.4f}, {e.hi[i, j]:.4f}]"


def _one(e: Estimate, rows: slice | np.ndarray, cols: slice) -> Estimate:
    return Estimate(*(a[rows][:, cols] for a in e))


def _stack(est: Sequence[Estimate]) -> Estimate:
    """One estimate of the rows of several (one row per model)."""
    return Estimate(*(np.concatenate(parts) for parts in zip(*est)))


def summary(run: ModelRun, o: ReportOptions) -> Estimate:
    """(1, 4) Recall@k, MRR@k, NDCG@k and popularity@k of ``run`` with intervals over sessions."""
    p = run.predictions
    pop = run.popularity / max(float(run.popularity.max()), 1.0)
    values = np.column_stack([stats.hits_and_rr(p.rank, o.k), pop[p.top[:, : o.k]].mean(axis=1)])
    return stats.grouped_means(p.session, np.zeros(p.size, np.int64), values, run.sessions.n_sessions, 1, o.n_boot, o.seed)


def leaderboard(runs: Sequence[ModelRun], est: Sequence[Estimate], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import leaderboard_figure

    k = o.k
    header = ["model", f"Recall@{k}", f"MRR@{k}", f"NDCG@{k}", f"coverage@{k}", f"popularity@{k}", "predictions", "sessions",
              "train s"]
    rows = []
    for r, e in zip(runs, est):
        m = r.result.metrics
        cov = m.get(f"coverage@{k}")
        rows.append([r.name, _fmt(e, 0, 0), _fmt(e, 0, 1), _fmt(e, 0, 2), "-" if cov is None else f"{cov:.4f}", _fmt(e, 0, 3),
                     f"{r.predictions.size:,}", f"{r.sessions.n_sessions:,}",
                     "-" if r.fit_seconds is None else f"{r.fit_seconds:.1f}"])
    png = leaderboard_figure([r.name for r in runs], _one(_stack(est), slice(None), slice(0, 2)), [f"Recall@{k}", f"MRR@{k}"], cols)
    text = [f"Full-catalogue ranking of every next click of the test sessions, conservative ties; sorted by MRR@{k}. "
            f"In brackets: 95% bootstrap intervals from {o.n_boot} resamples of the test SESSIONS (seed {o.seed}), "
            "not of single predictions. Coverage is a property of the whole set of lists and has no interval."]
    return Section("Leaderboard", text, (header, rows), png, "leaderboard with 95% intervals")


def curves(runs: Sequence[ModelRun], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import curves_figure

    pairs = [stats.rank_curves(r.predictions.rank, o.max_k) for r in runs]
    png = curves_figure([r.name for r in runs], np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), cols)
    text = [f"Recall@K (hit rate) and MRR@K for K = 1..{o.max_k}, from each prediction's full-catalogue rank."]
    return Section(f"Recall@K and MRR@K, K = 1..{o.max_k}", text, None, png, "Recall@K and MRR@K curves")


def positions(runs: Sequence[ModelRun], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import position_figure

    cap = o.position_cap
    ests = []
    for r in runs:
        p = r.predictions
        group = np.minimum(p.position, cap) - 1
        values = stats.hits_and_rr(p.rank, o.k)[:, :2]
        ests.append(stats.grouped_means(p.session, group, values, r.sessions.n_sessions, cap, o.n_boot, o.seed))
    labels = [str(i) for i in range(1, cap)] + [f"{cap}+"]
    png = position_figure([r.name for r in runs], labels, ests, o.k, cols)
    n = ests[0].n[:, 0].astype(int)
    text = [f"Recall@{o.k} and MRR@{o.k} of the predictions made after 1, 2, ... clicks of a session ({cap} and more "
            "pooled), with 95% bootstrap bands over sessions. Predictions per position (first model): "
            + ", ".join(f"{lab}: {c:,}" for lab, c in zip(labels, n)) + "."]
    return Section("Accuracy by position in the session", text, None, png, "accuracy by position")


def shift_estimates(run: ModelRun, o: ReportOptions) -> Estimate:
    """(offsets 0..max_offset, 2): share of the top-k in the new category and Recall@k after a shift."""
    p, cats = run.predictions, run.categories
    if cats is None:
        raise ValueError(f"{run.name}: no item categories")
    rows, offs, new = stats.shift_rows(run.sessions, cats, p.session, p.position, o.max_offset)
    share = (cats[p.top[rows, : o.k]] == new[:, None]).mean(axis=1)
    values = np.column_stack([share, p.rank[rows] < o.k])
    return stats.grouped_means(p.session[rows], offs, values, run.sessions.n_sessions, o.max_offset + 1, o.n_boot, o.seed)


def _follow(e: Estimate, share: float) -> str:
    """Clicks to follow, and the range the interval allows (its upper bound first reaching ``share``
    to its lower bound first reaching it)."""
    best, mid, worst = (stats.clicks_to_follow(a[:, 0], share) for a in (e.hi, e.value, e.lo))
    if mid is None:
        return f"> {e.value.shape[0] - 1}"
    hi = "later" if worst is None else str(worst)
    return f"{mid} [{best}, {hi}]" if (best, worst) != (mid, mid) else str(mid)


def shift(runs: Sequence[ModelRun], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import shift_figure

    title = "After a shift of intent"
    have = [r for r in runs if r.categories is not None]
    if not have:
        return Section(title, ["No item table with categories was given: no intent-shift figure."])
    ests = [shift_estimates(r, o) for r in have]
    if not any(e.n[1:, 0].sum() for e in ests):
        return Section(title, ["The evaluated sessions hold no shift of category followed by a prediction."])
    k, s = o.k, o.follow_share
    overall = [float(np.mean(r.predictions.rank < k)) for r in have]
    png = shift_figure([r.name for r in have], [_one(e, slice(None), slice(0, 1)) for e in ests],
                       [_one(e, slice(None), slice(1, 2)) for e in ests], overall, k, cols[: len(have)])
    header = ["model", "clicks to follow", "share in new category at 0", "at 1", "at 2", "at 3", f"Recall@{k} at 0", "at 1",
              f"overall Recall@{k}"]
    rows = [[r.name, _follow(e, s), _fmt(e, 0, 0), _fmt(e, 1, 0), _fmt(e, 2, 0), _fmt(e, 3, 0), _fmt(e, 0, 1), _fmt(e, 1, 1),
             f"{ov:.4f}"] for r, e, ov in zip(have, ests, overall)]
    n = ests[0].n[:, 0].astype(int)
    text = [
        "A shift is a click whose item is in another category than the previous click's. Offset j is the prediction made "
        "after j clicks in the new category (j = 1: the first click there is the last one given, its target the next "
        "click; no other shift since); offset 0 is the prediction just before, whose target is the shift click itself. "
        f"Left: the share of each model's top-{k} in the new category; right: its Recall@{k} there, its overall Recall@{k} "
        "dotted. Bands and brackets: 95% bootstrap intervals over sessions.",
        f"Clicks to follow: the first offset j >= 1 at which at least {s:.0%} of the top-{k} is in the new category; in "
        "brackets the offsets at which the interval's upper and lower bounds first reach it ('later': not within "
        f"{o.max_offset} clicks; '> {o.max_offset}': the estimate never does).",
        "Predictions per offset (first model): " + ", ".join(f"{j}: {c:,}" for j, c in enumerate(n)) + ".",
    ]
    notes = [f"Left out (no item categories): {', '.join(r.name for r in runs if r.categories is None)}."] if len(have) < len(runs) else []
    return Section(title, text, (header, rows), png, "intent shift: share of recommendations in the new category", notes)


def popularity(runs: Sequence[ModelRun], est: Sequence[Estimate], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import popularity_figure

    cutoffs = sorted({int(key.split("@")[1]) for key in runs[0].result.metrics if key.startswith("coverage@")})
    cutoffs = [c for c in cutoffs if all(f"coverage@{c}" in r.result.metrics for r in runs)]
    coverage = np.array([[r.result.metrics[f"coverage@{c}"] for c in cutoffs] for r in runs]).reshape(len(runs), -1)
    png = popularity_figure([r.name for r in runs], cutoffs, coverage, _one(_stack(est), slice(None), slice(3, 4)), o.k, cols)
    text = ["Coverage@K: the share of the catalogue that appears in at least one top-K list. Popularity@K: the mean training "
            "popularity (clicks) of the recommended items, relative to the most clicked item; high values mean a bias "
            "towards best-sellers. 95% bootstrap intervals over sessions."]
    return Section("Coverage and popularity bias", text, None, png, "coverage and popularity")


def _valid_metric(curves: Sequence[list[dict[str, float]]], k: int) -> str | None:
    keys = [key for c in curves for p in c for key in p if key.startswith("valid_")]
    for want in (f"valid_recall@{k}", f"valid_mrr@{k}"):
        if want in keys:
            return want
    return keys[0] if keys else None


def training(runs: Sequence[ModelRun], o: ReportOptions, cols: Sequence) -> Section:
    from nextclick.report.figures import training_figure

    title = "Training curves"
    idx = [i for i, r in enumerate(runs) if r.curve]
    without = [r.name for r in runs if not r.curve]
    notes = [f"No epochs recorded (models fitted in one pass, such as the kNN and popularity ones, or artifacts "
             f"saved without a curve): {', '.join(without)}."] if without else []
    if not idx:
        return Section(title, ["No model recorded a training curve."], notes=notes)
    curves_ = [runs[i].curve for i in idx]
    metric = _valid_metric(curves_, o.k)
    png = training_figure([runs[i].name for i in idx], curves_, metric, [cols[i] for i in idx])
    text = ["Per epoch, as recorded in each artifact during training (config.json, training.curve): the training loss, "
            "divided by the first epoch's so that models with different losses share an axis, and the validation metric "
            "where the model validated (SASRec, NARM and STAMP hold out the last click of some training sequences when "
            "no validation data is given). Each model's own loss: compare shapes, not levels."]
    header = ["model", "epochs", "first loss", "last loss", "seconds / epoch", metric or "validation"]
    rows = [[runs[i].name, str(len(c)), f"{c[0]['loss']:.4f}", f"{c[-1]['loss']:.4f}",
             f"{np.mean([p.get('seconds', np.nan) for p in c]):.1f}",
             f"{max(p[metric] for p in c if metric in p):.4f} (best)" if metric and any(metric in p for p in c) else "-"]
            for i, c in zip(idx, curves_)]
    return Section(title, text, (header, rows), png, "training loss and validation metric per epoch", notes)


def _intro(runs: Sequence[ModelRun], o: ReportOptions, context: Sequence[str]) -> list[str]:
    m = runs[0].result.metrics
    lines = list(context)
    lines.append(f"{len(runs)} model(s) evaluated on {runs[0].sessions.n_sessions:,} test sessions, "
                 f"{int(m['n_predictions']):,} next-click predictions (first model), each ranking the full catalogue of "
                 f"{int(m['n_items']):,} items with conservative ties.")
    sub = runs[0].result.subset
    if sub is not None:
        lines.append(f"A random SUBSET of the test sessions: {sub['n_sessions']:,} of {sub['of_sessions']:,} (seed "
                     f"{sub['seed']}); every prediction still ranks the full catalogue.")
    return lines


def write_report(
    runs: Sequence[ModelRun],
    out: str | Path,
    title: str = "nextclick report",
    options: ReportOptions | None = None,
    context: Sequence[str] = (),
) -> Path:
    """Write the self-contained HTML report of ``runs`` to ``out``; ``context``: paragraphs that
    say where the data comes from. Returns the path written."""
    from nextclick.report.figures import colours

    if not runs:
        raise NextclickError("report: no model to report on")
    o = options or ReportOptions()
    empty = [r.name for r in runs if r.predictions.size == 0]
    if empty:
        raise NextclickError(f"report: no prediction evaluated for {', '.join(empty)} (no test session has two known clicks)")
    est = [summary(r, o) for r in runs]
    order = np.argsort([-e.value[0, 1] for e in est], kind="stable")  # by MRR@k
    runs, est = [runs[i] for i in order], [est[i] for i in order]
    cols = colours(len(runs))
    sections = [leaderboard(runs, est, o, cols), curves(runs, o, cols), positions(runs, o, cols), shift(runs, o, cols),
                popularity(runs, est, o, cols), training(runs, o, cols)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page(title, _intro(runs, o, context), sections), encoding="utf-8")
    log.info("report: %s (%d models)", out, len(runs))
    return out
