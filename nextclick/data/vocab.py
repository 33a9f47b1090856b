"""Item vocabulary: the shop's own item ids <-> dense internal indices.

Index 0 is reserved for padding (and for "unknown item"); known items are 1..n_items. The
vocabulary is fitted once on training data and reused unchanged for validation, test data and
serving, so internal indices never leak to users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nextclick.errors import NextclickError

PAD = 0


class ItemVocab:
    """Sorted array of item ids; ``ids[i]`` has internal index ``i + 1``.

    >>> v = ItemVocab.fit([30, 10, 20, 10])
    >>> v.encode([10, 99]).tolist()
    [1, 0]
    """

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iuU":
            raise NextclickError(f"item ids must be integers or strings, got dtype {ids.dtype}")
        if ids.dtype.kind in "iu":
            ids = ids.astype(np.int64)
        if ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise NextclickError("ItemVocab ids must be sorted and unique; use ItemVocab.fit")
        self.ids = ids

    @classmethod
    def fit(cls, item_ids: Sequence[Any] | np.ndarray) -> ItemVocab:
        arr = np.asarray(item_ids)
        if arr.dtype == object:
            arr = arr.astype(str)
        return cls(np.unique(arr))

    def __len__(self) -> int:
        return int(self.ids.size)

    def same_as(self, other: ItemVocab) -> bool:
        """Whether ``other`` maps every id to the same index (the same ids, same type)."""
        if self is other:
            return True
        return self.is_int == other.is_int and bool(np.array_equal(self.ids, other.ids))

    @property
    def n_items(self) -> int:
        return int(self.ids.size)

    @property
    def is_int(self) -> bool:
        return self.ids.dtype.kind in "iu"

    def coerce(self, raw: Sequence[Any]) -> np.ndarray:
        """Convert user-given ids (e.g. strings from a command line) to the vocabulary's dtype.

        Ids that cannot be converted (``"abc"`` for an integer vocabulary) become a value that is
        never in the vocabulary, so they count as unknown instead of raising.
        """
        if self.is_int:
            out = np.empty(len(raw), dtype=np.int64)
            for i, x in enumerate(raw):
                try:
                    out[i] = int(x)
                except (TypeError, ValueError, OverflowError):
                    out[i] = np.iinfo(np.int64).min  # never a real id (ids are parsed ints)
            return out
        return np.asarray([str(x) for x in raw], dtype=self.ids.dtype if len(raw) else str)

    def encode(self, item_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Map item ids to indices (1..n_items); unknown ids map to 0."""
        arr = np.asarray(item_ids)
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if self.is_int != (arr.dtype.kind in "iu"):
            arr = self.coerce(arr.tolist())
        pos = np.searchsorted(self.ids, arr)
        pos_c = np.minimum(pos, max(self.ids.size - 1, 0))
        found = (pos < self.ids.size) & (self.ids[pos_c] == arr) if self.ids.size else np.zeros(arr.shape, bool)
        return np.where(found, pos_c + 1, PAD).astype(np.int64)

    def decode(self, idx: np.ndarray | Sequence[int]) -> np.ndarray:
        """Map indices (1..n_items) back to item ids."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 1 or idx.max() > self.ids.size):
            raise ValueError("decode() got an index outside 1..n_items (padding or out of range)")
        return self.ids[idx - 1]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": "int" if self.is_int else "str", "ids": self.ids.tolist()}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ItemVocab:
        ids = obj["ids"]
        arr = np.asarray(ids, dtype=np.int64) if obj.get("dtype") == "int" else np.asarray(ids, dtype=str)
        return cls(arr)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> ItemVocab:
        return cls.from_json(json.loads(Path(path).read_text()))
