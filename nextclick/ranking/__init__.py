"""Ranking: the one top-k with its exclusion rules and the tie policy (:mod:`.exact`, numpy), and
the bounded exact top-k for large catalogues of dot-product models (:mod:`.bounded`, torch and
compiled loops in :mod:`.kernels`, imported only when used)."""

from nextclick.ranking.exact import conservative_rank, mask_scores, top_k, top_k_rows

__all__ = ["conservative_rank", "mask_scores", "top_k", "top_k_rows"]
