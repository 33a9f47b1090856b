"""The real-time next-click service: FastAPI on uvicorn, built by :func:`create_app`.

One artifact is loaded at start-up (and can be hot-reloaded). Clicks of anonymous sessions go
through a session store (in-process or Redis, :mod:`nextclick.serve.store`) to the model side: by
default a model process of its own (:mod:`nextclick.serve.process`), which scores every click that
arrived while it was busy in one batch, so inference never blocks the event loop, the two never
contend for Python's GIL, and batching costs no latency when the service is idle.

This module wires HTTP to the service logic of :mod:`nextclick.serve.service`; well-formed JSON
clicks take the fast path of :mod:`nextclick.serve.middleware`, which sits outside FastAPI's own
middleware stack. For large catalogues the item matrix product is the largest cost, so
GRU4Rec/SASRec use the exact bounded top-k of :mod:`nextclick.ranking.bounded`.

Several artifacts can be served side by side, by name, sharing the session store: a click is
stored once and every model reads it (the default model, the first, keeps its state in the
session record; the others rebuild theirs from the clicks). A reload swaps the default model.

Endpoints: ``POST /v1/sessions/{id}/clicks``, ``GET /v1/sessions/{id}/recommendations``,
``GET /v1/sessions/{id}``, ``GET /v1/sessions/{id}/explanations``, ``DELETE /v1/sessions/{id}``,
``POST /v1/recommendations`` (stateless), ``/v1/models``, ``/v1/items``, ``/v1/categories``,
``/healthz``, ``/readyz``, ``/metrics`` (Prometheus), ``POST /admin/reload`` (bearer token) and
the demo page at ``/`` (:mod:`nextclick.serve.static`).
"""

import asyncio
import contextlib
import hmac
import logging
import signal
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nextclick.serve import service
from nextclick.serve.metrics import Metrics
from nextclick.serve.middleware import FastClicks, GuardMiddleware, internal_error
from nextclick.serve.schemas import ReloadBody, build_schemas, error_responses
from nextclick.serve.service import Runtime, ServiceError
from nextclick.serve.settings import Settings
from nextclick.serve.store import SessionStore, StoreUnavailable

__all__ = ["Settings", "create_app"]

log = logging.getLogger(__name__)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")


ModelName = Annotated[Optional[str], Query(max_length=200, description="A served model's name (default: the first).")]


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
        metrics, settings, fast = self.guard
        return GuardMiddleware(inner, metrics=metrics, settings=settings, fast=fast)


def create_app(settings: Settings, store: SessionStore | None = None) -> FastAPI:
    """Build the service. The model is loaded once, in the lifespan (not at import time)."""
    metrics = Metrics()
    fast = FastClicks(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rt = await service.open_runtime(settings, metrics, store)
        app.state.rt = fast.rt = rt
        loaded = rt.loaded
        log.info(
            "serving %s (%s, %d items) from %s", loaded.model.name, loaded.model_id, loaded.model.n_items_, settings.model_dir
        )
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: asyncio.ensure_future(service.reload_model(rt, None)))
        try:
            yield
        finally:
            await service.close_runtime(rt)

    app = _App(
        title="nextclick",
        version=__import__("nextclick").__version__,
        description="Next-click recommendations for live anonymous sessions.",
        lifespan=lifespan,
    )
    app.guard = (metrics, settings, fast)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return _json({"detail": errors}, 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        return _json(internal_error(exc), 500)

    @app.exception_handler(ServiceError)
    async def _refused(request: Request, exc: ServiceError) -> Response:
        return _json({"detail": exc.detail}, exc.status)

    _session_routes(app, settings)
    _catalogue_routes(app, settings)
    _ops_routes(app, settings)
    _demo_routes(app)
    return app


def token_ok(authorization: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, compared in constant time
    (no timing side channel on how much of the token was right)."""
    given = (authorization or "").encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, f"Bearer {token}".encode("utf-8", "surrogateescape"))


def _rt(request: Request) -> Runtime:
    return request.app.state.rt


def _session_routes(app: FastAPI, s: Settings) -> None:
    """The recommendation endpoints: thin wrappers of :mod:`nextclick.serve.service`."""
    bodies = build_schemas(s)
    ClickBody, StatelessBody, Out = bodies.click, bodies.stateless, bodies.recommendation  # noqa: N806 (types)
    SessionOut, ExplanationOut = bodies.session, bodies.explanation  # noqa: N806 (types)
    SessionId = Annotated[  # noqa: N806 (a type)
        str, PathParam(min_length=1, max_length=s.max_session_id_length, description="Opaque session id.")]

    @app.post("/v1/sessions/{session_id}/clicks", response_model=Out, tags=["sessions"],
              responses=error_responses(400, 408, 413, 422, 503))
    async def click(session_id: SessionId, body: ClickBody, rt: Runtime = Depends(_rt)) -> Response:
        """Append a click to an anonymous session and return its next-click recommendations."""
        service.check_options(s, body.k, body.allow, body.deny)
        return _json(await service.append_click(
            rt, session_id, body.item, body.k or s.default_k, body.exclude_seen, body.allow, body.deny, body.exclude_last))

    @app.get("/v1/sessions/{session_id}/recommendations", response_model=Out, tags=["sessions"],
             responses=error_responses(400, 422, 503))
    async def session_recommendations(
        session_id: SessionId,
        k: Annotated[int, Query(ge=1, le=s.max_k)] = s.default_k,
        exclude_seen: bool = False,
        exclude_last: Annotated[
            Optional[bool], Query(description="Leave out the last click's item (default: when training dropped repeats).")
        ] = None,
        model: ModelName = None,
        rt: Runtime = Depends(_rt),
    ) -> Response:
        """Recommendations of a served model (default: the first) for a session as it stands
        (popularity for an unknown session)."""
        return _json(await service.session_recommendations(rt, session_id, k, exclude_seen, exclude_last, model))

    @app.get("/v1/sessions/{session_id}", response_model=SessionOut, tags=["sessions"],
             responses=error_responses(400, 404, 503))
    async def session(session_id: SessionId, rt: Runtime = Depends(_rt)) -> Response:
        """A session's clicks, oldest first (the last ones the service keeps)."""
        return _json(await service.session_clicks(rt, session_id))

    @app.get("/v1/sessions/{session_id}/explanations", response_model=ExplanationOut, tags=["sessions"],
             responses=error_responses(400, 404, 422, 503))
    async def explanations(
        session_id: SessionId,
        item: Annotated[str, Query(min_length=1, max_length=s.max_id_length, description="The recommended item's id.")],
        model: ModelName = None,
        rt: Runtime = Depends(_rt),
    ) -> Response:
        """Why a model recommends ``item`` to the session: the change in the item's score and rank
        when each past click is left out (every model), the attention of the last position over
        the clicks per block (SASRec), the neighbour sessions that hold the item (V-SKNN). Covers
        the session's last 50 known clicks; one explanation is computed at a time."""
        return _json(await service.explanation(rt, session_id, _item_id(rt, item, model), model))

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"], responses=error_responses(400, 404, 503))
    async def delete_session(session_id: SessionId, rt: Runtime = Depends(_rt)) -> Response:
        """Forget a session."""
        await service.delete_session(rt, session_id)
        return Response(status_code=204)

    @app.post("/v1/recommendations", response_model=Out, tags=["stateless"],
              responses=error_responses(408, 413, 422, 503))
    async def stateless(body: StatelessBody, model: ModelName = None, rt: Runtime = Depends(_rt)) -> Response:
        """Recommendations of a served model (default: the first) for a list of clicks the caller
        keeps itself (nothing is stored)."""
        service.check_options(s, body.k, body.allow, body.deny, body.items)
        return _json(await service.stateless_recommendations(
            rt, body.items, body.k or s.default_k, body.exclude_seen, body.allow, body.deny, body.exclude_last, model))


def _item_id(rt: Runtime, raw: str, model: str | None = None) -> Any:
    """A query parameter's item id as the model's ids are typed (integers or strings)."""
    if rt.pick(model)[0].model.vocab_.is_int:
        try:
            return int(raw)
        except ValueError:
            raise ServiceError(404, f"item {raw!r} is not in the catalogue (its item ids are integers)") from None
    return raw


def _catalogue_routes(app: FastAPI, s: Settings) -> None:
    """What the served models are and what the items are (the item table)."""
    bodies = build_schemas(s)

    @app.get("/v1/models", response_model=bodies.models, tags=["catalogue"])
    async def models(rt: Runtime = Depends(_rt)) -> Response:
        """The served models (the first is the default) and what their explanations hold."""
        return _json(service.model_list(rt))

    @app.get("/v1/items", response_model=bodies.items, tags=["catalogue"], responses=error_responses(413, 422))
    async def items(
        q: Annotated[Optional[str], Query(max_length=200, description="Part of the title or id (any case).")] = None,
        category: Annotated[Optional[str], Query(max_length=200)] = None,
        ids: Annotated[Optional[list[str]], Query(description="Look these ids up instead (in this order).")] = None,
        limit: Annotated[int, Query(ge=1, le=s.max_items)] = 24,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        rt: Runtime = Depends(_rt),
    ) -> Response:
        """Search or browse the catalogue, or look items up by id: title, category, price and image
        from the item table (``--items``); without one, the ids alone."""
        if ids is not None:
            if len(ids) > s.max_items:
                raise ServiceError(413, f"ids: at most {s.max_items} item ids")
            return _json(service.items_by_id(rt, [_lookup_id(rt, x) for x in ids]))
        return _json(service.find_items(rt, q, category, limit, offset))

    @app.get("/v1/categories", response_model=bodies.categories, tags=["catalogue"])
    async def categories(rt: Runtime = Depends(_rt)) -> Response:
        """The item table's categories with their number of items (none without a table)."""
        return _json({"categories": service.catalogue(rt).categories()})


def _lookup_id(rt: Runtime, raw: str) -> Any:
    try:
        return _item_id(rt, raw)
    except ServiceError:
        return raw  # not an id of this catalogue: left out of the answer


def _demo_routes(app: FastAPI) -> None:
    """The demo page at ``/``: static files shipped in the package (no CDN, works offline)."""
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    static = Path(__file__).with_name("static")
    if not (static / "index.html").is_file():
        log.warning("the demo page's files are missing from %s: / is not served", static)
        return
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", include_in_schema=False)
    async def demo() -> Response:
        return FileResponse(static / "index.html")


def _ops_routes(app: FastAPI, s: Settings) -> None:
    """Health, readiness, metrics and the hot reload."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> Response:
        """Readiness: a model is loaded, its process runs, and the session store answers."""
        rt: Runtime | None = getattr(request.app.state, "rt", None)
        if rt is None or not all(rt.pick(n)[1].ready() for n in rt.model_names()) or not await rt.store.ping():
            return _json({"status": "not ready"}, 503)
        m = rt.loaded
        return _json({"status": "ready", "model": m.model.name, "model_id": m.model_id, "n_items": m.model.n_items_,
                      "model_pid": rt.worker.pid()})

    @app.get("/metrics", tags=["ops"])
    async def metrics_endpoint(rt: Runtime = Depends(_rt)) -> Response:
        """Prometheus metrics."""
        with contextlib.suppress(StoreUnavailable):  # the gauge keeps its last value meanwhile
            rt.metrics.sessions.set(await rt.store.size())
        rt.metrics.topk_rows.set(rt.stats.topk_rows)
        rt.metrics.topk_fallbacks.set(rt.stats.topk_fallbacks)
        return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", tags=["ops"], responses=error_responses(400, 401, 403, 408, 413, 422))
    async def reload(
        body: Optional[ReloadBody] = None, authorization: Annotated[str | None, Header()] = None, rt: Runtime = Depends(_rt)
    ) -> Response:
        """Load a new artifact and switch to it without dropping requests. Needs ``Authorization: Bearer <token>``."""
        if not s.admin_token:
            raise HTTPException(403, "reload is disabled: no admin token configured")
        if not token_ok(authorization, s.admin_token):
            raise HTTPException(401, "missing or wrong admin token")
        if body is not None and body.model_dir is not None and not s.reloadable(body.model_dir):
            raise HTTPException(403, f"model_dir must lie under the models directory {s.models_dir}")
        try:
            loaded = await service.reload_model(rt, body.model_dir if body else None)
        except Exception as e:
            raise HTTPException(400, f"reload failed: {e}") from None
        return _json({"status": "reloaded", "model": loaded.model.name, "model_id": loaded.model_id})
