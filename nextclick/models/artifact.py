"""Model artifacts on disk: plain data, written atomically, checked when read.

An artifact is a directory of three files::

    config.json          format, model name, its hyper-parameters, n_items, and the size and
                         SHA-256 of each of the two other files
    vocab.json           the shop's item ids (index i + 1 = ids[i]; 0 is padding)
    weights.safetensors  popularity and the model's learned arrays (never pickle)

:func:`write` builds the directory under a temporary name beside the target and renames it into
place, so a crash halfway leaves either the old artifact or none, never a half-written one that
loads. :func:`read` refuses, with one line naming the file and what is wrong, anything it cannot
trust: a file that is missing, truncated or altered (its checksum), a ``config.json`` that is not
the expected JSON, a vocabulary of another length than ``n_items``, non-finite weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError

ARTIFACT_FORMAT = "nextclick-model"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "weights.safetensors"
FILES = (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE)
MAX_ITEMS = 2**31 - 1  # item indices are int32-safe everywhere


@dataclass
class Artifact:
    """What :func:`read` returns: the parsed ``config.json``, the vocabulary and the arrays."""

    header: dict[str, Any]
    vocab: ItemVocab
    arrays: dict[str, np.ndarray]


def digest(path: Path) -> dict[str, Any]:
    """A file's size and SHA-256, as the metadata files of artifacts and exports record them."""
    with open(path, "rb") as f:
        return {"bytes": path.stat().st_size, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def _check_finite(arrays: dict[str, np.ndarray], where: str) -> None:
    """Refuse NaN or infinite weights (checked in slices of about 16 MB: no copy of a large table)."""
    for name, a in arrays.items():
        if a.dtype.kind != "f" or a.size == 0:
            continue
        flat = a.reshape(-1)
        step = max(1, (16 << 20) // a.itemsize)
        if not all(np.isfinite(flat[i : i + step]).all() for i in range(0, flat.size, step)):
            raise NextclickError(f"{where}: array {name!r} holds NaN or infinite values; the model is unusable")


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
           "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_}


def map_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file as copy-on-write memory maps of it: nothing is read until
    used, and processes that map the same file share its pages (a write would stay private).

    The layout is read by hand: an 8-byte little-endian header length, the JSON header (per array
    its dtype, shape and byte range in the data that follows), the data."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
        if not 0 < n <= size - 8:
            raise NextclickError(f"{path}: not a valid safetensors file (header length {n} in a file of {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise NextclickError(f"{path}: not a valid safetensors file (header: {e})") from None
    if not isinstance(header, dict):
        raise NextclickError(f"{path}: not a valid safetensors file (the header is not a JSON object)")
    header.pop("__metadata__", None)
    start = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="c") if size > start else np.zeros(0, np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            shape = tuple(int(d) for d in spec["shape"])
            lo, hi = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise NextclickError(f"{path}: not a valid safetensors file (array {name!r}: {spec!r})") from None
        if not (0 <= lo <= hi <= size - start) or hi - lo != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise NextclickError(f"{path}: not a valid safetensors file (array {name!r} does not fit its byte range)")
        out[name] = mm[start + lo : start + hi].view(dtype).reshape(shape)
    return out


def _target(path: Path) -> None:
    """Refuse a target that is a file, or a directory holding anything but an artifact's files."""
    if path.exists() and not path.is_dir():
        raise NextclickError(f"--out {path}: is a file; give a directory for the model artifact")
    if path.is_dir():
        other = sorted(p.name for p in path.iterdir() if p.name not in FILES)
        if other:
            raise NextclickError(
                f"--out {path}: holds other files ({', '.join(other[:3])}); choose a new or empty directory"
            )


def write(path: str | Path, header: dict[str, Any], vocab: ItemVocab, arrays: dict[str, np.ndarray]) -> Path:
    """Write an artifact to ``path`` atomically (see the module docstring); ``header`` becomes
    ``config.json`` with the format and the files' checksums added. Non-finite arrays are refused
    before anything is written."""
    path = Path(path)
    _target(path)
    _check_finite(arrays, str(path))

    def fill(tmp: Path) -> None:
        vocab.save(tmp / VOCAB_FILE)
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(tmp / WEIGHTS_FILE))
        files = {name: digest(tmp / name) for name in (VOCAB_FILE, WEIGHTS_FILE)}
        (tmp / CONFIG_FILE).write_text(json.dumps({"format": ARTIFACT_FORMAT, **header, "files": files}, indent=1))

    write_dir_atomically(path, fill)
    return path


def write_dir_atomically(path: Path, fill: Callable[[Path], Any]) -> Any:
    """``fill(tmp)`` writes a directory's files into a temporary directory beside ``path``; they
    are synced to disk, then the directory is renamed to ``path`` (an existing one is moved aside
    first, then removed), so a crash leaves the old directory or none, never half a new one.
    Returns what ``fill`` returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        result = fill(tmp)
        for f_path in tmp.iterdir():  # on disk before the rename makes them visible
            with open(f_path, "rb") as f:
                os.fsync(f.fileno())
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _header(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise NextclickError(f"{path}: not a model directory (no {CONFIG_FILE}); train one with `nextclick train`")
    try:
        header = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise NextclickError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != ARTIFACT_FORMAT:
        fmt = header.get("format") if isinstance(header, dict) else None
        raise NextclickError(f"{cfg_path}: not a nextclick model (format={fmt!r})")
    for key, kind in (("model", str), ("config", dict), ("n_items", int)):
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise NextclickError(f"{cfg_path}: {key!r} must be a JSON {kind.__name__}, got {header.get(key)!r}")
    if not 1 <= header["n_items"] <= MAX_ITEMS:
        raise NextclickError(f"{cfg_path}: 'n_items' must lie in 1..{MAX_ITEMS}, got {header['n_items']}")
    return header


def _check_files(path: Path, header: dict[str, Any]) -> None:
    """Every file present, and the size and checksum ``config.json`` recorded (artifacts written
    before checksums were recorded are read without them)."""
    recorded = header.get("files")
    for name in (VOCAB_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise NextclickError(f"{path}: {name} is missing; the artifact is incomplete")
        if recorded is None:
            continue
        want = recorded.get(name) if isinstance(recorded, dict) else None
        if not isinstance(want, dict):
            raise NextclickError(f"{path / CONFIG_FILE}: no checksum recorded for {name}")
        got = digest(path / name)
        if got != {"bytes": want.get("bytes"), "sha256": want.get("sha256")}:
            what = "truncated" if got["bytes"] < (want.get("bytes") or 0) else "altered"
            raise NextclickError(f"{path / name}: does not match the checksum in {CONFIG_FILE} ({what}); "
                                 "the artifact is damaged: save or copy it again")


def read(path: str | Path, mmap: bool = False) -> Artifact:
    """Read and check an artifact (see the module docstring); every problem is a one-line
    :class:`NextclickError` naming the file. ``mmap``: the arrays are copy-on-write memory maps of
    the weights file (:func:`map_safetensors`), shared by the processes that serve it."""
    path = Path(path)
    header = _header(path)
    _check_files(path, header)
    try:
        vocab = ItemVocab.load(path / VOCAB_FILE)
    except NextclickError:
        raise
    except Exception as e:
        raise NextclickError(f"{path / VOCAB_FILE}: not a valid item vocabulary ({type(e).__name__}: {e})") from None
    if len(vocab) != header["n_items"]:
        raise NextclickError(
            f"{path / VOCAB_FILE}: holds {len(vocab):,} items but {CONFIG_FILE} says n_items = {header['n_items']:,}"
        )
    try:
        arrays = map_safetensors(path / WEIGHTS_FILE) if mmap else load_file(str(path / WEIGHTS_FILE))
    except NextclickError:
        raise
    except Exception as e:
        raise NextclickError(f"{path / WEIGHTS_FILE}: not a valid safetensors file ({type(e).__name__}: {e})") from None
    _check_finite(arrays, str(path / WEIGHTS_FILE))
    pop = arrays.get("popularity")
    if pop is None or pop.shape != (header["n_items"] + 1,):
        raise NextclickError(f"{path / WEIGHTS_FILE}: 'popularity' must have n_items + 1 = {header['n_items'] + 1} values")
    return Artifact(header, vocab, arrays)
