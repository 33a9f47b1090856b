"""The serve command: the HTTP service for live sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from nextclick.cli.choices import ModelWorkerKind, ScoringMode, StoreKind
from nextclick.serve.settings import Settings


def serve(
    model_dirs: Annotated[
        list[Path], typer.Argument(help="Artifact directories written by `nextclick train`: the first is the default "
                                        "model; each is served by its directory's name (?model=NAME).")
    ],
    items: Annotated[
        Optional[Path], typer.Option(help="Item table (CSV or Parquet: id, title, category, optional price and image "
                                          "URL) for the demo page and /v1/items (default: the first artifact's, if any).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        StoreKind, typer.Option(help="Session store: in-process (TTL + size bound) or Redis (shared by replicas).")
    ] = StoreKind.memory,
    redis_url: Annotated[str, typer.Option(help="Redis URL for --store redis.")] = "redis://127.0.0.1:6379/0",
    session_ttl: Annotated[float, typer.Option(help="Seconds a session lives after its last click.")] = 1800.0,
    max_sessions: Annotated[
        int, typer.Option(help="In-memory store: most sessions kept (least recently used go first).")
    ] = 1_000_000,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.")] = 100,
    max_batch: Annotated[int, typer.Option(help="Most requests scored together in one model call.")] = 64,
    scoring: Annotated[
        ScoringMode,
        typer.Option(help="Top-k of GRU4Rec/SASRec: float32 product over every item, or fp16 (an int8/fp16 copy "
                     "bounds the scores, the items that can reach the top k are scored exactly: the same answers), "
                     "or auto (fp16 for item matrices over 8 MB)."),
    ] = ScoringMode.auto,
    model_worker: Annotated[
        ModelWorkerKind,
        typer.Option(help="Run the model in its own process (default: it and the event loop then do not share "
                     "Python's GIL) or on a thread of the service process."),
    ] = ModelWorkerKind.process,
    admin_token_env: Annotated[
        str, typer.Option(help="Environment variable holding the token for POST /admin/reload (unset: reload via SIGHUP only).")
    ] = "NEXTCLICK_ADMIN_TOKEN",
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client may take to send a request body (then 408).")
    ] = 10.0,
    models_dir: Annotated[
        Optional[Path], typer.Option(help="POST /admin/reload loads only artifacts under this directory "
                                          "(default: MODEL_DIR's parent).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve next-click recommendations over HTTP (FastAPI/uvicorn; OpenAPI at /docs, the demo page at /)."""
    import os

    import uvicorn

    from nextclick.data.items import load_for
    from nextclick.models.base import Recommender
    from nextclick.serve.app import create_app

    model_dir, *more = model_dirs
    first = None
    for d in model_dirs:  # fail fast with a clear error before binding the port
        m = Recommender.load(d, mmap=True)
        first = first or m
    load_for(model_dir, items, first.vocab_.ids)  # type: ignore[union-attr]
    settings = Settings(
        model_dir=str(model_dir),
        more_models=tuple(str(d) for d in more),
        items=str(items) if items is not None else None,
        store=store.value,
        redis_url=redis_url,
        session_ttl=session_ttl,
        max_sessions=max_sessions,
        max_k=max_k,
        max_batch=max_batch,
        scoring=scoring.value,
        model_worker=model_worker.value,
        admin_token=os.environ.get(admin_token_env) or None,
        body_timeout=body_timeout,
        models_dir=str(models_dir) if models_dir is not None else None,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


