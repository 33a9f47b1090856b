"""Hyper-parameter search with Optuna (TPE) for any registered model, on validation data only.

Every trial trains on the training part of the training data (``train_tr`` of a time-split
dataset, ``train`` of a leave-one-out one, or an explicit ``--train`` file) and is scored on the
validation split (``valid`` / ``train_valid.tsv``) with the same full-catalogue evaluation as
:func:`nextclick.evaluate.evaluate`. The test split is never opened.

A search space is plain JSON, one entry per hyper-parameter of the model's ``Config``::

    {"learning_rate": {"low": 0.01, "high": 0.3, "log": true},
     "n_sample": {"choices": [512, 1024, 2048]},
     "layers": {"choices": [[100], [100, 100]]}}

A range follows the parameter's type: integers for an ``int`` field, floats for a ``float`` one
(``{"low": 0, "high": 1}`` on a float field is the interval [0, 1]); ``step`` is optional, ``log``
(log-uniform) excludes ``step``. ``choices`` may hold any values the parameter accepts.

Results are plain files: ``trials.csv`` (one row per trial) and ``best.json`` (best parameters
merged with the preset and fixed ones, the metric, the data used). A trial whose parameter
combination a model rejects (:class:`NextclickError`) is recorded as failed; the study goes on.

Example::

    from nextclick.tune import load_tuning_data, tune
    data = load_tuning_data("data/shop")                      # train_tr -> valid
    res = tune("vsknn", data, {"k": {"low": 50, "high": 500}}, n_trials=20, out="runs/tune-vsknn")
    print(res.best_value, res.best_params)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nextclick.data.dataset import META, Dataset, encode_clicks, load_sessions
from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError
from nextclick.models import get_model_class
from nextclick.models.base import Recommender, parse_params

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.csv"
BEST_FILE = "best.json"
TUNE_FORMAT = "nextclick-tune"
METRICS = ("recall", "mrr", "ndcg", "coverage", "popularity")
_SPEC_KEYS = {"low", "high", "log", "step", "choices"}


# ---------------------------------------------------------------------------------- data
@dataclass
class TuningData:
    """Training and validation sessions of a search, and where they came from."""

    train: Sessions
    valid: Sessions
    sources: dict[str, str]  # plain strings for best.json: which files / splits were read


def load_tuning_data(
    data: str | Path | None = None, train: str | Path | None = None, valid: str | Path | None = None
) -> TuningData:
    """Training and validation data for a search; never reads a test split.

    ``data``: a prepared dataset directory. Time split: train on ``train_tr``, validate on
    ``valid`` (the catalogue is fitted on ``train_tr``, so validation clicks on items it never saw
    are removed, as the test protocol does with ``train``). Leave-one-out: train on ``train``,
    validate on the last click of ``valid``, over the dataset's catalogue.
    Or ``train`` and ``valid``: click files (e.g. ``train_tr.tsv`` / ``train_valid.tsv``) or
    parquet files of a dataset; a dataset's ``test`` split, and a time split's full ``train``
    (which holds the validation period), are refused.
    """
    if data is not None:
        if train is not None or valid is not None:
            raise NextclickError("give either a dataset directory (--data) or --train and --valid files, not both")
        return _from_dataset(Path(data))
    if train is None or valid is None:
        raise NextclickError("tuning needs a dataset directory (--data) or both --train and --valid files")
    train, valid = Path(train), Path(valid)
    for opt, p in (("--train", train), ("--valid", valid)):
        if not p.exists():
            raise NextclickError(f"{opt} {p}: no such file")
        if p.is_dir():
            raise NextclickError(f"{opt} {p}: is a directory; pass a prepared dataset as --data (it uses train_tr -> valid)")
        _refuse_wrong_split(opt, p)
    if train.resolve() == valid.resolve():
        raise NextclickError(f"--train and --valid are the same file ({train}); validate on held-out sessions")
    tr, _ = load_sessions(train, "train_tr")
    va, rep = load_sessions(valid, "valid", vocab=tr.vocab)
    _log_encode(valid, rep.as_dict())
    _check_overlap(tr, va, train, valid)
    return _checked(TuningData(tr, va, {"train": str(train), "valid": str(valid)}))


def _from_dataset(path: Path) -> TuningData:
    if not path.is_dir():
        raise NextclickError(f"--data {path}: not a directory; give a dataset prepared by `nextclick prepare`")
    ds = Dataset.open(path)
    split = ds.meta.get("split")
    if split == "time":
        train_role = "train_tr"
        frame = ds.frame(train_role)
        vocab = ItemVocab.fit(frame.get_column("ItemId").to_numpy())
        tr, _ = encode_clicks(frame, vocab, last_only=ds.last_only(train_role))
    elif split == "loo":
        train_role = "train"
        tr, _ = ds.sessions(train_role)
    else:
        raise NextclickError(f"--data {path}: split {split!r} has no validation split; prepare it with --split time or loo")
    va, rep = ds.sessions("valid", vocab=tr.vocab)
    _log_encode(path / ds.meta["files"]["valid"], rep.as_dict())
    sources = {
        "dataset": str(path),
        "train": str(path / ds.meta["files"][train_role]),
        "valid": str(path / ds.meta["files"]["valid"]),
        "train_role": train_role,
        "valid_role": "valid",
    }
    return _checked(TuningData(tr, va, sources))


def _refuse_wrong_split(opt: str, p: Path) -> None:
    """A parquet file of a prepared dataset: refuse its test split, and a time split's full train."""
    if p.suffix != ".parquet" or not (p.parent / META).exists():
        if re.search(r"(^|[^a-z])test([^a-z]|$)", p.stem.lower()):
            log.warning("%s %s: the name looks like a test split; tuning should only see training and validation data", opt, p)
        return
    ds = Dataset.open(p.parent)
    role = next((r for r, f in ds.meta["files"].items() if f == p.name), None)
    if role == "test":
        raise NextclickError(f"{opt} {p}: is the test split of {p.parent}; tuning never reads it (use train_tr and valid)")
    if opt == "--train" and role == "train" and ds.meta.get("split") == "time":
        raise NextclickError(f"--train {p}: the full train split holds the validation period; use train_tr.parquet")


def _check_overlap(tr: Sessions, va: Sessions, train: Path, valid: Path) -> None:
    """Warn when training holds validation sessions in full (e.g. train_full.tsv with train_valid.tsv)."""
    if tr.session_ids is None or va.session_ids is None or not tr.n_sessions or not va.n_sessions:
        return
    if tr.session_ids.dtype.kind != va.session_ids.dtype.kind:
        return
    _, ti, vi = np.intersect1d(tr.session_ids, va.session_ids, assume_unique=True, return_indices=True)
    n = int((tr.lengths[ti] >= va.lengths[vi]).sum())  # leave-one-out: train holds shorter prefixes
    if n:
        log.warning(
            "--train %s holds %d of the %d validation sessions of --valid %s in full: their targets are in training",
            train,
            n,
            va.n_sessions,
            valid,
        )


def _log_encode(path: Path, rep: dict[str, int]) -> None:
    if any(rep.values()):
        log.info(
            "%s: removed %d clicks on items unknown to training, then %d sessions left shorter than 2",
            path,
            rep["unknown_item_events_removed"],
            rep["short_sessions_removed"],
        )


def _checked(d: TuningData) -> TuningData:
    if d.train.n_events == 0:
        raise NextclickError(f"{d.sources['train']}: no training clicks")
    if d.valid.n_predictions() == 0:
        raise NextclickError(f"{d.sources['valid']}: no validation predictions left (no session of 2+ known clicks)")
    return d


# ---------------------------------------------------------------------------------- search space
@dataclass(frozen=True)
class ParamSpace:
    """One searched hyper-parameter: an int or float range, or a list of choices."""

    name: str
    kind: Literal["int", "float", "choice"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()  # as Optuna sees them (JSON scalars, or JSON text for lists)
    values: tuple[Any, ...] = ()  # the same choices typed for the model's Config

    def suggest(self, trial: Any) -> Any:
        """Draw a value from an Optuna trial, typed for the model's Config."""
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)
        picked = json.dumps(trial.suggest_categorical(self.name, self.choices))
        return self.values[[json.dumps(c) for c in self.choices].index(picked)]  # json: 1, 1.0 and true differ

    def to_json(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"choices": [_jsonable(v) for v in self.values]}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


SearchSpace = dict[str, ParamSpace]


def parse_space(spec: str | Path | Mapping[str, Any], config_cls: type) -> SearchSpace:
    """Search space from a JSON file, inline JSON text or a mapping, checked against ``config_cls``."""
    if isinstance(spec, Mapping):
        obj: Any = spec
        src = "--space"
    else:
        obj, src = _read_json(spec)
    if not isinstance(obj, Mapping) or not obj:
        raise NextclickError(
            f'{src}: expected a JSON object with at least one parameter, e.g. {{"k": {{"low": 50, "high": 500}}}}'
        )
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    space: SearchSpace = {}
    for name, entry in obj.items():
        if name not in hints:
            raise NextclickError(f"--space {name}: unknown parameter of this model; known: {', '.join(names) or 'none'}")
        space[name] = _parse_entry(name, entry, hints[name], config_cls)
    return space


def _read_json(spec: str | Path) -> tuple[Any, str]:
    text = str(spec).strip()
    path = Path(text) if not text.startswith(("{", "[")) else None
    if path is not None:
        if not path.is_file():
            raise NextclickError(f"--space {spec}: no such file, and not inline JSON (which starts with '{{')")
        text, src = path.read_text(), f"--space {path}"
    else:
        src = "--space (inline JSON)"
    try:
        return json.loads(text), src
    except json.JSONDecodeError as e:
        raise NextclickError(f"{src}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _base_type(tp: Any) -> Any:
    """``int`` / ``float`` for numeric fields (also inside Optional), else the annotation itself."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _parse_entry(name: str, entry: Any, tp: Any, config_cls: type) -> ParamSpace:
    where = f"--space {name}"
    if not isinstance(entry, Mapping):
        raise NextclickError(
            f'{where}: expected an object like {{"low": 1, "high": 10}} or {{"choices": [...]}}, got {json.dumps(entry)}'
        )
    unknown = set(entry) - _SPEC_KEYS
    if unknown:
        raise NextclickError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected low/high (+ log, step) or choices")
    if "choices" in entry:
        if set(entry) != {"choices"}:
            raise NextclickError(f"{where}: give either choices or low/high, not both")
        return _parse_choices(name, entry["choices"], config_cls)
    if "low" not in entry or "high" not in entry:
        raise NextclickError(f"{where}: a range needs both low and high")
    low, high, step, use_log = entry["low"], entry["high"], entry.get("step"), entry.get("log", False)
    if not (_is_number(low) and _is_number(high)):
        raise NextclickError(f"{where}: low and high must be numbers, got {json.dumps(low)} and {json.dumps(high)}")
    if low > high:
        raise NextclickError(f"{where}: low={low} is greater than high={high}")
    if not isinstance(use_log, bool):
        raise NextclickError(f"{where}: log must be true or false, got {json.dumps(use_log)}")
    if step is not None and not (_is_number(step) and step > 0):
        raise NextclickError(f"{where}: step must be a positive number, got {json.dumps(step)}")
    if use_log and step is not None:
        raise NextclickError(f"{where}: log and step cannot be combined")
    if use_log and low <= 0:
        raise NextclickError(f"{where}: a log range needs low > 0, got low={low}")
    base = _base_type(tp)
    if base is int:
        if not (isinstance(low, int) and isinstance(high, int)) or isinstance(step, float):
            raise NextclickError(f"{where}: the parameter is an integer; low, high and step must be integers")
        return ParamSpace(name, "int", low, high, use_log, step)
    if base is float:
        return ParamSpace(name, "float", float(low), float(high), use_log, None if step is None else float(step))
    raise NextclickError(f"{where}: the parameter is {_type_name(tp)}, not a number; give choices instead of a range")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_choices(name: str, choices: Any, config_cls: type) -> ParamSpace:
    where = f"--space {name}"
    if not isinstance(choices, list) or not choices:
        raise NextclickError(f"{where}: choices must be a non-empty list, got {json.dumps(choices)}")
    values = []
    for c in choices:
        if isinstance(c, dict) or (isinstance(c, list) and any(isinstance(x, list | dict) for x in c)):
            raise NextclickError(f"{where}: choice {json.dumps(c)} is not a value this parameter can take")
        try:  # the same parsing and checks as `--param name=value`
            values.append(parse_params(config_cls, [f"{name}={_as_text(c)}"])[name])
        except NextclickError as e:
            raise NextclickError(f"{where}: choice {json.dumps(c)} does not fit the parameter ({e})") from None
    scalar = all(c is None or isinstance(c, bool | int | float | str) for c in choices)
    keys = tuple(choices) if scalar else tuple(json.dumps(c) for c in choices)
    if len(set(map(json.dumps, choices))) != len(choices):
        raise NextclickError(f"{where}: choices repeat a value")
    return ParamSpace(name, "choice", choices=keys, values=tuple(values))


def _as_text(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ",".join(_as_text(x) for x in v)
    return str(v)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def parse_metric(metric: str) -> tuple[str, int]:
    """``"mrr@20"`` -> ``("mrr", 20)``; the metric must be one :func:`evaluate` reports at a cutoff."""
    m = re.fullmatch(r"\s*([a-z]+)@(\d+)\s*", metric.lower())
    if not m or m.group(1) not in METRICS or int(m.group(2)) < 1:
        raise NextclickError(
            f"--metric {metric!r}: expected NAME@K with NAME one of {', '.join(METRICS)} and K >= 1, e.g. mrr@20"
        )
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------------------------- the search
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
    direction: str = "maximize",
    n_trials: int | None = 20,
    timeout: float | None = None,
) -> tuple[type[Recommender], SearchSpace]:
    """Check every argument of :func:`tune` (cheap, reads no data); returns the model class and
    the parsed search space. Raises :class:`NextclickError` naming the argument at fault."""
    klass = get_model_class(model) if isinstance(model, str) else model
    parse_metric(metric)
    if direction not in ("maximize", "minimize"):
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
    direction: Literal["maximize", "minimize"] = "maximize",
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
        "fixed": {k_: _jsonable(v) for k_, v in fixed.items()},
        "space": {n: p.to_json() for n, p in space.items()},
        "metric": metric,
        "direction": direction,
        "seed": seed,
        "data": data.sources,
        "n_train_events": data.train.n_events,
        "n_valid_predictions": data.valid.n_predictions(),
    }
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
        trial = study.ask()
        done += 1
        try:
            tuned = {n: p.suggest(trial) for n, p in space.items()}
        except ValueError as e:  # a resumed study whose stored distributions differ from --space
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise NextclickError(f"--space does not match the stored study {study.study_name!r}: {e}") from None
        trial.set_user_attr("params", {n: _jsonable(v) for n, v in tuned.items()})
        try:
            metrics = _run_trial(klass, preset, {**fixed, **tuned}, data, k)
        except NextclickError as e:
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("trial %d failed: %s", trial.number, e)
            _report(study, trial.number, direction, metric, out_dir, info, base, echo, error=str(e))
            continue
        except BaseException:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        value = float(metrics[metric])
        trial.set_user_attr("metrics", metrics)
        study.tell(trial, value)
        _report(study, trial.number, direction, metric, out_dir, info, base, echo)
    return _result(study, direction, base, out_dir)


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


def _report(
    study: Any,
    number: int,
    direction: str,
    metric: str,
    out: Path | None,
    info: dict[str, Any],
    base: dict[str, Any],
    echo: Callable[[str], None] | None,
    error: str | None = None,
) -> None:
    t = next(t for t in reversed(study.trials) if t.number == number)
    best = _best(study, direction)
    params = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={json.dumps(v)}" for k, v in sorted(_trial_params(t).items())
    )
    dur = t.duration.total_seconds() if t.duration is not None else float("nan")
    if error is not None:
        line = f"trial {number:>3}  FAILED ({error})  {dur:.2f} s  {params}"
    else:
        line = f"trial {number:>3}  {metric}={t.value:.4f}  best={best.value:.4f} (trial {best.number})  {dur:.2f} s  {params}"
    if echo is not None:
        echo(line)
    else:
        log.info("%s", line)
    if out is not None:
        write_trials_csv(study, out / TRIALS_FILE)
        if best is not None:
            (out / BEST_FILE).write_text(json.dumps(_best_json(study, best, info, base), indent=1) + "\n")


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
        "params": {**{k: _jsonable(v) for k, v in base.items()}, **tuned},
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
        best_params={**{k: _jsonable(v) for k, v in base.items()}, **tuned},
        tuned_params=tuned,
        n_complete=states.count(optuna.trial.TrialState.COMPLETE),
        n_failed=n_failed,
        out=out,
        study=study,
    )
