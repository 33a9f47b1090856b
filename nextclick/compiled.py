"""Shared settings of the compiled (numba) loops: GRU4Rec's training step
(:mod:`nextclick.models.gru4rec.kernels`) and the served top-k (:mod:`nextclick.ranking.kernels`).

The loops are compiled on first use and cached on disk (next to their files, else in the user's
cache folder or ``NUMBA_CACHE_DIR``), so only the first process pays the compilation; where no
such folder is writable, every process compiles them.
"""

from __future__ import annotations

import logging

import numba

log = logging.getLogger(__name__)


def _probe() -> int:
    return 0


def _can_cache() -> bool:
    """Whether numba can keep compiled loops on disk for this package: next to its files, in the
    user's cache folder or in ``NUMBA_CACHE_DIR``. A read-only install without a writable home (a
    locked-down container, say) has none, and numba would refuse ``cache=True`` at import."""
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        log.info("numba finds no writable cache folder for %s: its loops are compiled in every process "
                 "(seconds); set NUMBA_CACHE_DIR to a writable folder to keep them", __file__)
        return False
    return True


# error_model="numpy": no zero-division checks, which would stop the loops from being vectorised
JIT = dict(nogil=True, cache=_can_cache(), error_model="numpy", boundscheck=False)
