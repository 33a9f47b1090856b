"""The service's settings: every limit of a request is defined here, once, and read from here
(by the request schemas, the fast click path and the service logic alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # integer item ids are int64


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
    body_timeout: float = 10.0  # seconds a client may take to send a request body (then 408)
    max_batch: int = 64  # requests scored together at most
    admin_token: str | None = None  # POST /admin/reload is disabled without one
    models_dir: str | None = None  # a reload loads only artifacts under it (default: model_dir's parent)
    torch_threads: int = 1
    scoring: Literal["auto", "exact", "fp16"] = "auto"  # top-k of dot-product models: see nextclick.ranking.bounded
    model_worker: Literal["process", "thread"] = "process"  # where the model runs: see nextclick.serve.worker
    more_models: tuple[str, ...] = ()  # artifacts served beside model_dir, by name (their directories' names)
    items: str | None = None  # item table (CSV/Parquet; default: the one in model_dir, if any)

    def __post_init__(self) -> None:
        if self.models_dir is None:  # fixed at start-up, whatever a reload later serves
            self.models_dir = str(Path(self.model_dir).resolve().parent)

    def reloadable(self, model_dir: str) -> bool:
        """Whether a reload may load ``model_dir``: it lies under ``models_dir`` once links and
        ``..`` are resolved (a request body never names an arbitrary path on this machine)."""
        root = Path(self.models_dir or "/").resolve()
        target = Path(model_dir).resolve()
        return target == root or root in target.parents

    def item_id_ok(self, x: Any) -> bool:
        """Whether ``x`` is an item id a request may carry: an int64 (not a bool) or a string of
        1 to ``max_id_length`` characters. The request schemas state the same rule."""
        t = type(x)
        return (t is int and INT64_MIN <= x <= INT64_MAX) or (t is str and 1 <= len(x) <= self.max_id_length)
