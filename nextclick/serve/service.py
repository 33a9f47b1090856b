"""The service's logic as plain async functions over a :class:`Runtime`, callable without HTTP:
append a click (:func:`append_click`), recommend for a stored session
(:func:`session_recommendations`) or for a list of clicks (:func:`stateless_recommendations`),
forget a session (:func:`delete_session`) and swap the model (:func:`reload_model`).

Requests are validated at the edge (:mod:`nextclick.serve.schemas`, the fast click path);
:func:`check_options` holds the limits answered with a status of their own. A refusal or an
unavailable model raises :class:`ServiceError`, which carries its HTTP status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nextclick.data.items import ItemTable
from nextclick.data.items import load_for as load_items
from nextclick.models.explain import explain
from nextclick.models.explain import kinds as explain_kinds
from nextclick.serve.artifacts import Loaded, discard, load_artifact
from nextclick.serve.jobs import Job, popular
from nextclick.serve.metrics import Metrics, Stats
from nextclick.serve.process import ProcessWorker
from nextclick.serve.settings import Settings
from nextclick.serve.store import MemoryStore, RedisStore, SessionRecord, SessionStore, StoreUnavailable
from nextclick.serve.worker import ModelWorker, ThreadWorker, WorkerDied

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """A request the service refuses, or cannot answer now; ``status`` is the HTTP status and
    ``detail`` the message the client gets."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Served:
    """A model served beside the default one (``nextclick serve DIR DIR ...``), by name."""

    name: str
    loaded: Loaded
    worker: ModelWorker


@dataclass
class Runtime:
    """A running service: its settings, the default model (``loaded``, swapped by a reload) and
    its worker, the other models it serves by name, the session store and the item table."""

    settings: Settings
    loaded: Loaded  # the model requests are encoded for (swapped by a reload)
    store: SessionStore
    worker: ModelWorker
    stats: Stats
    metrics: Metrics
    name: str = ""  # the default model's name
    others: dict[str, Served] = field(default_factory=dict)
    items: ItemTable | None = None
    locks: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    explain_slot: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))

    def pick(self, name: str | None) -> tuple[Loaded, ModelWorker, str]:
        """The model named ``name`` (None: the default) with its worker; 404 for an unknown name."""
        if name is None or name == self.name:
            return self.loaded, self.worker, self.name
        served = self.others.get(name)
        if served is None:
            raise ServiceError(404, f"no model {name!r}; models: {', '.join(self.model_names())}")
        return served.loaded, served.worker, served.name

    def model_names(self) -> list[str]:
        return [self.name, *self.others]

    def keep_clicks(self) -> int:
        """Clicks a session record keeps: what the most demanding served model reads."""
        return max([self.loaded.live.max_clicks, *(o.loaded.live.max_clicks for o in self.others.values()), 1])

    def lock(self, session_id: str) -> asyncio.Lock:
        """The lock that serializes the clicks of one session."""
        lk = self.locks.get(session_id)
        if lk is None:
            lk = asyncio.Lock()
            self.locks[session_id] = lk
        return lk


def make_store(s: Settings) -> SessionStore:
    if s.store == "redis":
        return RedisStore(s.redis_url, ttl=s.session_ttl)
    return MemoryStore(ttl=s.session_ttl, max_sessions=s.max_sessions)


def model_names(dirs: list[str]) -> list[str]:
    """The names of served artifacts: their directories' base names, ``-2``, ``-3`` ... added to
    repeats."""
    names: list[str] = []
    for d in dirs:
        base = Path(d).resolve().name or "model"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


async def _start(settings: Settings, stats: Stats, model_dir: str) -> tuple[Loaded, ModelWorker]:
    """Load one artifact (in a thread: the event loop goes on) and start its worker."""
    in_thread = settings.model_worker == "thread"
    loaded = await asyncio.get_running_loop().run_in_executor(None, load_artifact, model_dir, settings.scoring, in_thread)
    wset = dataclasses.replace(settings, model_dir=model_dir)
    worker: ModelWorker = ThreadWorker(settings.max_batch, stats) if in_thread else ProcessWorker(wset, stats)
    try:
        await worker.start(loaded)
    except BaseException:
        discard(loaded)
        raise
    return loaded, worker


async def open_runtime(settings: Settings, metrics: Metrics | None = None, store: SessionStore | None = None) -> Runtime:
    """Load the models and start their workers, open the session store and read the item table."""
    torch.set_num_threads(max(settings.torch_threads, 1))
    metrics = metrics or Metrics()
    stats = Stats(metrics)
    names = model_names([settings.model_dir, *settings.more_models])
    loaded, worker = await _start(settings, stats, settings.model_dir)
    rt = Runtime(settings, loaded, store or make_store(settings), worker, stats, metrics, name=names[0])
    try:
        for name, d in zip(names[1:], settings.more_models):
            other, w = await _start(settings, stats, d)
            rt.others[name] = Served(name, other, w)
        rt.items = await asyncio.get_running_loop().run_in_executor(
            None, load_items, settings.model_dir, settings.items, loaded.model.vocab_.ids)
    except BaseException:
        await close_runtime(rt)
        raise
    metrics.watch_store(rt.store)
    return rt


async def close_runtime(rt: Runtime) -> None:
    rt.worker.close()
    for o in rt.others.values():
        o.worker.close()
        discard(o.loaded)
    await rt.store.close()
    discard(rt.loaded)


def check_options(s: Settings, k: int | None, allow: list | None, deny: list | None, items: list | None = None) -> None:
    """The request limits the schemas leave to the service: list lengths (413) and ``k``'s upper
    bound (422)."""
    for name, lst in (("allow", allow), ("deny", deny)):
        if lst is not None and len(lst) > s.max_items:
            raise ServiceError(413, f"{name}: at most {s.max_items} item ids")
    if k is not None and k > s.max_k:
        raise ServiceError(422, f"k: at most {s.max_k}")
    if items is not None and len(items) > s.max_items:
        raise ServiceError(413, f"items: at most {s.max_items} item ids")


def _known(vocab: Any, ids: list | None) -> np.ndarray | None:
    """Internal indices of the ids the model knows (None stays None: no list)."""
    if ids is None:
        return None
    idx = vocab.encode(vocab.coerce(ids))
    return idx[idx > 0]


def _job(loaded: Loaded, known: np.ndarray, new_idx: int | None, rec: SessionRecord | None, k: int,
         exclude: np.ndarray | None, allow: np.ndarray | None, deny: np.ndarray | None) -> Job:
    """The model's work for a session with known clicks. A stored state is used only when the
    serving model produced it; otherwise a model with a state rebuilds it from the clicks."""
    state = rec.state if rec is not None and rec.model_id == loaded.model_id else None
    if state is not None and state.size != loaded.state_size:
        state = None
    replay = bool(loaded.state_size) and state is None and known.size > (1 if new_idx else 0)
    clicks = known[-loaded.live.max_clicks :]
    return Job(clicks, new_idx, state, replay, k, exclude, allow, deny, loaded.gen)


async def recommend(
    rt: Runtime, items: list[Any], new_item: Any | None, rec: SessionRecord | None, k: int,
    exclude_seen: bool = False, allow: list | None = None, deny: list | None = None, exclude_last: bool | None = None,
    model: str | None = None,
) -> tuple[dict, np.ndarray | None]:
    """Recommendations for the clicks ``items`` (shop ids, oldest first; ``new_item``, when not
    None, is the last of them and just arrived), with the session's stored ``rec`` if any. Returns
    the answer's fields and the session's new model state. Without a known click: popularity.
    ``exclude_last``: leave out the last click's item (None: when the model's training data dropped
    consecutive repeats, so the last click is never the next one). ``model``: the served model's
    name (None: the default); the session's stored state is the default model's, so another model
    rebuilds its own from the clicks."""
    loaded, worker, name = rt.pick(model)
    vocab = loaded.model.vocab_
    idx = vocab.encode(vocab.coerce(items)) if items else np.zeros(0, np.int64)
    known = idx[idx > 0]
    new_idx = None
    if new_item is None:
        unknown = [x for x, i in zip(items, idx) if i == 0]
    else:
        new_idx = int(idx[-1]) if idx.size else 0
        unknown = [new_item] if new_idx == 0 else []
    if unknown:
        rt.metrics.unknown.inc(len(unknown))
    allow_idx, deny_idx = _known(vocab, allow), _known(vocab, deny)
    if idx.size and idx[-1] > 0 and (exclude_last if exclude_last is not None else loaded.model.repeats_dropped):
        deny_idx = idx[-1:] if deny_idx is None else np.append(deny_idx, idx[-1])
    exclude = known if exclude_seen else None
    if known.size == 0:  # nothing known: popularity, no model call
        ids, sc = popular(loaded, k, exclude, allow_idx, deny_idx)
        new_state = rec.state if rec is not None else None
    else:
        try:
            new_state, ids, sc = await worker.submit(_job(loaded, known, new_idx, rec, k, exclude, allow_idx, deny_idx))
        except WorkerDied as e:
            raise ServiceError(503, f"model unavailable: {e}") from None
    out = {
        "items": vocab.decode(ids).tolist() if ids.size else [],
        "scores": [float(x) for x in sc],
        "unknown_items": unknown,
        "fallback": known.size == 0,
        "model": loaded.model_id,
        "model_name": name,
    }
    return out, new_state


async def stored(rt: Runtime, call: Any) -> Any:
    """Await a session-store call; an unreachable store is a 503 (counted), not a 500."""
    try:
        return await call
    except StoreUnavailable as e:
        rt.metrics.store_errors.inc()
        raise ServiceError(503, f"the session store is unavailable ({e}); retry shortly") from None


_SWAP_TRIES = 4  # reads of a session that another replica keeps changing, before a 503


async def append_click(
    rt: Runtime, session_id: str, item: Any, k: int, exclude_seen: bool = False,
    allow: list | None = None, deny: list | None = None, exclude_last: bool | None = None,
) -> dict:
    """Append a click to a session (created on its first click) and return its recommendations.
    The clicks of one session are handled one at a time. The record is written back only if it is
    still the one read (:meth:`~nextclick.serve.store.SessionStore.swap`): when another replica
    changed it meanwhile, the click is done again on what that replica wrote, so neither is lost."""
    rt.metrics.clicks.inc()
    async with rt.lock(session_id):
        for _ in range(_SWAP_TRIES):
            rec = await stored(rt, rt.store.get(session_id))
            if rec is None:
                rec = SessionRecord()
            keep = rt.keep_clicks()
            items = [*rec.items, item][-keep:]
            out, new_state = await recommend(rt, items, item, rec, k, exclude_seen, allow, deny, exclude_last)
            rec.items = items
            rec.n_clicks += 1
            rec.n_unknown += len(out["unknown_items"])
            rec.state = new_state
            rec.model_id = out["model"]
            if await stored(rt, rt.store.swap(session_id, rec)):
                return {"session_id": session_id, "n_clicks": rec.n_clicks, **out}
            rt.metrics.session_conflicts.inc()
    raise ServiceError(503, f"session {session_id!r} kept changing on another replica meanwhile; retry")


async def session_recommendations(
    rt: Runtime, session_id: str, k: int, exclude_seen: bool = False, exclude_last: bool | None = None,
    model: str | None = None,
) -> dict:
    """Recommendations of the model named ``model`` (None: the default) for a session as it stands
    (popularity for an unknown session)."""
    rec = await stored(rt, rt.store.get(session_id))
    items = rec.items if rec is not None else []
    out, _ = await recommend(rt, items, None, rec, k, exclude_seen, exclude_last=exclude_last, model=model)
    out["unknown_items"] = []
    return {"session_id": session_id, "n_clicks": rec.n_clicks if rec else 0, **out}


async def stateless_recommendations(
    rt: Runtime, items: list[Any], k: int, exclude_seen: bool = False, allow: list | None = None, deny: list | None = None,
    exclude_last: bool | None = None, model: str | None = None,
) -> dict:
    """Recommendations of the model named ``model`` (None: the default) for a list of clicks the
    caller keeps itself (nothing is stored)."""
    out, _ = await recommend(rt, list(items), None, None, k, exclude_seen, allow, deny, exclude_last, model)
    return {"session_id": None, "n_clicks": len(items), **out}


async def delete_session(rt: Runtime, session_id: str) -> None:
    """Forget a session (404 when there is none)."""
    if not await stored(rt, rt.store.delete(session_id)):
        raise ServiceError(404, f"no session {session_id!r}")


async def reload_model(rt: Runtime, model_dir: str | None) -> Loaded:
    """Load ``model_dir`` (default: the current artifact, re-read) in a thread, then swap
    atomically; in-flight batches finish on the old model. Reloads run one at a time (two
    overlapping ones must not share a model generation)."""
    async with rt.reload_lock:
        return await _reload(rt, model_dir)


async def _reload(rt: Runtime, model_dir: str | None) -> Loaded:
    loop = asyncio.get_running_loop()
    path = model_dir or rt.loaded.model_dir
    loaded = None
    try:
        loaded = await loop.run_in_executor(
            None, load_artifact, path, rt.settings.scoring, rt.settings.model_worker == "thread"
        )
        loaded.gen = rt.loaded.gen + 1
        await rt.worker.adopt(loaded)  # also brings back a model process that had died
    except Exception:
        discard(loaded)
        rt.metrics.reloads.labels("error").inc()
        log.exception("reload of %s failed; still serving %s", path, rt.loaded.model_id)
        raise
    old, rt.loaded = rt.loaded, loaded
    rt.worker.release(old.gen)
    discard(old)
    rt.settings.model_dir = path
    rt.metrics.reloads.labels("ok").inc()
    log.info("reloaded: now serving %s (%s)", loaded.model.name, loaded.model_id)
    return loaded


async def session_clicks(rt: Runtime, session_id: str) -> dict:
    """A stored session's clicks, oldest first (404 when there is none)."""
    rec = await stored(rt, rt.store.get(session_id))
    if rec is None:
        raise ServiceError(404, f"no session {session_id!r}")
    return {"session_id": session_id, "n_clicks": rec.n_clicks, "items": list(rec.items)}


async def explanation(rt: Runtime, session_id: str, item: Any, model: str | None) -> dict:
    """Why the model named ``model`` (None: the default) recommends ``item`` to a stored session
    (:func:`nextclick.models.explain.explain`), in shop ids. One explanation is computed at a
    time, in a thread, on the service process's copy of the model: the clicks' path (the model
    worker) is not involved."""
    loaded, _, name = rt.pick(model)
    rec = await stored(rt, rt.store.get(session_id))
    if rec is None:
        raise ServiceError(404, f"no session {session_id!r}")
    m = loaded.model
    vocab = m.vocab_
    target = int(vocab.encode(vocab.coerce([item]))[0])
    if target == 0:
        raise ServiceError(404, f"item {item!r} is not in the catalogue of model {name!r}")
    idx = vocab.encode(vocab.coerce(list(rec.items))) if rec.items else np.zeros(0, np.int64)
    known = idx[idx > 0]
    async with rt.explain_slot:
        res = await asyncio.get_running_loop().run_in_executor(None, explain, m, known, target)
    res["clicks"] = vocab.decode(res["clicks"]).tolist()
    decoded = vocab.decode(np.array([x["item"] for x in res["influence"]], np.int64)).tolist()
    for x, shop_id in zip(res["influence"], decoded):
        x["item"] = shop_id
    if res["neighbours"] is not None:
        for nb in res["neighbours"]:
            nb["items"] = vocab.decode(nb["items"][: _NEIGHBOUR_ITEMS]).tolist()
    return {"session_id": session_id, "model": name, "item": item, **res}


_NEIGHBOUR_ITEMS = 20  # items shown per neighbour session


def model_list(rt: Runtime) -> dict:
    """The served models: name, kind, artifact id, catalogue size and what their explanations hold."""
    out = []
    for name in rt.model_names():
        loaded, _, _ = rt.pick(name)
        out.append({"name": name, "model": loaded.model.name, "model_id": loaded.model_id,
                    "n_items": loaded.model.n_items_, "explanations": explain_kinds(loaded.model)})
    return {"default": rt.name, "models": out}


def catalogue(rt: Runtime) -> ItemTable:
    """The item table the service shows: the one given, else (built on first use) the default
    model's item ids alone, whose titles are the ids."""
    if rt.items is None:
        rt.items = ItemTable.of_ids(rt.loaded.model.vocab_.ids)
    return rt.items


def find_items(rt: Runtime, q: str | None, category: str | None, limit: int, offset: int) -> dict:
    """Items of the catalogue whose title or id contains ``q``, in ``category``."""
    total, rows = catalogue(rt).search(q, category, limit, offset)
    return {"total": total, "items": rows}


def items_by_id(rt: Runtime, ids: list[Any]) -> dict:
    """The records of ``ids`` in the order asked; ids the catalogue does not hold are left out."""
    return {"total": None, "items": catalogue(rt).rows(ids)}
