"""Registry of recommenders. Models are imported lazily, so the baselines never import torch."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from nextclick.errors import NextclickError
from nextclick.models.base import Recommender

_REGISTRY: dict[str, tuple[str, str]] = {
    "pop": ("nextclick.models.pop", "MostPopular"),
    "spop": ("nextclick.models.pop", "SessionPopular"),
    "sr": ("nextclick.models.rules", "SequentialRules"),
    "vsknn": ("nextclick.models.sknn", "VSKNN"),
    "stan": ("nextclick.models.stan", "STAN"),
    "vstan": ("nextclick.models.stan", "VSTAN"),
    "gru4rec": ("nextclick.models.gru4rec.model", "GRU4Rec"),
    "sasrec": ("nextclick.models.sasrec.model", "SASRec"),
    "stamp": ("nextclick.models.stamp", "STAMP"),
    "narm": ("nextclick.models.narm", "NARM"),
    "srgnn": ("nextclick.models.srgnn", "SRGNN"),
    "bert4rec": ("nextclick.models.bert4rec", "BERT4Rec"),
}


def available_models() -> list[str]:
    """Names of the registered models whose module is present."""
    return [n for n, (mod, _) in _REGISTRY.items() if importlib.util.find_spec(mod) is not None]


def get_model_class(name: str) -> type[Recommender]:
    if name not in available_models():
        raise NextclickError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    mod, cls = _REGISTRY[name]
    return getattr(importlib.import_module(mod), cls)


def create_model(name: str, preset: str | None = None, **params: Any) -> Recommender:
    """Build an unfitted model by registry name, optionally from a named preset."""
    return get_model_class(name).from_preset(preset, **params)


__all__ = ["Recommender", "available_models", "create_model", "get_model_class"]
