"""The conformance suite: train and evaluate named models on the shared datasets against reference figures.

A suite is a list of :class:`Row`: one model with one preset on one dataset and protocol, and the
:class:`Reference` figures it must reach. :func:`run_suite` trains and evaluates each row through the
library API (``create_model``, ``fit``, ``evaluate``) and :func:`format_markdown` prints one table,
one line per metric. ``nextclick bench`` is the command; ``--quick`` runs the rows marked ``quick``.

**Pass rule.** A reference is a bar to reach: a metric passes when ``measured >= reference -
tolerance``; beating the reference is a pass. A figure shown without a reference (``value=None``) is
printed and never fails.

**Tolerance.** Unless a reference states its own, the tolerance is two standard errors of a mean
over the test's predictions, bounded from above for any metric whose per-prediction value lies in
[0, 1] (Recall/HR, MRR, NDCG): such a value ``x`` has ``E[x^2] <= E[x]``, so its variance is at most
``r (1 - r)`` for a mean ``r``, and the tolerance is ``2 sqrt(r (1 - r) / n)`` with ``r`` the
reference and ``n`` the number of predictions measured. Two equally good runs (another seed,
another implementation of the same model) on the same test differ by this order: on rsc15-100k
(10,152 predictions) it is 0.0093 for a Recall@20 of 0.68 and 0.0096 for an MRR@20 of 0.366; on
amazon-games (30,901 users) 0.0050 for a sampled HR@10 of 0.741. It is derived from the test's
size, not chosen per row, so a row cannot be made to pass by loosening it.

**Sources.** Each reference says where it comes from, in one of four kinds: ``paper`` (a published
table), ``official`` (the authors' code run on this exact split, recorded in the data's README),
``published`` (a figure on this split quoted by the data's README), or ``ours`` (our own recorded
figure, a regression check where no outside figure exists). They are labelled in the table.

**Adding a model.** Append a :class:`Row` to :data:`SUITE` with its own references and an honest
``expected_seconds`` (fit plus evaluation on the project's standard 2-core machine, idle); mark it
``quick`` only if it is cheap enough for CI.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nextclick.errors import NextclickError

#: What each dataset of the suite needs under the data directory.
DATASET_FILES: dict[str, tuple[str, ...]] = {
    "rsc15-100k": ("train_full.tsv", "test.tsv"),
    "amazon-games": ("sequences.txt",),
}
SOURCE_KINDS = ("paper", "official", "published", "ours")
RSC15 = "rsc15-100k: train_full -> test, every next click (10,152), full ranking, conservative ties"
GAMES = ("amazon-games: the paper's protocol, leave-one-out per user, model chosen on the validation "
         "split; sampled = target against 100 uniformly sampled unseen items, full = against all 23,715 items")


@dataclass(frozen=True)
class Reference:
    """One metric's bar: ``value`` (None: shown only), where it comes from, and its tolerance
    (None: the two-standard-error rule of the module docstring)."""

    metric: str  # a key of evaluate()'s metrics ("recall@20"), or "sampled_" + a key of its sampled figures
    value: float | None
    kind: str  # one of SOURCE_KINDS
    source: str
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"reference kind must be one of {SOURCE_KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Row:
    """One model, preset and dataset of the suite, with the references it must reach."""

    name: str
    dataset: str  # a key of DATASET_FILES
    model: str
    preset: str | None
    references: tuple[Reference, ...]
    protocol: str
    expected_seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    cutoffs: tuple[int, ...] = (20,)
    sampled_negatives: int = 0  # > 0: also the paper's sampled protocol
    use_valid: bool = False  # fit(train, valid): model selection on the validation split
    quick: bool = False

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(r.metric for r in self.references)


@dataclass
class Check:
    """One metric of one row, measured and judged."""

    row: str
    metric: str
    reference: float | None
    kind: str
    source: str
    measured: float
    tolerance: float | None
    passed: bool | None  # None: no reference, not judged


@dataclass
class RowResult:
    row: Row
    checks: list[Check]
    fit_seconds: float
    eval_seconds: float
    n_predictions: int

    @property
    def passed(self) -> bool:
        return all(c.passed is not False for c in self.checks)


def default_tolerance(reference: float, n: int) -> float:
    """Two standard errors, bounded above, of a mean of ``n`` per-prediction values in [0, 1] whose
    mean is ``reference``; rounded up to four decimals."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    r = min(max(reference, 0.0), 1.0)
    return math.ceil(2.0 * math.sqrt(r * (1.0 - r) / n) * 1e4) / 1e4


def judge(row: str, ref: Reference, measured: float, n: int) -> Check:
    """``ref`` against ``measured`` (``n`` predictions): passes when measured >= reference - tolerance."""
    if ref.value is None:
        return Check(row, ref.metric, None, ref.kind, ref.source, measured, None, None)
    tol = ref.tolerance if ref.tolerance is not None else default_tolerance(ref.value, n)
    ok = measured >= ref.value - tol - 1e-12
    return Check(row, ref.metric, ref.value, ref.kind, ref.source, measured, tol, ok)


def _ref(metric: str, value: float | None, kind: str, source: str) -> Reference:
    return Reference(metric, value, kind, source)


def _pair(r20: float, m20: float, kind: str, source: str) -> tuple[Reference, ...]:
    return _ref("recall@20", r20, kind, source), _ref("mrr@20", m20, kind, source)


_OFFICIAL_XE = "official GRU4Rec, cross-entropy, n_sample 512 (data README)"
#: The full suite. The rsc15-100k rows use each model's preset recommended for rsc15-like sessions.
SUITE: tuple[Row, ...] = (
    Row("pop", "rsc15-100k", "pop", None, _pair(0.089, 0.026, "published", "most-popular (data README)"),
        RSC15, 5, quick=True),
    Row("vsknn:tuned_rsc15", "rsc15-100k", "vsknn", "tuned_rsc15",
        _pair(0.674, 0.346, "published", "V-SKNN k=100, linear decay (data README)"), RSC15, 10, quick=True),
    Row("stan:tuned_rsc15", "rsc15-100k", "stan", "tuned_rsc15",
        _pair(0.6806, 0.3736, "ours", "our recorded run, regression check (no published STAN figure on this split)"),
        RSC15, 10, quick=True),
    Row("vstan:tuned_rsc15", "rsc15-100k", "vstan", "tuned_rsc15", (
        *_pair(0.6879, 0.3761, "ours", "our recorded run, regression check (no published VSTAN figure on this split)"),
        _ref("mrr@20", 0.3590, "ours", "our V-SKNN tuned_rsc15 on this split: VSTAN must be at least as accurate"),
    ), RSC15, 10, quick=True),
    Row("gru4rec:tuned_rsc15", "rsc15-100k", "gru4rec", "tuned_rsc15", _pair(0.679, 0.366, "official", _OFFICIAL_XE),
        RSC15, 30, quick=True),
    Row("gru4rec:tuned_rsc15_bprmax", "rsc15-100k", "gru4rec", "tuned_rsc15_bprmax",
        _pair(0.687, 0.366, "official", "official GRU4Rec, BPR-max (GRU4Rec issue)"), RSC15, 45, {"n_threads": 2}),
    Row("gru4rec:official_rsc15", "rsc15-100k", "gru4rec", "official_rsc15",
        _pair(0.6817, 0.3573, "official", "official GRU4Rec, same paramfile on this split, mean of 2 runs (data README)"),
        RSC15, 30, {"n_threads": 2}, quick=True),
    Row("sasrec:tuned_rsc15", "rsc15-100k", "sasrec", "tuned_rsc15",
        _pair(0.7137, 0.3819, "ours", "our recorded run, regression check (no published SASRec figure on this split)"),
        RSC15, 90, {"progress": False}),
    *(Row(name, "rsc15-100k", name, None,
          _pair(r20, m20, "ours", "our recorded run at the defaults, one seed, untuned: a regression check"),
          RSC15, seconds, {"progress": False})
      for name, r20, m20, seconds in (("narm", 0.6793, 0.3489, 45), ("stamp", 0.6519, 0.3490, 45),
                                      ("srgnn", 0.6439, 0.3267, 120), ("bert4rec", 0.6391, 0.3321, 150))),
    Row("sasrec:paper", "amazon-games", "sasrec", "paper", (
        _ref("sampled_hr@10", 0.741, "paper", "Kang & McAuley 2018, Table III"),
        _ref("sampled_ndcg@10", 0.536, "paper", "Kang & McAuley 2018, Table III"),
        _ref("recall@10", 0.0604, "ours", "our recorded mean of 3 seeds, regression check"),
        _ref("ndcg@10", 0.0276, "ours", "our recorded mean of 3 seeds, regression check"),
    ), GAMES + "; the paper's 200 epochs of BCE, validated every 20 epochs as the reference code does, the best "
        "validation epoch's weights (sampled NDCG@10) tested once", 1300,
        {"eval_every": 20, "patience": 0, "valid_metric": "sampled_ndcg@10", "progress": False},
        cutoffs=(10,), sampled_negatives=100, use_valid=True),
)


def default_data_dir() -> Path:
    """``$NEXTCLICK_DATA``, else ``../shared/data`` relative to the current directory."""
    env = os.environ.get("NEXTCLICK_DATA")
    return Path(env) if env else Path("..") / "shared" / "data"


def select_rows(quick: bool = False, names: Sequence[str] | None = None, suite: Sequence[Row] = SUITE) -> list[Row]:
    """The rows to run: the quick ones or all, narrowed to ``names`` (in the suite's order)."""
    rows = [r for r in suite if r.quick] if quick else list(suite)
    if names:
        known = {r.name for r in rows}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise NextclickError(f"--rows: unknown row {unknown[0]!r}; rows{' of --quick' if quick else ''}: "
                                 f"{', '.join(r.name for r in rows)}")
        rows = [r for r in rows if r.name in set(names)]
    return rows


def check_presets(rows: Sequence[Row]) -> None:
    """Import every row's model and check its preset, so a wrong name fails before any training
    (and the code a long run uses is read when it starts)."""
    from nextclick.models import get_model_class

    for row in rows:
        klass = get_model_class(row.model)
        if row.preset is not None and row.preset not in klass.presets:
            raise NextclickError(f"bench: row {row.name}: model {row.model} has no preset {row.preset!r}")


def check_data(rows: Sequence[Row], data_dir: Path) -> None:
    """Raise a one-line :class:`NextclickError` naming the first file the rows need that is missing."""
    for ds in dict.fromkeys(r.dataset for r in rows):
        need = DATASET_FILES[ds]
        missing = [f for f in need if not (data_dir / ds / f).is_file()]
        if missing:
            raise NextclickError(f"bench: dataset {ds} not found: expected {', '.join(need)} in {data_dir / ds} "
                                 f"(missing {missing[0]}; give --data-dir or set NEXTCLICK_DATA)")


def load_dataset(name: str, data_dir: Path) -> dict[str, Any]:
    """The splits of dataset ``name`` as Sessions: ``train``, ``test`` and, where the protocol has one, ``valid``."""
    from nextclick.data.dataset import load_sessions

    folder = data_dir / name
    if name == "rsc15-100k":
        train, _ = load_sessions(folder / "train_full.tsv", "train")
        test, _ = load_sessions(folder / "test.tsv", "test", vocab=train.vocab)
        return {"train": train, "test": test, "valid": None}
    if name == "amazon-games":
        from nextclick.data.recipes import run_recipe

        with tempfile.TemporaryDirectory(prefix="nextclick-bench-") as tmp:
            run_recipe("amazon", folder / "sequences.txt", Path(tmp) / "games")
            train, _ = load_sessions(Path(tmp) / "games", "train")
            valid, _ = load_sessions(Path(tmp) / "games", "valid", vocab=train.vocab)
            test, _ = load_sessions(Path(tmp) / "games", "test", vocab=train.vocab)
        return {"train": train, "test": test, "valid": valid}
    raise NextclickError(f"bench: unknown dataset {name!r}; known: {', '.join(DATASET_FILES)}")


def _measured(res: Any, metric: str) -> float:
    if metric.startswith("sampled_"):
        return float(res.sampled[metric.removeprefix("sampled_")])
    return float(res.metrics[metric])


def run_row(row: Row, data: dict[str, Any]) -> RowResult:
    """Fit ``row``'s model on ``data`` (from :func:`load_dataset`), evaluate it on the test split and judge it."""
    from nextclick.evaluate import evaluate
    from nextclick.models import create_model

    model = create_model(row.model, row.preset, **row.params)
    t0 = time.perf_counter()
    model.fit(data["train"], data["valid"] if row.use_valid else None)
    fit_s = time.perf_counter() - t0
    res = evaluate(model, data["test"], cutoffs=row.cutoffs, sampled_negatives=row.sampled_negatives or None, seed=0)
    n = int(res.metrics["n_predictions"])
    checks = [judge(row.name, ref, _measured(res, ref.metric), n) for ref in row.references]
    return RowResult(row, checks, fit_s, float(res.metrics["eval_seconds"]), n)


def run_suite(rows: Sequence[Row], data_dir: Path, say: Callable[[str], None] = lambda _: None,
              runner: Callable[[Row, dict[str, Any]], RowResult] = run_row,
              loader: Callable[[str, Path], dict[str, Any]] = load_dataset) -> list[RowResult]:
    """Run ``rows`` in order, each dataset loaded once; ``say`` gets a progress line as each row starts
    and ends, and the expected total up front."""
    check_data(rows, data_dir)
    total = sum(r.expected_seconds for r in rows)
    say(f"bench: {len(rows)} rows, expected about {_duration(total)} on the standard 2-core machine (idle)")
    loaded: dict[str, dict[str, Any]] = {}
    out: list[RowResult] = []
    t_start = time.perf_counter()
    for i, row in enumerate(rows, 1):
        say(f"[{i}/{len(rows)}] {row.name} on {row.dataset}: starting, expected about {_duration(row.expected_seconds)}")
        t0 = time.perf_counter()
        if row.dataset not in loaded:
            loaded[row.dataset] = loader(row.dataset, data_dir)
        result = runner(row, loaded[row.dataset])
        out.append(result)
        figures = ", ".join(f"{c.metric} {c.measured:.4f}" for c in result.checks)
        say(f"[{i}/{len(rows)}] {row.name}: {'pass' if result.passed else 'FAIL'} in {time.perf_counter() - t0:.0f} s "
            f"({figures}); {time.perf_counter() - t_start:.0f} s so far")
    return out


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _label(metric: str) -> str:
    """``sampled_hr@10`` -> ``HR@10 (sampled)``; ``recall@20`` -> ``Recall@20 (full)``."""
    sampled = metric.startswith("sampled_")
    name, _, k = metric.removeprefix("sampled_").partition("@")
    pretty = {"recall": "Recall", "mrr": "MRR", "ndcg": "NDCG", "hr": "HR"}.get(name, name)
    return f"{pretty}@{k} ({'sampled' if sampled else 'full'})"


def format_markdown(results: Sequence[RowResult]) -> str:
    """One markdown table, one line per metric of each row, then the protocols and a verdict line."""
    lines = ["| row | data / protocol | metric | reference (source) | measured | tolerance | pass/fail | fit s |",
             "|---|---|---|---|---|---|---|---|"]
    protocols: dict[str, int] = {}
    for res in results:
        p = protocols.setdefault(res.row.protocol, len(protocols) + 1)
        for j, c in enumerate(res.checks):
            ref = "-" if c.reference is None else f"{c.reference:g} ({c.kind}: {c.source})"
            tol = "-" if c.tolerance is None else f"{c.tolerance:.4f}"
            verdict = "-" if c.passed is None else ("pass" if c.passed else "**FAIL**")
            fit = f"{res.fit_seconds:.0f}" if j == 0 else ""
            lines.append(f"| {res.row.name if j == 0 else ''} | {res.row.dataset} [{p}] | {_label(c.metric)} | {ref} "
                         f"| {c.measured:.4f} | {tol} | {verdict} | {fit} |")
    lines.append("")
    lines += [f"[{i}] {text}." for text, i in protocols.items()]
    judged = [c for r in results for c in r.checks if c.passed is not None]
    failed = [f"{c.row} {c.metric}" for c in judged if not c.passed]
    lines.append("")
    lines.append(f"{len(judged) - len(failed)} of {len(judged)} checks pass"
                 + (f"; FAILED: {', '.join(failed)}" if failed else "") + ".")
    return "\n".join(lines) + "\n"


def as_json(results: Sequence[RowResult], wall_seconds: float | None = None) -> dict[str, Any]:
    """The results as plain data: every row with its settings, timings and checks, and the verdict."""
    rows = []
    for res in results:
        r = asdict(res.row)
        r.pop("references")
        rows.append({**r, "fit_seconds": res.fit_seconds, "eval_seconds": res.eval_seconds,
                     "n_predictions": res.n_predictions, "passed": res.passed,
                     "checks": [asdict(c) for c in res.checks]})
    return {"passed": all(r.passed for r in results), "wall_seconds": wall_seconds, "rows": rows}
