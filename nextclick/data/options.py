"""The options of reading and preparing a click log, as plain dataclasses (no polars, no numpy):
the command line builds its choices from their ``Literal`` types without loading the data stack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Format = Literal["auto", "csv", "tsv", "parquet", "whitespace"]
TimeFormat = Literal["auto", "s", "ms", "iso"]
IdType = Literal["auto", "int", "str"]
#: How the time split assigns clicks (see :func:`nextclick.data.preprocess.time_split`).
SplitBy = Literal["strict", "end"]


@dataclass
class ReadOptions:
    """Where the columns are and how to read them.

    ``session_col=None`` (or a session column absent from a file that has ``user_col``) means
    sessions are built later from each user's clicks; ``time_col=None`` means line order is
    time order. ``names`` gives column names to a file without a header row (whitespace files
    default to ``UserId ItemId [Time]``). ``sep`` is the delimiter of a CSV/TSV file (``None``:
    the one of ``, ; TAB |`` its first line holds most often).
    """

    session_col: str | None = "SessionId"
    item_col: str = "ItemId"
    time_col: str | None = "Time"
    user_col: str | None = None
    format: Format = "auto"
    time_format: TimeFormat = "auto"
    item_type: IdType = "auto"
    names: list[str] | None = None
    sep: str | None = None  # delimiter of CSV/TSV files; None: sniffed from the first line


@dataclass
class PrepareOptions:
    """Options of :func:`prepare` (mirrors ``nextclick prepare --help``)."""

    read: ReadOptions = field(default_factory=ReadOptions)
    session_gap: float = 1800.0  # seconds, used when there is no session column
    drop_repeats: bool = True
    min_session_length: int = 2
    min_item_support: int = 5
    support_rounds: int = 0  # 0: filter until stable; n: n rounds, then sessions once more
    split: Literal["time", "loo", "none"] = "time"
    test_days: float = 1.0
    valid_days: float | None = None  # defaults to test_days
    split_by: SplitBy = "strict"
