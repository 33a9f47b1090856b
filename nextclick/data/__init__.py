"""The data layer: click logs in, sessions out. Imports nothing from the rest of the package but
:mod:`nextclick.errors`, and never torch.

=============== ==============================================================================
``io``          read CSV / TSV / Parquet / whitespace logs into one canonical frame
``vocab``       shop item ids <-> indices (0 = padding)
``sessions``    :class:`Sessions`: concatenated clicks + offsets (what models train on)
``batching``    the one left padding, GRU4Rec's session-parallel mini-batches
``preprocess``  sessionize, drop repeats, support filter, time split, leave-one-out
``dataset``     prepared dataset directories, conversion of click frames to :class:`Sessions`
``synthetic``   the built-in synthetic shop
=============== ==============================================================================
"""

from nextclick.lazy import lazy_exports

# imported on first use: ``import nextclick.data.io`` (say) then does not load polars' whole stack
_EXPORTS = {
    "Dataset": "nextclick.data.dataset",
    "load_sessions": "nextclick.data.dataset",
    "Sessions": "nextclick.data.sessions",
    "ItemVocab": "nextclick.data.vocab",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
