"""Loading a model artifact for serving: the model, its content id, its popularity ranking (the
answer for sessions with no known click) and, for dot-product models, the bounded top-k."""

from __future__ import annotations

import hashlib
import logging
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
    """Content hash of an artifact (config + weights), tagging stored model states."""
    h = hashlib.sha256()
    for name in ("config.json", "vocab.json", "weights.safetensors"):
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
    model_dir: str
    state_size: int
    popularity: np.ndarray  # (n_items + 1,) float32 popularity, -inf at the padding index 0
    popular_order: np.ndarray  # the POPULAR_CANDIDATES most popular item indices, most popular first (stable)
    scorer: TopK | None = None  # dot-product models: exact top-k without full score rows
    gen: int = 0  # generation number in this service (jobs name the model they were encoded for)

    @property
    def live(self) -> LiveSessions:
        """The model's serving interface (:mod:`nextclick.models.live`)."""
        return self.model.live()


def load_artifact(model_dir: str, scoring: str = "auto", with_scorer: bool = True) -> Loaded:
    """Load an artifact; ``with_scorer=False`` skips the top-k structures (the event loop's copy
    of a model that a worker process scores)."""
    model = Recommender.load(model_dir)
    pop = model.popularity_.astype(np.float32).copy()
    pop[0] = -np.inf
    order = np.argsort(-pop[1:], kind="stable")[:POPULAR_CANDIDATES] + 1
    scorer = None
    if with_scorer:
        layer = model.live().output_layer()
        scorer = TopK(layer[0], layer[1], mode=scoring) if layer is not None else None  # type: ignore[arg-type]
        if scorer is not None:
            log.info("top-k scoring: %s", scorer.mode)
    return Loaded(model, artifact_id(model_dir), str(model_dir), model.live().state_size, pop, order, scorer)
