"""GRU4Rec: the model is in :mod:`.model`, its compiled training step in :mod:`.kernels`.

Importing this package imports nothing heavy; ``GRU4Rec`` and ``GRU4RecConfig`` load :mod:`.model`
(and torch) on first access.
"""

from nextclick.lazy import lazy_exports

__all__ = ["GRU4Rec", "GRU4RecConfig"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "nextclick.models.gru4rec.model"))
