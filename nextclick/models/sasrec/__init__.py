"""SASRec: the model is in :mod:`.model`.

Importing this package imports nothing heavy; ``SASRec`` and ``SASRecConfig`` load :mod:`.model`
(and torch) on first access.
"""

from nextclick.models import lazy_exports

__all__ = ["SASRec", "SASRecConfig"]
__getattr__ = lazy_exports("nextclick.models.sasrec.model", __all__)
