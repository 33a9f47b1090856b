"""The service's Prometheus metrics, the endpoint label of a request path, and :class:`Stats`,
what the model side reports to them."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily


class Metrics:
    """Every metric of one service instance, in a registry of its own."""

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
        self.session_conflicts = Counter(
            "nextclick_session_conflicts_total",
            "Clicks done again because another replica changed the session between its read and its write", registry=r,
        )
        self._evictions: _Evictions | None = None
        self.store_errors = Counter(
            "nextclick_store_unavailable_total", "Requests answered 503 because the session store was unreachable", registry=r
        )

    def watch_store(self, store: Any) -> None:
        """Report a store's evictions as ``nextclick_sessions_evicted_total``, read from its
        ``evicted`` count at each scrape (the in-memory store's least recently used sessions,
        dropped to stay within ``max_sessions``). Redis evicts by its own ``maxmemory`` policy and
        reports that in its INFO, so a store without the count adds nothing."""
        if self._evictions is not None:  # a runtime opened again: the new store replaces the old
            self.registry.unregister(self._evictions)
            self._evictions = None
        if hasattr(store, "evicted"):
            self._evictions = _Evictions(store)
            self.registry.register(self._evictions)


class _Evictions:
    """A collector reading the store's own eviction count, so the store needs no metrics of its own."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "nextclick_sessions_evicted", "Sessions the in-memory store dropped to stay within --max-sessions",
            value=self.store.evicted,
        )


def endpoint_label(path: str) -> str:
    """The ``endpoint`` label of a request path (a bounded set: session ids never become labels)."""
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


class Stats:
    """What the model side reports to /metrics (written by one thread, read by the event loop)."""

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.topk_rows = 0
        self.topk_fallbacks = 0

    def batch(self, seconds: float, n: int) -> None:
        self.metrics.model_seconds.observe(seconds)
        self.metrics.batch_size.observe(n)
