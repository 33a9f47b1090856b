"""The search itself: an Optuna (TPE) study whose trials fit a model on the training data and
score it on the validation data, with ``trials.csv`` and ``best.json`` rewritten after each trial."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nextclick.errors import NextclickError
from nextclick.models import get_model_class
from nextclick.models.base import Recommender
from nextclick.tune import Direction
from nextclick.tune.data import TuningData
from nextclick.tune.space import ParamSpace, SearchSpace, jsonable, parse_metric, parse_space

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.csv"
BEST_FILE = "best.json"
TUNE_FORMAT = "nextclick-tune"


@dataclass
class TuneResult:
    """Outcome of :func:`tune`; ``study`` is the Optuna study (for plots, further analysis)."""

    best_value: float
    best_trial: int
    best_params: dict[str, Any]  # preset + fixed + tuned, what to train the final model with
    tuned_params: dict[str, Any]
    n_complete: int
    n_failed: int
    out: Path | None
    study: Any = field(repr=False, default=None)


def require_optuna() -> Any:
    """The optuna module, or a :class:`NextclickError` saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise NextclickError("tuning needs optuna: pip install 'nextclick[tune]'") from None
    return optuna


def check_arguments(
    model: str | type[Recommender],
    space: str | Path | Mapping[str, Any],
    *,
    preset: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    metric: str = "mrr@20",
    direction: Direction = "maximize",
    n_trials: int | None = 20,
    timeout: float | None = None,
) -> tuple[type[Recommender], SearchSpace]:
    """Check every argument of :func:`tune` (cheap, reads no data); returns the model class and
    the parsed search space. Raises :class:`NextclickError` naming the argument at fault."""
    klass = get_model_class(model) if isinstance(model, str) else model
    parse_metric(metric)
    if direction not in typing.get_args(Direction):
        raise NextclickError(f"--direction {direction!r}: expected maximize or minimize")
    if n_trials is None and timeout is None:
        raise NextclickError("give --trials or --timeout (or both)")
    if n_trials is not None and n_trials < 1:
        raise NextclickError(f"--trials {n_trials}: expected an integer >= 1")
    if timeout is not None and not timeout > 0:
        raise NextclickError(f"--timeout {timeout}: expected a positive number of seconds")
    parsed = dict(space) if _is_space(space) else parse_space(space, klass.Config)  # type: ignore[arg-type]
    known = [f.name for f in dataclasses.fields(klass.Config)]
    for key in fixed or {}:
        if key not in known:
            raise NextclickError(f"--param {key}: unknown parameter; known: {', '.join(known)}")
        if key in parsed:
            raise NextclickError(f"--param {key}: is also in --space; a parameter is either fixed or searched")
    klass.from_preset(preset, **dict(fixed or {}))  # unknown preset / invalid fixed values fail before any trial
    return klass, parsed


def tune(
    model: str | type[Recommender],
    data: TuningData,
    space: str | Path | Mapping[str, Any],
    *,
    preset: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    metric: str = "mrr@20",
    direction: Direction = "maximize",
    n_trials: int | None = 20,
    timeout: float | None = None,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    out: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search ``space`` with TPE: each trial fits ``model`` on ``data.train`` and scores ``metric``
    on ``data.valid``.

    Stops after ``n_trials`` new trials or once ``timeout`` seconds have passed (checked between
    trials: a running trial is finished, and at least one trial runs). With ``storage`` (an Optuna
    RDB URL such as ``sqlite:///tune.db``) an earlier study of the same name is resumed. With
    ``out``, writes ``trials.csv`` and ``best.json`` there after every trial. ``echo`` gets one
    progress line per trial (else they are logged at INFO).
    """
    optuna = require_optuna()

    klass, space = check_arguments(
        model, space, preset=preset, fixed=fixed, metric=metric, direction=direction, n_trials=n_trials, timeout=timeout
    )
    name, k = parse_metric(metric)
    metric = f"{name}@{k}"
    fixed = dict(fixed or {})
    base = {**(klass.presets.get(preset, {}) if preset else {}), **fixed}

    study = _open_study(optuna, klass.name, metric, direction, seed, storage, study_name)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "model": klass.name,
        "preset": preset,
        "fixed": {k_: jsonable(v) for k_, v in fixed.items()},
        "space": {n: p.to_json() for n, p in space.items()},
        "metric": metric,
        "direction": direction,
        "seed": seed,
        "data": data.sources,
        "n_train_events": data.train.n_events,
        "n_valid_predictions": data.valid.n_predictions(),
    }
    search = _Search(klass, preset, fixed, space, data, k, metric, direction, out_dir, info, base, echo)
    log.info(
        "tuning %s: %s (trials %s, timeout %s) on %s -> %s",
        klass.name,
        metric,
        n_trials,
        timeout,
        data.sources.get("train"),
        data.sources.get("valid"),
    )
    t_start = time.perf_counter()
    done = 0
    while n_trials is None or done < n_trials:
        if timeout is not None and done and time.perf_counter() - t_start >= timeout:
            log.info("timeout of %.0f s reached after %d trials", timeout, done)
            break
        done += 1
        _one_trial(optuna, study, search)
    return _result(study, direction, base, out_dir)


@dataclass
class _Search:
    """What every trial of one :func:`tune` call shares."""

    klass: type[Recommender]
    preset: str | None
    fixed: dict[str, Any]
    space: SearchSpace
    data: TuningData
    k: int  # the metric's cutoff
    metric: str  # "name@k"
    direction: Direction
    out: Path | None  # where trials.csv and best.json go
    info: dict[str, Any]  # the search's settings, written into best.json
    base: dict[str, Any]  # preset + fixed parameters
    echo: Callable[[str], None] | None


def _one_trial(optuna: Any, study: Any, s: _Search) -> None:
    """Ask ``study`` for a trial, fit and score it, tell the study the outcome and report it. A
    trial the model rejects (:class:`NextclickError`) is told as failed; anything else fails the
    trial and propagates."""
    trial = study.ask()
    try:
        tuned = {n: p.suggest(trial) for n, p in s.space.items()}
    except ValueError as e:  # a resumed study whose stored distributions differ from --space
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise NextclickError(f"--space does not match the stored study {study.study_name!r}: {e}") from None
    trial.set_user_attr("params", {n: jsonable(v) for n, v in tuned.items()})
    try:
        metrics = _run_trial(s.klass, s.preset, {**s.fixed, **tuned}, s.data, s.k)
    except NextclickError as e:
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", trial.number, e)
        _report(study, trial.number, s, error=str(e))
        return
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    value = float(metrics[s.metric])
    trial.set_user_attr("metrics", metrics)
    study.tell(trial, value)
    _report(study, trial.number, s)


def _is_space(space: Any) -> bool:
    return isinstance(space, Mapping) and bool(space) and all(isinstance(p, ParamSpace) for p in space.values())


def _open_study(
    optuna: Any, model: str, metric: str, direction: str, seed: int, storage: str | None, study_name: str | None
) -> Any:
    sampler = optuna.samplers.TPESampler(seed=seed)
    if storage is None:
        return optuna.create_study(direction=direction, sampler=sampler, study_name=study_name)
    name = study_name or f"nextclick-{model}-{metric}"
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler, load_if_exists=True)
    except Exception as e:  # bad URL, unreachable database, direction differs from the stored study
        raise NextclickError(f"--storage {storage}: cannot open study {name!r}: {e}") from None
    stored = study.user_attrs
    want = {"model": model, "metric": metric, "direction": direction}
    if stored and {k: stored.get(k) for k in want} != want:
        raise NextclickError(
            f"--storage {storage}: study {name!r} tunes {stored.get('model')} for {stored.get('metric')} "
            f"({stored.get('direction')}), not {model} for {metric} ({direction}); pass another --study-name"
        )
    if not stored:
        for k, v in want.items():
            study.set_user_attr(k, v)
    n_old = len(study.trials)
    if n_old:
        # a fresh sampler with the same seed would repeat the first run's random start-up points
        study.sampler = optuna.samplers.TPESampler(seed=seed + n_old)
        log.info("resuming study %r with %d earlier trials", name, n_old)
    return study


def _run_trial(
    klass: type[Recommender], preset: str | None, params: dict[str, Any], data: TuningData, k: int
) -> dict[str, float]:
    from nextclick.evaluate import evaluate

    rec = klass.from_preset(preset, **params)
    rec.fit(data.train, data.valid)
    res = evaluate(rec, data.valid, cutoffs=(k,))
    m = {key: float(v) for key, v in res.metrics.items() if key.endswith(f"@{k}")}
    m["fit_seconds"] = float(rec.fit_seconds_)
    if not all(math.isfinite(v) for v in m.values()):
        raise NextclickError(f"validation metrics are not finite: {m}")
    return m


def _best(study: Any, direction: str) -> Any | None:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(done, key=lambda t: (sign * t.value, -t.number))  # ties: the earliest trial


def _trial_params(t: Any) -> dict[str, Any]:
    return t.user_attrs.get("params", t.params)


def _report(study: Any, number: int, s: _Search, error: str | None = None) -> None:
    """Echo (or log) one line for trial ``number``; with ``s.out``, rewrite trials.csv and best.json."""
    t = next(t for t in reversed(study.trials) if t.number == number)
    best = _best(study, s.direction)
    params = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in sorted(_trial_params(t).items())
    )
    dur = t.duration.total_seconds() if t.duration is not None else float("nan")
    if error is not None:
        line = f"trial {number:>3}  FAILED ({error})  {dur:.2f} s  {params}"
    else:
        line = f"trial {number:>3}  {s.metric}={t.value:.4f}  best={best.value:.4f} (trial {best.number})  {dur:.2f} s  {params}"
    if s.echo is not None:
        s.echo(line)
    else:
        log.info("%s", line)
    if s.out is not None:
        write_trials_csv(study, s.out / TRIALS_FILE)
        if best is not None:
            (s.out / BEST_FILE).write_text(json.dumps(_best_json(study, best, s.info, s.base), indent=1) + "\n")


def write_trials_csv(study: Any, path: str | Path) -> Path:
    """One row per trial: number, state, value, duration_s, params (JSON), error."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "state", "value", "duration_s", "params", "error"])
        for t in study.trials:
            w.writerow(
                [
                    t.number,
                    t.state.name,
                    "" if t.value is None else repr(float(t.value)),
                    "" if t.duration is None else f"{t.duration.total_seconds():.3f}",
                    json.dumps(_trial_params(t), sort_keys=True),
                    t.user_attrs.get("error", ""),
                ]
            )
    return path


def _best_json(study: Any, best: Any, info: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    import optuna

    from nextclick import __version__

    tuned = _trial_params(best)
    states = [t.state for t in study.trials]
    return {
        "format": TUNE_FORMAT,
        "version": 1,
        **info,
        "value": best.value,
        "best_trial": best.number,
        "params": {**{k: jsonable(v) for k, v in base.items()}, **tuned},
        "tuned": tuned,
        "metrics": best.user_attrs.get("metrics", {}),
        "n_trials": len(states),
        "n_complete": states.count(optuna.trial.TrialState.COMPLETE),
        "n_failed": states.count(optuna.trial.TrialState.FAIL),
        "study_name": study.study_name,
        "nextclick_version": __version__,
        "optuna_version": optuna.__version__,
    }


def _result(study: Any, direction: str, base: dict[str, Any], out: Path | None) -> TuneResult:
    import optuna

    states = [t.state for t in study.trials]
    n_failed = states.count(optuna.trial.TrialState.FAIL)
    best = _best(study, direction)
    if best is None:
        first = next((t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")), "no trial ran")
        raise NextclickError(f"all {len(states)} trials failed; first error: {first}")
    tuned = _trial_params(best)
    return TuneResult(
        best_value=float(best.value),
        best_trial=best.number,
        best_params={**{k: jsonable(v) for k, v in base.items()}, **tuned},
        tuned_params=tuned,
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_failed=n_failed,
        out=out,
        study=study,
    )


def read_best(path: str | Path, model: str) -> dict[str, Any]:
    """The parameters of the best trial in a ``best.json`` written by :func:`tune` for ``model``
    (its preset's values, the fixed ones and the searched ones, merged), to train the winner with."""
    p = Path(path)
    if p.is_dir():
        p = p / BEST_FILE
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise NextclickError(f"--tuned {p}: no such file (give the best.json, or the folder, of `nextclick tune`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NextclickError(f"--tuned {p}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != TUNE_FORMAT or not isinstance(doc.get("params"), dict):
        raise NextclickError(f"--tuned {p}: not a best.json of `nextclick tune` (no format {TUNE_FORMAT!r} with params)")
    if doc.get("model") != model:
        raise NextclickError(f"--tuned {p}: tuned for model {doc.get('model')!r}, not {model!r}")
    return dict(doc["params"])
