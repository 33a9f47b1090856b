"""The guard in front of the FastAPI app (pure ASGI): the body-size limit, request metrics, and
the fast path of the click endpoint.

Where a click's time goes (docs/benchmarks.md): for small catalogues HTTP parsing and FastAPI's
routing, dependency injection, validation and middleware were the largest cost, so a well-formed
JSON click is answered here by :func:`nextclick.serve.service.append_click` directly. The fast
path accepts exactly the bodies the route's schema accepts as is, by the limits of the same
:class:`~nextclick.serve.settings.Settings`; anything else reaches the FastAPI route unchanged,
which validates it and answers (e.g. 422 with details).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from nextclick.serve.metrics import Metrics, endpoint_label
from nextclick.serve.service import Runtime, ServiceError, append_click
from nextclick.serve.settings import Settings

log = logging.getLogger(__name__)

_CLICK_PATH = re.compile(r"^/v1/sessions/([^/]+)/clicks$")
_SESSIONS = b"/v1/sessions/"
_CLICK_KEYS = frozenset({"item", "k", "exclude_seen", "allow", "deny", "exclude_last"})
_JSON = (b"content-type", b"application/json")


class FastClicks:
    """What the fast path of the click endpoint needs: the settings, and the runtime (set when
    the lifespan has loaded the model)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rt: Runtime | None = None

    def parse(self, raw: bytes) -> tuple[Any, int, bool, list | None, list | None, bool | None] | None:
        """The click body's (item, k, exclude_seen, allow, deny, exclude_last) when it is one the route would
        accept as is; None for anything else."""
        s = self.settings
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if type(d) is not dict or "item" not in d or not d.keys() <= _CLICK_KEYS or not s.item_id_ok(d["item"]):
            return None
        k = d.get("k")
        if k is None:
            k = s.default_k
        elif type(k) is not int or not 1 <= k <= s.max_k:
            return None
        ex = d.get("exclude_seen", False)
        last = d.get("exclude_last")
        if type(ex) is not bool or (last is not None and type(last) is not bool):
            return None
        lists = []
        for name in ("allow", "deny"):
            v = d.get(name)
            if v is not None and (type(v) is not list or len(v) > s.max_items or not all(map(s.item_id_ok, v))):
                return None
            lists.append(v)
        return d["item"], k, ex, lists[0], lists[1], last

    def session_id(self, path: str) -> str | None:
        """The session id of a click path (None: not one); its length is checked by :meth:`args`."""
        m = _CLICK_PATH.match(path)
        return None if m is None else m.group(1)

    def args(self, session_id: str, raw: bytes) -> tuple[Any, int, bool, list | None, list | None, bool | None] | None:
        """:meth:`parse` for a session id the route accepts; None for anything else."""
        if len(session_id) > self.settings.max_session_id_length:
            return None
        return self.parse(raw)


def internal_error(exc: BaseException | None = None) -> dict[str, str]:
    """Log an unexpected error, with its traceback, under a new request id; return the body of
    the 500 answer: the id to quote, and no trace of the internals."""
    rid = uuid.uuid4().hex[:16]
    log.error("internal error; request id %s", rid, exc_info=exc if exc is not None else True)
    return {"detail": "internal error", "request_id": rid}


async def send_json(send: Any, status: int, body: Any, close: bool = False) -> None:
    """A whole JSON response on a raw ASGI ``send`` (``close``: and the connection ends after it)."""
    data = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    headers = [_JSON, (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _utf8_path(scope: dict) -> bool:
    """Whether a session path's percent-escapes decode to valid UTF-8. The server decodes the
    path with replacement characters, so without this check ``z%FF%FEz`` and ``z%FE%FFz`` would
    name the same session."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    if not raw.startswith(_SESSIONS):
        return True
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_headers(scope: dict, max_body: int) -> tuple[bool, bool]:
    """(whether the declared length is over ``max_body`` or unreadable, whether the body is JSON)."""
    json_body = False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                if int(value) > max_body:
                    return True, json_body
            except ValueError:
                return True, json_body
        elif name == b"content-type":
            json_body = value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False, json_body


class GuardMiddleware:
    """Pure ASGI: refuses bodies over the limit (413, before parsing) or slower than
    ``settings.body_timeout`` (408), session ids that are not valid UTF-8 (400), records metrics,
    and serves well-formed clicks without FastAPI's routing, dependency injection and validation
    layers. A click body the fast path does not recognise as valid goes to the FastAPI route
    unchanged."""

    def __init__(self, app: Any, metrics: Metrics, settings: Settings, fast: FastClicks | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = settings.max_body_bytes
        self.body_timeout = settings.body_timeout
        self.fast = fast
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._reading: dict[int, list] = {}  # body reads in progress: [deadline, task, timed out]
        self._sweeping = False

    def _sweep(self) -> None:
        """Every half timeout, cancel the body reads past their deadline (one timer for the
        service, not one per request: a timeout context per request costs the fast path)."""
        now = time.monotonic()
        for entry in list(self._reading.values()):
            if entry[0] < now and not entry[2]:
                entry[2] = True
                entry[1].cancel()
        asyncio.get_running_loop().call_later(min(1.0, self.body_timeout / 2), self._sweep)

    async def _receive_in_time(self, receive: Any) -> dict | None:
        """The next ASGI message, or None when it did not arrive within ``body_timeout``."""
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(min(1.0, self.body_timeout / 2), self._sweep)
        task = asyncio.current_task()
        entry = [time.monotonic() + self.body_timeout, task, False]
        self._reading[id(entry)] = entry
        try:
            return await receive()
        except asyncio.CancelledError:
            if not entry[2]:  # cancelled for another reason (shutdown, client gone)
                raise
            task.uncancel()  # type: ignore[union-attr]
            return None
        finally:
            del self._reading[id(entry)]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope["path"]
        label = endpoint_label(path)
        status = [500]
        refused = [False]
        started = [False]

        async def send_wrapper(message: dict) -> None:
            if refused[0]:  # we already answered; drop whatever the app still sends
                return
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started[0] = True
            await send(message)

        async def refuse(code: int, detail: str) -> None:
            await send_json(send_wrapper, code, {"detail": detail}, close=code in (408, 413))
            refused[0] = True
            status[0] = code

        too_big, json_body = _read_headers(scope, self.max_body)
        if too_big or not _utf8_path(scope):
            if too_big:
                await refuse(413, f"request body larger than {self.max_body} bytes")
            else:
                await refuse(400, "session id: not valid UTF-8 once its %-escapes are decoded")
            self._record(label, status[0], t0)
            return
        seen, body_done = 0, False

        async def limited_receive() -> dict:
            nonlocal seen, body_done
            if refused[0]:
                return {"type": "http.disconnect"}
            if body_done:  # after the body: only a disconnect can come, whenever it comes
                return await receive()
            message = await self._receive_in_time(receive)
            if message is None:  # a stalled upload holds no connection for ever
                await refuse(408, f"request body not received within {self.body_timeout:g} s")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_body:  # chunked upload past the limit: answer now, stop reading
                    await refuse(413, f"request body larger than {self.max_body} bytes")
                    return {"type": "http.disconnect"}
            return message

        downstream = limited_receive
        fast = self.fast
        if (
            label == "clicks" and json_body and scope["method"] == "POST" and fast is not None and fast.rt is not None
            and (sid := fast.session_id(path)) is not None
        ):
            raw = await _read_body(limited_receive)
            if raw is None:  # client gone (or refused): nothing more to answer
                if refused[0]:
                    self._record(label, status[0], t0)
                return
            if await self._fast_click(fast, sid, raw, send, t0):
                return
            downstream = _replay(raw, receive)
        try:
            await self.app(scope, downstream, send_wrapper)
        except Exception as e:  # the app's handler answered (and logged) it, or nobody did
            if not started[0] and not refused[0]:
                await send_json(send, 500, internal_error(e))
            status[0] = 500 if not refused[0] else status[0]
        self._record(label, status[0], t0)

    async def _fast_click(self, fast: FastClicks, sid: str, raw: bytes, send: Any, t0: float) -> bool:
        """Answer a click here if the route would accept it as is; False: it goes to the route."""
        args = fast.args(sid, raw)
        if args is None:
            return False
        try:
            result = await append_click(fast.rt, sid, *args)  # type: ignore[arg-type]
        except Exception as e:  # outside FastAPI's error middleware: answer here
            if isinstance(e, ServiceError):  # e.g. 503 while the model process restarts
                code, body = e.status, {"detail": e.detail}
            else:
                code, body = 500, internal_error(e)
            await send_json(send, code, body)
            self._record("clicks", code, t0)
            return True
        await send_json(send, 200, result)
        self._record("clicks", 200, t0)
        return True

    def _record(self, label: str, status: int, t0: float) -> None:
        children = self._children.get((label, status))
        if children is None:  # prometheus' labels() lookup, once per (endpoint, status)
            children = self._children[(label, status)] = (
                self.metrics.requests.labels(label, str(status)), self.metrics.latency.labels(label))
        children[0].inc()
        children[1].observe(time.perf_counter() - t0)


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body; None when the client went away (or the body was refused)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(raw: bytes, receive: Any) -> Any:
    """A ``receive`` that first hands the route the body the fast path already read."""
    replayed = [False]

    async def replay() -> dict:
        if not replayed[0]:
            replayed[0] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay
