"""GRU4Rec: the model is in :mod:`.model`, its compiled training step in :mod:`.kernels`.

Importing this package imports nothing heavy; ``GRU4Rec`` and ``GRU4RecConfig`` load :mod:`.model`
(and torch) on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["GRU4Rec", "GRU4RecConfig"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("nextclick.models.gru4rec.model"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
