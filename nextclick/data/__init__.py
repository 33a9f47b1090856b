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

from nextclick.data.dataset import Dataset, load_sessions
from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab

__all__ = ["Dataset", "ItemVocab", "Sessions", "load_sessions"]
