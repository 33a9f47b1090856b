"""SASRec: the model is in :mod:`.model`.

Importing this package imports nothing heavy; ``SASRec`` and ``SASRecConfig`` load :mod:`.model`
(and torch) on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SASRec", "SASRecConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("nextclick.models.sasrec.model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
