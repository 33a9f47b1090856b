"""The real-time next-click service: FastAPI on uvicorn, built by :func:`create_app`.

One artifact is loaded at start-up (and can be hot-reloaded). Clicks of anonymous sessions go
through a session store (in-process or Redis) to the model side (:mod:`nextclick.serve.worker`): by
default a model process of its own, which scores every click that arrived while it was busy in one
batch, so inference never blocks the event loop, the two never contend for Python's GIL, and
batching costs no latency when the service is idle.

Where a click's time goes (see docs/benchmarks.md): HTTP parsing and FastAPI's routing, dependency
injection, validation and middleware were the largest cost for small catalogues, so well-formed
JSON clicks take a fast path in :class:`GuardMiddleware`, which sits outside FastAPI's own middleware
stack (anything else reaches the FastAPI route unchanged); for large catalogues the item matrix
product is, so GRU4Rec/SASRec use the exact bounded top-k of :mod:`nextclick.ranking.bounded`.

Endpoints: ``POST /v1/sessions/{id}/clicks``, ``GET /v1/sessions/{id}/recommendations``,
``DELETE /v1/sessions/{id}``, ``POST /v1/recommendations`` (stateless), ``/healthz``,
``/readyz``, ``/metrics`` (Prometheus) and ``POST /admin/reload`` (bearer token).
"""

import asyncio
import contextlib
import logging
import re
import signal
import time
import weakref
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import numpy as np
import orjson
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from nextclick.serve.store import MemoryStore, RedisStore, SessionRecord, SessionStore
from nextclick.serve.worker import Job, Loaded, ProcessWorker, Stats, ThreadWorker, WorkerDied, load_artifact

log = logging.getLogger(__name__)

INT64 = 2**63 - 1


@dataclass
class Settings:
    """Service configuration (``nextclick serve --help`` mirrors it)."""

    model_dir: str
    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    session_ttl: float = 1800.0  # seconds after the last click
    max_sessions: int = 1_000_000  # in-memory store bound (LRU beyond it)
    default_k: int = 20
    max_k: int = 100
    max_items: int = 200  # item ids per request (stateless list, allow/deny lists)
    max_id_length: int = 64  # characters of a string item id
    max_session_id_length: int = 128
    max_body_bytes: int = 65_536
    max_batch: int = 64  # requests scored together at most
    admin_token: str | None = None  # POST /admin/reload is disabled without one
    torch_threads: int = 1
    scoring: Literal["auto", "exact", "fp16"] = "auto"  # top-k of dot-product models: see nextclick.ranking.bounded
    model_worker: Literal["process", "thread"] = "process"  # where the model runs: see nextclick.serve.worker


# ---------------------------------------------------------------------- request / response bodies
ItemIdStr = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ItemIdInt = Annotated[int, Field(ge=-INT64 - 1, le=INT64, strict=True)]  # strict: no booleans
ItemId = ItemIdInt | ItemIdStr


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int | None = Field(None, ge=1, description="How many items (default 20, at most max_k).")
    exclude_seen: bool = Field(False, description="Never recommend an item the session already clicked.")
    allow: list[ItemId] | None = Field(None, description="Recommend only these items (e.g. in stock).")
    deny: list[ItemId] | None = Field(None, description="Never recommend these items (e.g. out of stock).")


class ClickBody(Options):
    item: ItemId = Field(..., description="The clicked item's id (the shop's own id).")


class StatelessBody(Options):
    items: list[ItemId] = Field(..., description="The session's clicks so far, oldest first.")


class RecommendationOut(BaseModel):
    items: list[ItemId]
    scores: list[float]
    session_id: str | None = None
    n_clicks: int = 0
    unknown_items: list[ItemId] = Field(
        default_factory=list, description="Ids in this request the model does not know (ignored)."
    )
    fallback: bool = Field(False, description="No known click: the most popular items.")
    model: str = ""


# ---------------------------------------------------------------------- model holder
class ModelHolder:
    def __init__(self, loaded: Loaded) -> None:
        self.current = loaded


# ---------------------------------------------------------------------- metrics and middleware
class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("nextclick_requests_total", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "nextclick_request_seconds",
            "Request latency inside the service",
            ["endpoint"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.007, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0),
        )
        self.model_seconds = Histogram(
            "nextclick_model_seconds",
            "Model call (one batch: step/score + top-k)",
            registry=r,
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
        )
        self.batch_size = Histogram(
            "nextclick_batch_size", "Requests per model call", registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128)
        )
        self.sessions = Gauge("nextclick_sessions", "Sessions in the store", registry=r)
        self.topk_rows = Gauge(
            "nextclick_topk_rows", "Rows scored by the dot-product top-k of the current model (see nextclick.ranking.bounded)", registry=r
        )
        self.topk_fallbacks = Gauge(
            "nextclick_topk_fallback_rows",
            "Rows the top-k's int8 scan gave up on (too many items to score exactly) and handed to its fp16 products",
            registry=r,
        )
        self.unknown = Counter("nextclick_unknown_items_total", "Item ids unknown to the model (ignored)", registry=r)
        self.clicks = Counter("nextclick_clicks_total", "Clicks received", registry=r)
        self.reloads = Counter("nextclick_reloads_total", "Model reloads", ["result"], registry=r)


def endpoint_label(path: str) -> str:
    if path.startswith("/v1/sessions/"):
        if path.endswith("/clicks"):
            return "clicks"
        if path.endswith("/recommendations"):
            return "session_recommendations"
        return "session"
    if path == "/v1/recommendations":
        return "recommendations"
    if path in ("/healthz", "/readyz", "/metrics", "/admin/reload", "/docs", "/openapi.json"):
        return path.strip("/").replace("/", "_")
    return "other"


_CLICK_PATH = re.compile(r"^/v1/sessions/([^/]+)/clicks$")
_CLICK_KEYS = frozenset({"item", "k", "exclude_seen", "allow", "deny"})


class FastClicks:
    """What the fast path of the click endpoint needs: the settings, the runtime (set when the
    lifespan has loaded the model) and the endpoint's core (set by the app factory)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rt: Runtime | None = None
        self.core: Any = None

    @staticmethod
    def _id_ok(x: Any) -> bool:
        t = type(x)
        return (t is int and -INT64 - 1 <= x <= INT64) or (t is str and 1 <= len(x) <= 64)

    def parse(self, raw: bytes) -> tuple[Any, int, bool, list | None, list | None] | None:
        """The click body's fields when it is one the route would accept as is; None for anything
        else (the FastAPI route then validates it and answers, e.g. 422 with details)."""
        s = self.settings
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(d) is not dict or "item" not in d or not d.keys() <= _CLICK_KEYS or not self._id_ok(d["item"]):
            return None
        k = d.get("k")
        if k is None:
            k = s.default_k
        elif type(k) is not int or not 1 <= k <= s.max_k:
            return None
        ex = d.get("exclude_seen", False)
        if type(ex) is not bool:
            return None
        lists = []
        for name in ("allow", "deny"):
            v = d.get(name)
            if v is not None and (type(v) is not list or len(v) > s.max_items or not all(map(self._id_ok, v))):
                return None
            lists.append(v)
        return d["item"], k, ex, lists[0], lists[1]


class GuardMiddleware:
    """Pure ASGI: refuses bodies over the limit (413, before parsing), records metrics, and serves
    well-formed clicks without FastAPI's routing, dependency injection and validation layers
    (profiled as the largest cost of a click). A click body the fast path does not recognise as
    valid goes to the FastAPI route unchanged, which validates it and answers."""

    def __init__(self, app: Any, metrics: Metrics, max_body: int, fast: FastClicks | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.fast = fast
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope["path"]
        label = endpoint_label(path)
        status = [500]
        refused = [False]

        async def send_wrapper(message: dict) -> None:
            if refused[0]:  # we already answered 413; drop whatever the app still sends
                return
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        async def refuse() -> None:
            await _plain(send_wrapper, 413, {"detail": f"request body larger than {self.max_body} bytes"})
            refused[0] = True

        json_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    too_big = True
                if too_big:
                    await refuse()
                    self._record(label, 413, t0)
                    return
            elif name == b"content-type":
                json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            if refused[0]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:  # chunked upload past the limit: answer now, stop reading
                    await refuse()
                    return {"type": "http.disconnect"}
            return message

        downstream = limited_receive
        fast = self.fast
        if (
            label == "clicks" and json_body and scope["method"] == "POST" and fast is not None and fast.rt is not None
            and (m := _CLICK_PATH.match(path)) is not None
        ):
            chunks, more = [], True
            while more:
                message = await limited_receive()
                if message["type"] != "http.request":
                    if refused[0]:
                        self._record(label, 413, t0)
                    return  # client gone (or refused): nothing to answer
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            raw = b"".join(chunks)
            sid = m.group(1)
            args = fast.parse(raw) if len(sid) <= fast.settings.max_session_id_length else None
            if args is not None:
                try:
                    result = await fast.core(fast.rt, sid, *args)
                except Exception as e:  # outside FastAPI's error middleware: answer here
                    if isinstance(e, HTTPException):  # e.g. 503 while the model process restarts
                        code, detail = e.status_code, e.detail
                    else:
                        log.exception("click failed")
                        code, detail = 500, "internal error"
                    await _plain(send, code, {"detail": detail})
                    self._record(label, code, t0)
                    return
                body = orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY)
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                self._record(label, 200, t0)
                return
            replayed = [False]

            async def replay() -> dict:  # the route reads the body we already consumed
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": raw, "more_body": False}
                return await receive()

            downstream = replay
        try:
            await self.app(scope, downstream, send_wrapper)
        except Exception:
            if not refused[0]:
                self._record(label, 500, t0)
                raise
        self._record(label, status[0], t0)

    def _record(self, label: str, status: int, t0: float) -> None:
        children = self._children.get((label, status))
        if children is None:  # prometheus' labels() lookup, once per (endpoint, status)
            children = self._children[(label, status)] = (
                self.metrics.requests.labels(label, str(status)), self.metrics.latency.labels(label))
        children[0].inc()
        children[1].observe(time.perf_counter() - t0)


async def _plain(send: Any, status: int, body: dict) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")


# ---------------------------------------------------------------------- the app factory
class _App(FastAPI):
    """FastAPI with :class:`GuardMiddleware` OUTSIDE its own middleware stack (error handling,
    body limit, telemetry), so the click fast path skips those layers too (profiled: FastAPI's
    telemetry middleware alone read the environment three times per request). The fast path
    answers its own errors (503 while the model process restarts, 500 logged); everything else
    the guard passes on meets the full FastAPI stack."""

    guard: tuple[Any, int, Any] | None = None

    def build_middleware_stack(self) -> Any:
        inner = super().build_middleware_stack()
        if self.guard is None:
            return inner
        metrics, max_body, fast = self.guard
        return GuardMiddleware(inner, metrics=metrics, max_body=max_body, fast=fast)


@dataclass
class Runtime:
    settings: Settings
    holder: ModelHolder
    store: SessionStore
    worker: ProcessWorker | ThreadWorker
    stats: Stats
    metrics: Metrics
    locks: weakref.WeakValueDictionary = field(default_factory=weakref.WeakValueDictionary)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def lock(self, session_id: str) -> asyncio.Lock:
        lk = self.locks.get(session_id)
        if lk is None:
            lk = asyncio.Lock()
            self.locks[session_id] = lk
        return lk


def make_store(s: Settings) -> SessionStore:
    if s.store == "redis":
        return RedisStore(s.redis_url, ttl=s.session_ttl)
    return MemoryStore(ttl=s.session_ttl, max_sessions=s.max_sessions)


def create_app(settings: Settings, store: SessionStore | None = None) -> FastAPI:
    """Build the service. The model is loaded once, in the lifespan (not at import time)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        torch.set_num_threads(max(settings.torch_threads, 1))
        loop = asyncio.get_running_loop()
        in_thread = settings.model_worker == "thread"
        loaded = await loop.run_in_executor(None, load_artifact, settings.model_dir, settings.scoring, in_thread)
        stats = Stats(metrics)
        worker = ThreadWorker(settings.max_batch, stats) if in_thread else ProcessWorker(settings, stats)
        await worker.start(loaded)
        rt = Runtime(settings, ModelHolder(loaded), store or make_store(settings), worker, stats, metrics)
        app.state.rt = rt
        fast.rt = rt
        log.info(
            "serving %s (%s, %d items) from %s", loaded.model.name, loaded.model_id, loaded.model.n_items_, settings.model_dir
        )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload_model(rt, None)))
        try:
            yield
        finally:
            rt.worker.close()
            await rt.store.close()

    app = _App(
        title="nextclick",
        version=__import__("nextclick").__version__,
        description="Next-click recommendations for live anonymous sessions.",
        lifespan=lifespan,
    )
    fast = FastClicks(settings)
    app.guard = (metrics, settings.max_body_bytes, fast)
    s = settings

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return _json({"detail": errors}, 422)

    def rt_dep(request: Request) -> Runtime:
        return request.app.state.rt

    SessionId = Annotated[str, PathParam(min_length=1, max_length=s.max_session_id_length, description="Opaque session id.")]

    def check_opts(opts: Options) -> None:
        for name in ("allow", "deny"):
            lst = getattr(opts, name)
            if lst is not None and len(lst) > s.max_items:
                raise HTTPException(413, f"{name}: at most {s.max_items} item ids")
        if opts.k is not None and opts.k > s.max_k:
            raise HTTPException(422, f"k: at most {s.max_k}")

    async def recommend(
        rt: Runtime,
        items: list[Any],
        new_item: Any | None,
        rec: SessionRecord | None,
        k: int,
        exclude_seen: bool,
        allow: list | None,
        deny: list | None,
    ) -> tuple[dict, np.ndarray | None]:
        loaded = rt.holder.current
        model = loaded.model
        vocab = model.vocab_
        idx = vocab.encode(vocab.coerce(items)) if items else np.zeros(0, np.int64)
        known = idx[idx > 0]
        unknown = [x for x, i in zip(items, idx) if i == 0] if new_item is None else []
        new_idx = None
        if new_item is not None:
            new_idx = int(idx[-1]) if idx.size else 0
            if new_idx == 0:
                unknown = [new_item]
        if unknown:
            rt.metrics.unknown.inc(len(unknown))
        allow_idx = None if allow is None else vocab.encode(vocab.coerce(allow))
        deny_idx = None if deny is None else vocab.encode(vocab.coerce(deny))
        if allow_idx is not None:
            allow_idx = allow_idx[allow_idx > 0]
        if deny_idx is not None:
            deny_idx = deny_idx[deny_idx > 0]
        exclude = known if exclude_seen else None
        state = rec.state if rec is not None else None
        if known.size == 0:  # nothing known: popularity, no model call
            ids, sc = _popular(loaded, k, exclude, allow_idx, deny_idx)
            new_state = state
            fallback = True
        else:
            replay = (
                bool(loaded.state_size)
                and (rec is None or rec.model_id != loaded.model_id or rec.state is None or rec.state.size != loaded.state_size)
                and known.size > (1 if new_idx else 0)
            )
            if rec is None or rec.model_id != loaded.model_id or (state is not None and state.size != loaded.state_size):
                state = None
            job = Job(known[-model.live_max_clicks :], new_idx, state, replay, k, exclude, allow_idx, deny_idx, loaded.gen)
            try:
                new_state, ids, sc = await rt.worker.submit(job)
            except WorkerDied as e:
                raise HTTPException(503, f"model unavailable: {e}") from None
            fallback = False
        out = {
            "items": vocab.decode(ids).tolist() if ids.size else [],
            "scores": [float(x) for x in sc],
            "unknown_items": unknown,
            "fallback": fallback,
            "model": loaded.model_id,
        }
        return out, new_state

    @app.post("/v1/sessions/{session_id}/clicks", response_model=RecommendationOut, tags=["sessions"])
    async def click(session_id: SessionId, body: ClickBody, rt: Runtime = Depends(rt_dep)) -> Response:
        """Append a click to an anonymous session and return its next-click recommendations."""
        check_opts(body)
        return _json(await click_core(rt, session_id, body.item, body.k or s.default_k, body.exclude_seen, body.allow, body.deny))

    async def click_core(
        rt: Runtime, session_id: str, item: Any, k: int, exclude_seen: bool, allow: list | None, deny: list | None
    ) -> dict:
        """The click endpoint's work, shared by the FastAPI route and the fast path of
        :class:`GuardMiddleware` (which calls it only with a body the route would accept)."""
        rt.metrics.clicks.inc()
        async with rt.lock(session_id):
            rec = await rt.store.get(session_id)
            if rec is None:
                rec = SessionRecord()
            keep = max(rt.holder.current.model.live_max_clicks, 1)
            items = [*rec.items, item][-keep:]
            out, new_state = await recommend(rt, items, item, rec, k, exclude_seen, allow, deny)
            rec.items = items
            rec.n_clicks += 1
            rec.n_unknown += len(out["unknown_items"])
            rec.state = new_state
            rec.model_id = out["model"]
            await rt.store.put(session_id, rec)
        return {"session_id": session_id, "n_clicks": rec.n_clicks, **out}

    fast.core = click_core

    @app.get("/v1/sessions/{session_id}/recommendations", response_model=RecommendationOut, tags=["sessions"])
    async def session_recommendations(
        session_id: SessionId,
        k: Annotated[int, Query(ge=1, le=s.max_k)] = s.default_k,
        exclude_seen: bool = False,
        rt: Runtime = Depends(rt_dep),
    ) -> Response:
        """Recommendations for a session as it stands (popularity for an unknown session)."""
        rec = await rt.store.get(session_id)
        items = rec.items if rec is not None else []
        out, _ = await recommend(rt, items, None, rec, k, exclude_seen, None, None)
        out["unknown_items"] = []
        return _json({"session_id": session_id, "n_clicks": rec.n_clicks if rec else 0, **out})

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: SessionId, rt: Runtime = Depends(rt_dep)) -> Response:
        """Forget a session."""
        if not await rt.store.delete(session_id):
            raise HTTPException(404, f"no session {session_id!r}")
        return Response(status_code=204)

    @app.post("/v1/recommendations", response_model=RecommendationOut, tags=["stateless"])
    async def stateless(body: StatelessBody, rt: Runtime = Depends(rt_dep)) -> Response:
        """Recommendations for a list of clicks the caller keeps itself (nothing is stored)."""
        check_opts(body)
        if len(body.items) > s.max_items:
            raise HTTPException(413, f"items: at most {s.max_items} item ids")
        out, _ = await recommend(
            rt, list(body.items), None, None, body.k or s.default_k, body.exclude_seen, body.allow, body.deny
        )
        return _json({"session_id": None, "n_clicks": len(body.items), **out})

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Readiness: a model is loaded, its process runs, and the session store answers."""
        rt: Runtime | None = getattr(request.app.state, "rt", None)
        if rt is None or not rt.worker.ready() or not await rt.store.ping():
            return _json({"status": "not ready"}, 503)
        m = rt.holder.current
        return _json({"status": "ready", "model": m.model.name, "model_id": m.model_id, "n_items": m.model.n_items_,
                      "model_pid": rt.worker.pid()})

    @app.get("/metrics", tags=["ops"])
    async def metrics_endpoint(rt: Runtime = Depends(rt_dep)) -> Response:
        """Prometheus metrics."""
        rt.metrics.sessions.set(await rt.store.size())
        rt.metrics.topk_rows.set(rt.stats.topk_rows)
        rt.metrics.topk_fallbacks.set(rt.stats.topk_fallbacks)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    class ReloadBody(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model_dir: str | None = Field(
            None, max_length=4096, description="New artifact directory (default: the current one, re-read)."
        )

    @app.post("/admin/reload", tags=["ops"])
    async def reload(
        body: Optional[ReloadBody] = None, authorization: Annotated[str | None, Header()] = None, rt: Runtime = Depends(rt_dep)
    ) -> Response:
        """Load a new artifact and switch to it without dropping requests. Needs ``Authorization: Bearer <token>``."""
        if not s.admin_token:
            raise HTTPException(403, "reload is disabled: no admin token configured")
        if authorization != f"Bearer {s.admin_token}":
            raise HTTPException(401, "missing or wrong admin token")
        try:
            loaded = await reload_model(rt, body.model_dir if body else None)
        except Exception as e:
            raise HTTPException(400, f"reload failed: {e}") from None
        return _json({"status": "reloaded", "model": loaded.model.name, "model_id": loaded.model_id})

    return app


async def reload_model(rt: Runtime, model_dir: str | None) -> Loaded:
    """Load in a worker thread, then swap atomically; in-flight batches finish on the old model.
    Reloads run one at a time (two overlapping ones must not share a model generation)."""
    async with rt.reload_lock:
        return await _reload(rt, model_dir)


async def _reload(rt: Runtime, model_dir: str | None) -> Loaded:
    loop = asyncio.get_running_loop()
    path = model_dir or rt.holder.current.model_dir
    try:
        loaded = await loop.run_in_executor(
            None, load_artifact, path, rt.settings.scoring, rt.settings.model_worker == "thread"
        )
        loaded.gen = rt.holder.current.gen + 1
        await rt.worker.adopt(loaded)
    except Exception:
        rt.metrics.reloads.labels("error").inc()
        log.exception("reload of %s failed; still serving %s", path, rt.holder.current.model_id)
        raise
    old, rt.holder.current = rt.holder.current, loaded
    rt.worker.release(old.gen)
    rt.settings.model_dir = path
    rt.metrics.reloads.labels("ok").inc()
    log.info("reloaded: now serving %s (%s)", loaded.model.name, loaded.model_id)
    return loaded


def _popular(
    loaded: Loaded, k: int, exclude: np.ndarray | None, allow: np.ndarray | None, deny: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    ids, sc = loaded.pop_top
    mask = np.ones(ids.size, dtype=bool)
    for lst in (exclude, deny):
        if lst is not None and lst.size:
            mask &= ~np.isin(ids, lst)
    if allow is not None:
        model = loaded.model
        scores = model.popularity_[None, :].astype(np.float32)
        top, s = model.topk(scores, k, [exclude] if exclude is not None else None, allow, deny)
        keep = np.isfinite(s[0])
        return top[0][keep], s[0][keep]
    return ids[mask][:k], sc[mask][:k]
