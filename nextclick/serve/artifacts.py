"""Loading a model artifact for serving: the model, its content id, its popularity ranking (the
answer for sessions with no known click) and, for dot-product models, the bounded top-k."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclick.models.base import Recommender
from nextclick.models.live import LiveSessions
from nextclick.ranking.bounded import TopK

log = logging.getLogger(__name__)

#: Most popular items kept in popularity order: the candidates of the popularity fallback.
POPULAR_CANDIDATES = 1000


def artifact_id(model_dir: str | Path) -> str:
    """Content hash of an artifact, tagging stored model states: of ``config.json`` alone when it
    records the other files' checksums (loading has checked them), else of all three files."""
    h = hashlib.sha256()
    cfg = Path(model_dir) / "config.json"
    names = ("config.json",) if b'"files"' in cfg.read_bytes() else ("config.json", "vocab.json", "weights.safetensors")
    for name in names:
        p = Path(model_dir) / name
        if p.exists():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Loaded:
    """A model as the service holds it."""

    model: Recommender
    model_id: str
    model_dir: str  # the artifact directory as named (what a reload re-reads by default)
    state_size: int
    popularity: np.ndarray  # (n_items + 1,) float32 popularity, -inf at the padding index 0
    popular_order: np.ndarray  # the POPULAR_CANDIDATES most popular item indices, most popular first (stable)
    scorer: TopK | None = None  # dot-product models: exact top-k without full score rows
    gen: int = 0  # generation number in this service (jobs name the model they were encoded for)
    serving_dir: str = ""  # the service's private copy of the artifact (see :func:`snapshot`)

    @property
    def live(self) -> LiveSessions:
        """The model's serving interface (:mod:`nextclick.models.live`)."""
        return self.model.live()


def snapshot(model_dir: str | Path) -> Path:
    """A private copy of the artifact's files, which the service loads and a restarted model
    process re-reads: rewriting or deleting ``model_dir`` in place cannot change or take down what
    is being served (a reload picks up the new content)."""
    src = Path(model_dir)
    dst = Path(tempfile.mkdtemp(prefix="nextclick-serving-"))
    try:
        for p in src.iterdir() if src.is_dir() else ():
            if p.is_file():
                shutil.copyfile(p, dst / p.name)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        raise
    return dst


def discard(loaded: Loaded | None) -> None:
    """Delete the private copy of a model the service no longer serves."""
    if loaded is not None and loaded.serving_dir:
        shutil.rmtree(loaded.serving_dir, ignore_errors=True)


def load_artifact(model_dir: str, scoring: str = "auto", with_scorer: bool = True, copy: bool = True) -> Loaded:
    """Load an artifact from a private copy (:func:`snapshot`; ``copy=False``: ``model_dir`` is
    one already, as in the model process); ``with_scorer=False`` skips the top-k structures (the
    event loop's copy of a model that a worker process scores)."""
    private = snapshot(model_dir) if copy else Path(model_dir)
    try:
        model = Recommender.load(private, mmap=True)  # the service and model processes share its pages
    except BaseException:
        if copy:
            shutil.rmtree(private, ignore_errors=True)
        raise
    pop = model.popularity_.astype(np.float32).copy()
    pop[0] = -np.inf
    order = np.argsort(-pop[1:], kind="stable")[:POPULAR_CANDIDATES] + 1
    scorer = None
    if with_scorer:
        layer = model.live().output_layer()
        scorer = TopK(layer[0], layer[1], mode=scoring) if layer is not None else None  # type: ignore[arg-type]
        if scorer is not None:
            log.info("top-k scoring: %s", scorer.mode)
    live = model.live()
    return Loaded(model, artifact_id(private), str(model_dir), live.state_size, pop, order, scorer,
                  serving_dir=str(private) if copy else "")
