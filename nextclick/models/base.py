"""The one contract every recommender honours (popularity, kNN, GRU4Rec, SASRec).

Subclasses implement four things:

* ``Config`` -- a dataclass of named hyper-parameters with the paper's defaults (``presets`` holds
  published settings by name);
* ``_fit(train, valid)`` -- learn from :class:`~nextclick.data.sessions.Sessions`;
* ``_score(sessions, sess, plen)`` -- scores over the whole catalogue, shape (B, n_items + 1), for
  the next click after the first ``plen[b]`` clicks of session ``sess[b]`` (column 0 is padding
  and is ignored);
* ``_state()`` / ``_set_state(arrays)`` -- learned state as a flat dict of numpy arrays.

Everything else -- id mapping, unknown items, popularity fallback, top-k, exclusion, batching,
artifacts -- lives here, so evaluation and serving never special-case a model. Sequence models
may override :meth:`iter_scores` for a faster evaluation pass. The service reaches a model only
through :meth:`Recommender.live` (:mod:`nextclick.models.live`): start a session's state,
advance it by a click, turn it into scores or (dot-product models) a query.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError, NotFittedError
from nextclick.models import artifact
from nextclick.models.live import LiveSessions
from nextclick.ranking import top_k

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Recommendation:
    """Top-k answer for one session, in the shop's own item ids."""

    items: np.ndarray  # (k,) item ids
    scores: np.ndarray  # (k,) float32, descending
    unknown: list[Any]  # input ids that are not in the catalogue (ignored)
    fallback: bool  # True when no input item was known and popularity was used


class Recommender:
    """Base class; see the module docstring for the contract."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = type("Config", (), {})
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the preset to start from on a kind of data (shown by ``nextclick models``)
    recommended: ClassVar[dict[str, str]] = {}
    #: presets' former names -> their names now (named for where they come from: ``official_*``
    #: from the authors' code, ``tuned_<data>`` chosen on validation data, ``paper*``, ``spec_*``)
    renamed_presets: ClassVar[dict[str, str]] = {}
    needs_torch: ClassVar[bool] = False

    def __init__(self, config: Any | None = None, **params: Any) -> None:
        base = config if config is not None else self.Config()
        self.config = dataclasses.replace(base, **params) if params else base

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_preset(cls, preset: str | None = None, **params: Any) -> Recommender:
        values: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets and preset in cls.renamed_presets:
                raise NextclickError(f"model {cls.name!r}: preset {preset!r} is now called {cls.renamed_presets[preset]!r}")
            if preset not in cls.presets:
                raise NextclickError(f"model {cls.name!r} has no preset {preset!r}; presets: {sorted(cls.presets) or 'none'}")
            values.update(cls.presets[preset])
        values.update(params)
        return cls(cls.Config(**values))

    # ------------------------------------------------------------------ fitting
    def fit(self, train: Sessions, valid: Sessions | None = None) -> Recommender:
        """Learn from training sessions (and optionally monitor ``valid``). Returns ``self``."""
        if train.n_events == 0:
            raise NextclickError("cannot fit on an empty training set")
        self.n_items_ = int(train.n_items)
        self.vocab_ = train.vocab if train.vocab is not None else ItemVocab(np.arange(1, self.n_items_ + 1))
        if len(self.vocab_) != self.n_items_:
            raise ValueError("train.vocab and train.n_items disagree")
        self.popularity_ = train.item_counts().astype(np.float32)
        self.training_ = {"events": train.n_events, "sessions": train.n_sessions, "consecutive_repeats": train.consecutive_repeats()}
        t0 = time.perf_counter()
        self._fit(train, valid)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        raise NotImplementedError

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        pass

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "popularity_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() or load() first")

    # ------------------------------------------------------------------ scoring (internal indices)
    def score_batch(self, sessions: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
        """Scores (B, n_items + 1) for the next click after each session of internal indices.

        Indices of 0 (unknown/padding) are ignored; a session with no known index gets the
        training popularity. Column 0 is -inf.
        """
        self._check_fitted()
        seqs = [np.asarray(s, dtype=np.int64) for s in sessions]
        seqs = [s[(s > 0) & (s <= self.n_items_)] for s in seqs]
        lengths = np.array([s.size for s in seqs], dtype=np.int64)
        out = np.empty((len(seqs), self.n_items_ + 1), dtype=np.float32)
        nonempty = np.flatnonzero(lengths > 0)
        if nonempty.size:
            sub = Sessions.from_lists([seqs[i] for i in nonempty], n_items=self.n_items_)
            out[nonempty] = self._score(sub, np.arange(nonempty.size), sub.lengths)
        empty = lengths == 0
        if empty.any():
            out[empty] = self.popularity_
        out[:, 0] = -np.inf
        return out

    def iter_scores(
        self, sessions: Sessions, batch_size: int = 1024
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(scores, targets, sess, plen)`` for every evaluation prefix of ``sessions``.

        The default batches prefixes through ``_score``; sequence models override it to compute
        all positions of a session in one pass.
        """
        self._check_fitted()
        sess, plen, targets = sessions.prefixes()
        for a in range(0, sess.size, batch_size):
            b = slice(a, a + batch_size)
            scores = np.asarray(self._score(sessions, sess[b], plen[b]), dtype=np.float32)
            scores[:, 0] = -np.inf
            yield scores, targets[b], sess[b], plen[b]

    def iter_queries(self, sessions: Sessions, batch_size: int = 1024) -> Iterator[tuple[Any, np.ndarray, np.ndarray, np.ndarray]]:
        """Dot-product models only (``self.live().output_layer()`` gives ``(W, b)``: the scores are
        ``q @ W.T + b``): yield ``(queries, targets, sess, plen)`` for every evaluation prefix of
        ``sessions``, like :meth:`iter_scores` but with the (B, d) float32 torch query vectors in
        place of the score rows, so evaluation can rank a large catalogue in chunks."""
        raise NotImplementedError(f"{self.name} is not a dot-product model: use iter_scores")

    # ------------------------------------------------------------------ live sessions (serving)
    #: The serving interface's class (:mod:`nextclick.models.live`); models with a state of their
    #: own or a dot-product output layer bring their own.
    Live: ClassVar[type[LiveSessions]] = LiveSessions

    @property
    def repeats_dropped(self) -> bool:
        """Whether the training data held no click on the item just clicked (consecutive repeats
        dropped when it was prepared): then the last click is never the next one, and
        recommendations leave it out unless asked to keep it. False when not recorded."""
        return getattr(self, "training_", {}).get("consecutive_repeats") == 0

    def exclude_last_click(self, scores: np.ndarray, last: np.ndarray, exclude_last: bool | None) -> None:
        """Set ``scores[b, last[b]]`` to -inf in place where ``last[b]`` > 0, when
        ``exclude_last`` (None: :attr:`repeats_dropped`)."""
        if exclude_last if exclude_last is not None else self.repeats_dropped:
            rows = np.flatnonzero(last > 0)
            scores[rows, last[rows]] = -np.inf

    def live(self) -> LiveSessions:
        """How the service keeps and scores live sessions of this fitted model."""
        self._check_fitted()
        return self.Live(self)

    # ------------------------------------------------------------------ recommending (shop ids)
    def encode_session(self, session_items: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
        """Internal indices of the known items and the list of unknown input ids."""
        self._check_fitted()
        raw = list(session_items)
        idx = self.vocab_.encode(self.vocab_.coerce(raw)) if raw else np.zeros(0, np.int64)
        unknown = [x for x, i in zip(raw, idx) if i == 0]
        return idx[idx > 0], unknown

    def _topk(
        self,
        scores: np.ndarray,
        k: int,
        seen: Sequence[np.ndarray] | None,
        allow: np.ndarray | None = None,
        deny: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        return top_k(scores, k, seen, allow, deny)

    def recommend_detailed(
        self,
        session_items: Sequence[Any],
        k: int = 20,
        exclude_seen: bool = False,
        allow: Sequence[Any] | None = None,
        deny: Sequence[Any] | None = None,
        exclude_last: bool | None = None,
    ) -> Recommendation:
        """Top-k next items for one session of shop item ids, with what was unknown.

        ``exclude_last``: leave out the item of the session's last click (None: when the training
        data dropped consecutive repeats, see :attr:`repeats_dropped`)."""
        if k < 1:
            raise NextclickError(f"k must be >= 1, got {k}")
        idx, unknown = self.encode_session(session_items)
        allow_idx = None if allow is None else self.encode_session(allow)[0]
        deny_idx = None if deny is None else self.encode_session(deny)[0]
        scores = self.score_batch([idx])
        self.exclude_last_click(scores, self._last_known(session_items, idx), exclude_last)
        top, sc = self._topk(scores, k, [idx] if exclude_seen else None, allow_idx, deny_idx)
        keep = np.isfinite(sc[0])
        return Recommendation(self.vocab_.decode(top[0][keep]), sc[0][keep], unknown, idx.size == 0)

    def _last_known(self, session_items: Sequence[Any], idx: np.ndarray) -> np.ndarray:
        """(1,) index of the session's last click, 0 when it is unknown or there is none."""
        raw = list(session_items)
        last = int(self.vocab_.encode(self.vocab_.coerce(raw[-1:]))[0]) if raw and idx.size else 0
        return np.array([last], np.int64)

    def recommend(
        self, session_items: Sequence[Any], k: int = 20, exclude_seen: bool = False, exclude_last: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(item_ids, scores)`` sorted by score for one session of shop item ids.

        Unknown ids are ignored (see :meth:`recommend_detailed` for which, and for
        ``exclude_last``); a session with no known item gets the most popular items.
        """
        r = self.recommend_detailed(session_items, k, exclude_seen, exclude_last=exclude_last)
        return r.items, r.scores

    def recommend_batch(
        self, sessions: Sequence[Sequence[Any]], k: int = 20, exclude_seen: bool = False, exclude_last: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch variant: 2-D ``(item_ids, scores)``; row b equals ``recommend(sessions[b])``.

        The width is ``k``, or less when ``exclude_seen`` leaves some row fewer than ``k``
        recommendable items (every row is then cut to the shortest, so no excluded item appears).
        """
        if k < 1:
            raise NextclickError(f"k must be >= 1, got {k}")
        enc = [self.encode_session(s)[0] for s in sessions]
        scores = self.score_batch(enc)
        last = np.concatenate([self._last_known(s, e) for s, e in zip(sessions, enc)]) if enc else np.zeros(0, np.int64)
        self.exclude_last_click(scores, last, exclude_last)
        top, sc = self._topk(scores, k, enc if exclude_seen else None)
        width = int(np.isfinite(sc).sum(axis=1).min()) if len(sc) else top.shape[1]
        top, sc = top[:, :width], sc[:, :width]
        return self.vocab_.decode(top.ravel()).reshape(top.shape), sc

    # ------------------------------------------------------------------ artifacts
    def save(self, path: str | Path) -> Path:
        """Write an artifact directory: config.json, vocab.json and weights.safetensors, atomically
        and with checksums (:mod:`nextclick.models.artifact`)."""
        self._check_fitted()
        from nextclick import __version__

        header = {
            "version": 1,
            "nextclick_version": __version__,
            "model": self.name,
            "config": dataclasses.asdict(self.config),
            "n_items": self.n_items_,
            "fit_seconds": getattr(self, "fit_seconds_", None),
            "training": getattr(self, "training_", {}),
        }
        arrays = {"popularity": self.popularity_}
        for key, arr in self._state().items():
            arrays[f"state.{key}"] = np.ascontiguousarray(arr)
        return artifact.write(path, header, self.vocab_, arrays)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> Recommender:
        """Rebuild a fitted model from an artifact directory, checked by
        :func:`nextclick.models.artifact.read` (no unpickling anywhere). ``mmap``: the weights
        are memory maps of the file, shared between processes that load the same file (models
        whose state keeps the loaded arrays, as GRU4Rec's item tables, then hold no copy)."""
        art = artifact.read(path, mmap=mmap)
        cfg = art.header
        from nextclick.models import get_model_class

        klass = get_model_class(cfg["model"])
        if cls is not Recommender and not issubclass(klass, cls):
            raise NextclickError(f"{path}: holds a {cfg['model']!r} model, not {cls.name!r}")
        where = f"{Path(path) / artifact.CONFIG_FILE} ({cfg['model']})"
        model = klass(config_from_json(klass.Config, cfg["config"], where))
        model.n_items_ = int(cfg["n_items"])
        model.vocab_ = art.vocab
        arrays = art.arrays
        model.popularity_ = arrays.pop("popularity")
        model.fit_seconds_ = cfg.get("fit_seconds")
        model.training_ = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
        try:
            model._set_state({k.removeprefix("state."): v for k, v in arrays.items()})
        except NextclickError:
            raise
        except Exception as e:  # arrays of the wrong names or shapes for this config
            raise NextclickError(f"{Path(path) / artifact.WEIGHTS_FILE}: does not fit the {cfg['model']} config "
                                 f"({type(e).__name__}: {e})") from None
        return model

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


# ---------------------------------------------------------------------- parameters from JSON or text
def _fits(tp: Any, v: Any) -> bool:
    """Whether a JSON value ``v`` is of the annotated type ``tp`` (an int is a float; a list is a
    tuple)."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(v == c and type(v) is type(c) for c in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_fits(a, v) for a in typing.get_args(tp))
    if tp is type(None):
        return v is None
    if origin in (tuple, list):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis] or [Any]
        return isinstance(v, list | tuple) and all(_fits(inner[0], x) for x in v)
    if tp is bool:
        return type(v) is bool
    if tp is int:
        return type(v) is int
    if tp is float:
        return type(v) in (int, float)
    if tp is str:
        return type(v) is str
    return True


def config_from_json(config_cls: type, values: dict[str, Any], where: str) -> Any:
    """``config_cls(**values)`` for values read from a file, each checked against its field's
    type: a one-line error naming ``where`` and the field for a value of another type or an
    unknown field."""
    hints = typing.get_type_hints(config_cls)
    extra = sorted(set(values) - set(hints))
    if extra:
        raise NextclickError(f"{where}: unknown parameters {extra}")
    for key, v in values.items():
        if not _fits(hints[key], v):
            raise NextclickError(f"{where}: parameter {key!r} = {v!r} is not of type {hints[key]}")
    vals = {k: tuple(v) if isinstance(v, list) and typing.get_origin(hints[k]) is tuple else v for k, v in values.items()}
    try:
        return config_cls(**vals)
    except (TypeError, ValueError) as e:
        raise NextclickError(f"{where}: invalid parameters ({e})") from None


def _coerce(name: str, tp: Any, raw: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == raw:
                return c
        raise NextclickError(f"--param {name}={raw}: expected one of {', '.join(map(str, choices))}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw.lower() in ("none", "null", ""):
            return None
        return _coerce(name, args[0], raw)
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(tp) or (int,)
        vals = [_coerce(name, inner, p.strip()) for p in raw.split(",") if p.strip()]
        return tuple(vals) if origin is tuple else vals
    try:
        if tp is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
    except ValueError:
        raise NextclickError(f"--param {name}={raw}: expected {tp.__name__}") from None
    return raw


def parse_params(config_cls: type, pairs: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings against a config dataclass, with errors naming the key."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise NextclickError(f"--param {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in hints:
            raise NextclickError(f"--param {key}: unknown parameter; known: {', '.join(names)}")
        out[key] = _coerce(key, hints[key], raw.strip())
    return out
