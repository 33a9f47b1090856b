"""Shared fixtures: the real datasets in ../shared/data and small synthetic sessions.

Real-data tests may be skipped only on a user's fresh clone without ../shared/data; when the
environment variable ``CI`` is set a missing folder is a failure, never a skip.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# make `import nextclick` work with a plain `pytest` from any directory, installed or not
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from nextclick.data.sessions import Sessions  # noqa: E402
from nextclick.data.vocab import ItemVocab  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (relative to the repository root); skip without it, fail in CI."""
    if not SHARED_DATA.is_dir():
        msg = f"real datasets not found at {SHARED_DATA}"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so real-data tests must run, not skip")
        pytest.skip(msg)
    return SHARED_DATA


def sessions_from_ids(sessions: Sequence[Sequence[Any]], vocab: ItemVocab | None = None, **kw: Any) -> Sessions:
    """:class:`Sessions` from lists of the shop's own item ids (the vocabulary is fitted when not given)."""
    if vocab is None:
        vocab = ItemVocab.fit([x for s in sessions for x in s])
    encoded = [vocab.encode(np.asarray(list(s))).tolist() if len(s) else [] for s in sessions]
    assert all(i > 0 for s in encoded for i in s), "every id must be in the vocabulary"
    return Sessions.from_lists(encoded, n_items=vocab.n_items, vocab=vocab, **kw)


@pytest.fixture
def make_sessions() -> Callable[..., Sessions]:
    """Factory: ``make_sessions([[1000, 1010], ...], vocab=None)`` -> Sessions over shop ids."""
    return sessions_from_ids


@dataclass
class ChainData:
    """Synthetic shop whose next click is known: items form disjoint chains a -> b -> c -> ...,
    and every session walks a chain from its head. Item ids are non-contiguous (and not in chain
    order) so internal indices can never be mistaken for shop ids."""

    train: Sessions
    test: Sessions
    vocab: ItemVocab
    chains: list[list[Any]]
    succ: dict[Any, Any]  # shop id -> the item that always follows it
    id_kind: str  # "int" or "str"

    @property
    def ids(self) -> np.ndarray:
        return self.vocab.ids

    def test_prefixes(self) -> tuple[list[list[Any]], list[Any]]:
        """Every (prefix, next item) pair of the test sessions, in shop ids."""
        prefixes, targets = [], []
        for s in self.test.to_lists():
            raw = self.vocab.decode(s).tolist()
            for t in range(1, len(raw)):
                prefixes.append(raw[:t])
                targets.append(raw[t])
        return prefixes, targets


def make_chain_data(n_chains: int = 6, chain_len: int = 5, id_kind: str = "int", seed: int = 0) -> ChainData:
    rng = np.random.default_rng(seed)
    n = n_chains * chain_len
    if id_kind == "int":
        pool = 1000 + 10 * np.arange(n)  # 1000, 1010, ... never 1..n
    else:
        pool = np.array([f"sku-{x:03d}" for x in rng.choice(1000, size=n, replace=False)])
    pool = rng.permutation(pool).tolist()  # chain order differs from id order
    chains = [pool[c * chain_len : (c + 1) * chain_len] for c in range(n_chains)]
    succ = {ch[i]: ch[i + 1] for ch in chains for i in range(chain_len - 1)}
    train, test = [], []
    for c, ch in enumerate(chains):
        for length in range(2, chain_len + 1):
            # distinct repetition counts give the chains different popularity
            train += [ch[:length]] * (3 + c + (chain_len - length))
        test += [ch[:length] for length in (2, chain_len)]
    vocab = ItemVocab.fit(pool)
    order = rng.permutation(len(train))
    return ChainData(
        train=sessions_from_ids([train[i] for i in order], vocab),
        test=sessions_from_ids(test, vocab),
        vocab=vocab,
        chains=chains,
        succ=succ,
        id_kind=id_kind,
    )


@pytest.fixture(scope="session")
def chain_data() -> ChainData:
    """Chains with integer shop ids 1000, 1010, ... (see :class:`ChainData`)."""
    return make_chain_data(id_kind="int")


@pytest.fixture(scope="session")
def chain_data_str() -> ChainData:
    """The same pattern with string shop ids like ``sku-123``."""
    return make_chain_data(id_kind="str", seed=1)


@pytest.fixture
def tiny_sessions() -> Sessions:
    """Four sessions over internal indices 1..10, lengths 3, 1, 4, 2 (every click a distinct item)."""
    return Sessions.from_lists([[1, 2, 3], [4], [5, 6, 7, 8], [9, 10]], n_items=10)
