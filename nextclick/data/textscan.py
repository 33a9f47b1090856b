"""Finding where a text click file that polars refused to read breaks, for the error message.

Leaf module (numpy only). Runs only after a failed read: the file is scanned in blocks of whole
lines, so memory stays bounded whatever its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

_SCAN_BLOCK = 1 << 22


def line_blocks(path: Path) -> Iterator[bytes]:
    """The bytes of ``path`` in blocks of whole lines (the last one may lack its line break)."""
    rest = b""
    with path.open("rb") as fh:
        while block := fh.read(_SCAN_BLOCK):
            buf = rest + block
            cut = buf.rfind(b"\n") + 1
            if cut:
                yield buf[:cut]
            rest = buf[cut:]
    if rest:
        yield rest


def field_counts(buf: bytes, sep: str) -> np.ndarray:
    """Fields on each line of ``buf``: separators outside double quotes, plus one. Quotes pair up
    within a line (a quoted field holding a line break counts as two short lines)."""
    b = np.frombuffer(buf, dtype=np.uint8)
    breaks = np.flatnonzero(b == 10)
    starts = np.r_[0, breaks + 1]
    quotes = np.cumsum(b == 34, dtype=np.int64)
    before_line = np.r_[0, quotes[breaks]]  # quotes before each line's first byte
    at = np.flatnonzero(b == ord(sep))
    line = np.searchsorted(breaks, at)
    outside = (quotes[at] - before_line[line]) % 2 == 0
    n_lines = starts.size - int(starts[-1] == b.size)
    return np.bincount(line[outside], minlength=n_lines)[:n_lines] + 1


def text_fault(path: Path, sep: str | None, n_fields: int | None) -> str | None:
    """Where a text file that polars refused breaks, for the error message: the first line holding
    bytes that are not UTF-8 (with its column, read from line 1), or, with ``sep``, holding more
    fields than ``n_fields`` (default: as many as line 1); failing both, the first line with an
    unpaired double quote. ``None`` when none is found.
"""
    header: list[str] = []
    line0 = 1
    like = " (one per name)" if n_fields else " like line 1"
    unpaired: int | None = None
    for buf in line_blocks(path):
        if not header and sep is not None:
            header = [h.strip().strip('"') for h in buf.split(b"\n", 1)[0].decode("utf-8", "replace").split(sep)]
        counts = field_counts(buf, sep) if sep is not None else np.zeros(0, np.int64)
        if n_fields is None and counts.size:
            n_fields = int(counts[0])
        wide = np.flatnonzero(counts > (n_fields or 0))
        wide_at = int(wide[0]) if wide.size else None
        try:
            buf.decode("utf-8")
        except UnicodeDecodeError as e:
            row = buf.count(b"\n", 0, e.start)
            if wide_at is None or row <= wide_at:
                start = buf.rfind(b"\n", 0, e.start) + 1
                col = int(field_counts(buf[start : e.start] + b"\n", sep)[0]) - 1 if sep is not None else -1
                where = f", column {header[col]!r}" if 0 <= col < len(header) else ""
                return f"line {line0 + row}{where}: {buf[e.start : e.end]!r} is not UTF-8 text; save the file as UTF-8"
        if wide_at is not None:
            return f"line {line0 + wide_at} has {counts[wide_at]} fields, expected {n_fields}{like}"
        if unpaired is None and sep is not None:
            b = np.frombuffer(buf, dtype=np.uint8)
            odd = np.flatnonzero(np.bincount(np.searchsorted(np.flatnonzero(b == 10), np.flatnonzero(b == 34))) % 2)
            unpaired = line0 + int(odd[0]) if odd.size else None
        line0 += buf.count(b"\n")
    return None if unpaired is None else f"line {unpaired} has an unpaired double quote (\"); close the quoted field on its line"
