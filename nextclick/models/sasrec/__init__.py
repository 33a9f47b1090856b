"""SASRec (Kang & McAuley, ICDM 2018): the recommender, the paper and the deviations from it are
in :mod:`.model`; hyper-parameters and presets in :mod:`.config`, the network in :mod:`.net`, the
losses in :mod:`.losses`, the training loop in :mod:`.train`.

Importing this package imports nothing heavy; ``SASRec`` and ``SASRecConfig`` load :mod:`.model`
(and torch) on first access.
"""

from nextclick.lazy import lazy_exports

__all__ = ["SASRec", "SASRecConfig"]
__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "nextclick.models.sasrec.model"))
