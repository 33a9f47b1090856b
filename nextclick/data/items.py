"""Item metadata: the shop's table of what its item ids are (title, category, and optionally a
price and an image URL), read from CSV or Parquet, for people looking at recommendations (the
demo page, reports). Models never read it.

Columns are found by name, case-insensitively: the id (``ItemId``, ``item_id``, ``id``), the title
(``Title``, ``name``), the category (``CategoryName``, ``Category``, ``category``; the readable
name wins when both are present), and optionally ``Price`` and ``ImageUrl`` (``image_url``,
``image``). Ids are matched as text, so ``100007`` in the table and in a request are the same item
whether either side reads it as a number or a string.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextclick.errors import NextclickError

log = logging.getLogger(__name__)

#: Accepted column names per field, in order of preference (matched case-insensitively).
COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("itemid", "item_id", "id"),
    "title": ("title", "name", "itemname", "item_name"),
    "category": ("categoryname", "category_name", "category"),
    "price": ("price",),
    "image_url": ("imageurl", "image_url", "image"),
}
REQUIRED = ("id", "title", "category")
#: File name of the item table inside an artifact directory (``nextclick train --items``).
ARTIFACT_FILE = "items.parquet"


def _pick(path: Path, columns: list[str], need: tuple[str, ...], named: dict[str, str] | None) -> dict[str, str]:
    """The table's column for each field: ``named`` ones as given, the others found by name (see
    :data:`COLUMNS`); a field of ``need`` missing is an error."""
    lower = {c.lower(): c for c in columns}
    found: dict[str, str] = {}
    for field, col in (named or {}).items():
        if col not in columns:
            raise NextclickError(f"{path}: item table has no column {col!r} for the {field} (columns: {', '.join(columns)})")
        found[field] = col
    for field, names in COLUMNS.items():
        for n in names:
            if field not in found and n in lower:
                found[field] = lower[n]
                break
    missing = [f for f in need if f not in found]
    if missing:
        want = "; ".join(f"{f}: one of {', '.join(COLUMNS[f])}" for f in missing)
        raise NextclickError(f"{path}: item table has no column for {want} (columns: {', '.join(columns)})")
    return found


class ItemTable:
    """An item table with normalised columns ``id`` (text), ``title``, ``category`` (text, may be
    null), ``price`` (float, may be null) and ``image_url`` (text, may be null), one row per id."""

    def __init__(self, frame: pl.DataFrame, source: str = "") -> None:
        self.frame = frame
        self.source = source
        ids = frame.get_column("id").to_list()
        self._row = {x: i for i, x in enumerate(ids)}
        self._lower = frame.get_column("title").str.to_lowercase()
        self._id_lower = frame.get_column("id").str.to_lowercase()
        as_int = frame.get_column("id").cast(pl.Int64, strict=False)
        # integer ids are given back as numbers, as the models' answers give them
        self._shown = frame.with_columns(as_int.alias("id")) if as_int.null_count() == 0 else frame

    def __len__(self) -> int:
        return self.frame.height

    @classmethod
    def read(cls, path: str | Path, need: tuple[str, ...] = REQUIRED, columns: dict[str, str] | None = None) -> ItemTable:
        """Read and check a CSV or Parquet item table (see the module docstring): the fields of
        ``need`` must be found; ``columns`` names a field's column explicitly (``{"category": "Aisle"}``)."""
        path = Path(path)
        if not path.is_file():
            raise NextclickError(f"item table {path}: no such file")
        try:
            if path.suffix.lower() in (".parquet", ".pq"):
                raw = pl.read_parquet(path)
            elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
                raw = pl.read_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",", infer_schema_length=0)
            else:
                raise NextclickError(f"item table {path}: expected a .csv, .tsv or .parquet file")
        except NextclickError:
            raise
        except Exception as e:  # a corrupt or unreadable file
            raise NextclickError(f"item table {path}: cannot be read ({type(e).__name__}: {e})") from None
        return cls.from_frame(raw, str(path), need, columns)

    @classmethod
    def of_ids(cls, ids: np.ndarray) -> ItemTable:
        """A table of bare ids (titles are the ids, no category): what is known without a table."""
        return cls.from_frame(pl.DataFrame({"id": ids}), "the model's item ids", need=("id",))

    @classmethod
    def from_frame(cls, raw: pl.DataFrame, source: str = "item table", need: tuple[str, ...] = REQUIRED,
                   columns: dict[str, str] | None = None) -> ItemTable:
        cols = _pick(Path(source), raw.columns, tuple(dict.fromkeys(("id", *need))), columns)
        out = {f: raw.get_column(c) for f, c in cols.items()}
        ids = out["id"].cast(pl.String)
        nothing = pl.Series([None] * raw.height, dtype=pl.String)
        frame = pl.DataFrame({
            "id": ids,
            "title": (out["title"].cast(pl.String) if "title" in out else ids).fill_null(""),
            "category": out["category"].cast(pl.String) if "category" in out else nothing,
            "price": _price(out.get("price"), raw.height, source),
            "image_url": out["image_url"].cast(pl.String) if "image_url" in out else nothing,
        })
        nulls = int(frame.get_column("id").null_count())
        if nulls:
            row = int(np.flatnonzero(frame.get_column("id").is_null().to_numpy())[0])
            raise NextclickError(f"{source}: column {cols['id']!r} is empty in {nulls:,} rows (first: data row {row + 1})")
        dup = frame.get_column("id").is_duplicated()
        if dup.any():
            first = frame.filter(dup).get_column("id")[0]
            raise NextclickError(f"{source}: item id {first!r} appears more than once in column {cols['id']!r} "
                                 f"({int(dup.sum()):,} rows share an id)")
        return cls(frame, source)

    # ------------------------------------------------------------------ reading it
    def rows(self, ids: list[Any]) -> list[dict[str, Any]]:
        """The records of ``ids`` in the order given; ids not in the table are left out."""
        idx = [self._row[k] for k in (str(x) for x in ids) if k in self._row]
        return self._shown[idx].to_dicts() if idx else []

    def has(self, ids: list[Any]) -> np.ndarray:
        """(len(ids),) bool: which of ``ids`` the table describes."""
        return np.array([str(x) in self._row for x in ids], dtype=bool)

    def search(self, q: str | None = None, category: str | None = None, limit: int = 24, offset: int = 0
               ) -> tuple[int, list[dict[str, Any]]]:
        """``(total, records)``: the items whose title or id contains ``q`` (case-insensitive) and
        whose category is ``category`` (None: any), in table order, from ``offset``, at most ``limit``."""
        mask = pl.Series(np.ones(len(self), dtype=bool))
        if q:
            ql = q.lower()
            mask = self._lower.str.contains(ql, literal=True) | self._id_lower.str.contains(ql, literal=True)
        if category is not None:
            mask = mask & (self.frame.get_column("category") == category).fill_null(False)
        hit = self._shown.filter(mask)
        return hit.height, hit.slice(offset, limit).to_dicts()

    def categories(self) -> list[dict[str, Any]]:
        """Every category with its number of items, largest first."""
        c = self.frame.get_column("category").drop_nulls().value_counts(sort=True)
        return [{"name": n, "n_items": int(k)} for n, k in c.iter_rows()]

    def id_array(self) -> np.ndarray:
        """Every id of the table: int64 when all of them are integers, else strings."""
        return self._shown.get_column("id").to_numpy()

    def category_of(self, ids: list[Any]) -> list[str | None]:
        """The category of each of ``ids`` (None where the table has none)."""
        cats = self.frame.get_column("category").to_list()
        return [cats[i] if (i := self._row.get(str(x))) is not None else None for x in ids]

    def write(self, path: str | Path) -> None:
        self.frame.write_parquet(path)

    def coverage(self, item_ids: np.ndarray) -> tuple[int, int]:
        """``(described, total)``: how many of a catalogue's ``item_ids`` the table describes."""
        keys = {str(x) for x in np.asarray(item_ids).tolist()}
        return len(keys & self._row.keys()), len(keys)


def _price(col: pl.Series | None, n: int, source: str) -> pl.Series:
    if col is None:
        return pl.Series("price", [None] * n, dtype=pl.Float64)
    out = col.cast(pl.Float64, strict=False)
    bad = out.is_null() & col.is_not_null()
    if col.dtype == pl.String:
        bad = bad & (col.str.strip_chars() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise NextclickError(f"{source}: column {col.name!r}, data row {row + 1}: price {col[row]!r} is not a number")
    return out.alias("price")


def load_for(model_dir: str | Path, items: str | Path | None, item_ids: np.ndarray) -> ItemTable | None:
    """The item table to show with an artifact: ``items`` when given, else the one the artifact
    holds (``nextclick train --items``), else None. Logs how much of the catalogue it describes."""
    path = Path(items) if items is not None else Path(model_dir) / ARTIFACT_FILE
    if items is None and not path.is_file():
        return None
    table = ItemTable.read(path)
    described, total = table.coverage(item_ids)
    log.info("item table %s: %d rows; %d of the model's %d items described", path, len(table), described, total)
    if described < total:
        log.warning("item table %s describes %d of the model's %d items; the others show their id only",
                    path, described, total)
    return table
