"""Search spaces and the validation metric of a search.

A search space is plain JSON, one entry per hyper-parameter of the model's ``Config``::

    {"learning_rate": {"low": 0.01, "high": 0.3, "log": true},
     "n_sample": {"choices": [512, 1024, 2048]},
     "layers": {"choices": [[100], [100, 100]]}}

A range follows the parameter's type: integers for an ``int`` field, floats for a ``float`` one
(``{"low": 0, "high": 1}`` on a float field is the interval [0, 1]); ``step`` is optional, ``log``
(log-uniform) excludes ``step``. ``choices`` may hold any values the parameter accepts; each is
parsed and checked as ``--param name=value`` would be.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from nextclick.errors import NextclickError
from nextclick.models.base import parse_params

METRICS = ("recall", "mrr", "ndcg", "coverage", "popularity")
_SPEC_KEYS = {"low", "high", "log", "step", "choices"}


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
            return {"choices": [jsonable(v) for v in self.values]}
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


def jsonable(v: Any) -> Any:
    """``v`` as plain JSON data: tuples as lists, numpy scalars as Python numbers."""
    if isinstance(v, tuple | list):
        return [jsonable(x) for x in v]
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
