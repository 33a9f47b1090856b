"""Prepared datasets on disk and conversion of click frames to :class:`Sessions`.

A prepared dataset is a directory::

    meta.json            format, split kind, item vocabulary (index 0 = padding), statistics,
                         and the report of every preprocessing step
    train.parquet        SessionId, ItemId, Time (+ UserId)   -- original ids, not indices
    test.parquet
    train_tr.parquet     (time split) training part for tuning
    valid.parquet        (time split: validation part for tuning; leave-one-out: validation)

Leaf-level module: polars + numpy, no torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from nextclick.data.io import IdCodes, ReadOptions, read_clicks
from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)

META = "meta.json"
DATASET_FORMAT = "nextclick-dataset"
ROLES = ("train", "test", "train_tr", "valid")


def stable_sort(df: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Sort by ``keys``; rows with equal keys keep their order. Returns ``df`` itself when it is
    already sorted (cheap check). The sort keeps order itself (``maintain_order``) rather than
    breaking ties with an added row index, which would widen the sort keys of a large frame."""
    if df.height < 2 or _is_sorted(df, keys):
        return df
    if len(keys) > 1 and _is_sorted(df, keys[1:]):
        # the rest of the keys already ascend over the whole frame (a time-ordered log): a stable
        # sort on the first key alone keeps them ascending within each group
        return df.sort(keys[0], maintain_order=True)
    return df.sort(keys, maintain_order=True)


def _is_sorted(df: pl.DataFrame, keys: list[str]) -> bool:
    """True when ``df`` is sorted lexicographically by ``keys`` (vectorized, no sort)."""
    ok = pl.lit(True)
    tie = pl.lit(True)  # rows whose previous keys are equal to the previous row's
    for k in keys:
        c, p = pl.col(k), pl.col(k).shift(1)
        ok = ok & (~tie | (c >= p)).fill_null(True)
        tie = tie & (c == p).fill_null(False)
    return bool(df.select(ok.all()).item())


def sort_clicks(df: pl.DataFrame) -> pl.DataFrame:
    """Sessions contiguous, clicks in time order; ties keep file order."""
    return stable_sort(df, ["SessionId", "Time"])


def frame_stats(df: pl.DataFrame) -> dict[str, int]:
    return {
        "events": int(df.height),
        "sessions": int(df.get_column("SessionId").n_unique()) if df.height else 0,
        "items": int(df.get_column("ItemId").n_unique()) if df.height else 0,
    }


def frame_to_sessions(df: pl.DataFrame, vocab: ItemVocab, last_only: bool = False) -> Sessions:
    """Convert a canonical click frame whose items are all in ``vocab`` into :class:`Sessions`."""
    df = sort_clicks(df)
    items = vocab.encode(df.get_column("ItemId").to_numpy())
    if items.size and items.min() == 0:
        raise ValueError("frame_to_sessions: frame holds items outside the vocabulary; use encode_clicks")
    sid = df.get_column("SessionId").to_numpy()
    if sid.size:
        starts = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        offsets = np.concatenate([[0], starts, [sid.size]]).astype(np.int64)
        session_ids = sid[offsets[:-1]]
    else:
        offsets, session_ids = np.zeros(1, np.int64), sid
    return Sessions(
        items=items,
        offsets=offsets,
        n_items=vocab.n_items,
        session_ids=session_ids,
        times=df.get_column("Time").to_numpy().astype(np.float64),
        last_only=last_only,
        vocab=vocab,
    )


@dataclass
class EncodeReport:
    """What :func:`encode_clicks` removed to fit data to a model's vocabulary."""

    unknown_events: int = 0
    short_sessions: int = 0
    short_session_events: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "unknown_item_events_removed": self.unknown_events,
            "short_sessions_removed": self.short_sessions,
            "short_session_events_removed": self.short_session_events,
        }


def encode_clicks(df: pl.DataFrame, vocab: ItemVocab, last_only: bool = False, min_len: int = 2) -> tuple[Sessions, EncodeReport]:
    """Map a click frame onto ``vocab``: clicks on unknown items are removed, then sessions left
    shorter than ``min_len`` (the GRU4Rec evaluation protocol). Both counts are reported."""
    rep = EncodeReport()
    known = vocab.encode(df.get_column("ItemId").to_numpy()) > 0
    rep.unknown_events = int((~known).sum())
    if rep.unknown_events:
        df = df.filter(pl.Series(known))
    if min_len > 1 and df.height:
        n = df.select(pl.len().over("SessionId")).to_series()
        short = n < min_len
        if short.any():
            rep.short_session_events = int(short.sum())
            rep.short_sessions = int(df.filter(short).get_column("SessionId").n_unique())
            df = df.filter(~short)
    for k, v in rep.as_dict().items():
        if v:
            log.info("%s: %d", k.replace("_", " "), v)
    return frame_to_sessions(df, vocab, last_only=last_only), rep


@dataclass
class Dataset:
    """A prepared dataset directory."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Dataset:
        path = Path(path)
        meta_path = path / META
        if not meta_path.exists():
            raise NextclickError(f"{path}: not a prepared dataset directory (no {META}); run `nextclick prepare` first")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != DATASET_FORMAT:
            raise NextclickError(f"{meta_path}: not a nextclick dataset (format={meta.get('format')!r})")
        return cls(path, meta)

    @property
    def vocab(self) -> ItemVocab:
        return ItemVocab.from_json(self.meta["vocab"])

    @property
    def roles(self) -> list[str]:
        return list(self.meta["files"])

    def frame(self, role: str) -> pl.DataFrame:
        if role not in self.meta["files"]:
            raise NextclickError(f"{self.path}: has no {role!r} split (it has {self.roles})")
        return pl.read_parquet(self.path / self.meta["files"][role])

    def last_only(self, role: str) -> bool:
        return bool(self.meta.get("last_only", {}).get(role, False))

    def sessions(self, role: str, vocab: ItemVocab | None = None) -> tuple[Sessions, EncodeReport]:
        return encode_clicks(self.frame(role), vocab or self.vocab, last_only=self.last_only(role))


def _dataset_meta(path: Path) -> dict[str, Any] | None:
    """The meta.json of a dataset nextclick wrote at ``path``, or None."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == DATASET_FORMAT else None


def check_output_dir(path: Path, roles: list[str], sources: list[Path], overwrite: bool = False) -> list[Path]:
    """Refuse an output directory that would lose data; return the old dataset files to remove.

    Never writes over an input: a file in ``sources`` that the dataset would replace or remove,
    or an input directory the output would land in, is an error even with ``overwrite``. A
    non-empty directory that is not a dataset nextclick wrote is refused unless ``overwrite``;
    a dataset nextclick wrote is replaced (its old split files are removed).
    """
    if path.exists() and not path.is_dir():
        raise NextclickError(f"--out {path}: is a file; give a directory for the prepared dataset")
    old = _dataset_meta(path) if path.is_dir() else None
    names = {META, *(f"{r}.parquet" for r in roles)}
    stale = [path / f for f in (old or {}).get("files", {}).values() if isinstance(f, str) and f not in names]
    touched = {(path / n).resolve() for n in names} | {p.resolve() for p in stale}
    out_abs = path.resolve()
    for src in sources:
        src_abs = src.resolve()
        if src_abs in touched:
            raise NextclickError(f"--out {path}: would write over the input {src}; choose another output directory")
        if src_abs.is_dir() and (out_abs == src_abs or src_abs in out_abs.parents):
            raise NextclickError(f"--out {path}: lies inside the input directory {src}; choose a directory outside it")
    if path.is_dir() and old is None and any(path.iterdir()) and not overwrite:
        raise NextclickError(
            f"--out {path}: directory is not empty and holds no nextclick dataset; "
            "choose an empty or new directory, or pass --overwrite"
        )
    return stale


def write_dataset(
    path: str | Path,
    frames: dict[str, pl.DataFrame],
    vocab: ItemVocab,
    meta: dict[str, Any],
    sources: list[Path] | None = None,
    overwrite: bool = False,
    codes: IdCodes | None = None,
) -> Dataset:
    """Write a prepared dataset to ``path`` (see :func:`check_output_dir` for what is refused).

    With ``codes``, the frames' id columns hold compact codes (see :class:`IdCodes`): the files get
    the shop's ids back, a slice of rows at a time.

    Each file is written under a temporary name and renamed into place; meta.json comes last, so
    an interrupted write never leaves a meta.json that names half-written splits.
    """
    path = Path(path)
    stale = check_output_dir(path, list(frames), list(sources or []), overwrite)
    path.mkdir(parents=True, exist_ok=True)
    old_meta = path / META
    if old_meta.exists():
        old_meta.unlink()  # the old dataset is invalid from here until the new meta.json lands
    for f in stale:
        f.unlink(missing_ok=True)
    files = {}
    for role, df in frames.items():
        files[role] = f"{role}.parquet"
        tmp = path / f".{files[role]}.tmp"
        _write_split(sort_clicks(df), tmp, codes)
        tmp.replace(path / files[role])
    full = {
        "format": DATASET_FORMAT,
        "version": 1,
        **meta,
        "files": files,
        "stats": {role: frame_stats(df) for role, df in frames.items()},
        "vocab": vocab.to_json(),
    }
    tmp = path / f".{META}.tmp"
    tmp.write_text(json.dumps(full, indent=1))
    tmp.replace(path / META)
    return Dataset(path, full)


def _write_split(df: pl.DataFrame, path: Path, codes: IdCodes | None, rows: int = 1 << 23) -> None:
    if codes is None:
        df.write_parquet(path, compression="lz4")
        return
    import pyarrow.parquet as pq  # only this writer needs it

    first = codes.restore(df.head(0)).to_arrow()
    with pq.ParquetWriter(path, first.schema, compression="lz4") as writer:
        for start in range(0, df.height, rows):
            writer.write_table(codes.restore(df.slice(start, rows)).to_arrow().cast(first.schema))


def load_sessions(
    data: str | Path,
    role: str,
    vocab: ItemVocab | None = None,
    read_opts: ReadOptions | None = None,
) -> tuple[Sessions, EncodeReport]:
    """Load DATA for ``role`` ("train", "valid", "test", ...).

    DATA is a prepared dataset directory (its ``role`` split is used), one of the parquet files
    inside it, or a click file with SessionId / ItemId / Time columns. Without ``vocab`` (training),
    the dataset's vocabulary is used, or one is fitted on the click file.
    """
    path = Path(data)
    if path.is_dir():
        ds = Dataset.open(path)
        return ds.sessions(role, vocab)
    if path.suffix == ".parquet" and (path.parent / META).exists():
        ds = Dataset.open(path.parent)
        r = next((k for k, f in ds.meta["files"].items() if f == path.name), None)
        if r is not None:
            return ds.sessions(r, vocab)
    opts = read_opts or ReadOptions()
    if vocab is not None and vocab.is_int and opts.item_type == "auto":
        opts = ReadOptions(**{**opts.__dict__, "item_type": "int"})
    df = read_clicks(path, opts)
    if "SessionId" not in df.columns:
        raise NextclickError(f"{path}: needs a session column here; build sessions with `nextclick prepare` first")
    if vocab is None:
        vocab = ItemVocab.fit(df.get_column("ItemId").to_numpy())
    return encode_clicks(df, vocab)
