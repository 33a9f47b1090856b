"""Training and validation data of a search: a prepared dataset's ``train_tr`` (leave-one-out:
``train``) and ``valid`` splits, or two click files. A test split is never read."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclick.data.dataset import META, Dataset, encode_clicks, load_sessions
from nextclick.data.sessions import Sessions
from nextclick.data.vocab import ItemVocab
from nextclick.errors import NextclickError

log = logging.getLogger(__name__)


@dataclass
class TuningData:
    """Training and validation sessions of a search, and where they came from."""

    train: Sessions
    valid: Sessions
    sources: dict[str, str]  # plain strings for best.json: which files / splits were read


def load_tuning_data(
    data: str | Path | None = None, train: str | Path | None = None, valid: str | Path | None = None
) -> TuningData:
    """Training and validation data for a search; never reads a test split.

    ``data``: a prepared dataset directory. Time split: train on ``train_tr``, validate on
    ``valid`` (the catalogue is fitted on ``train_tr``, so validation clicks on items it never saw
    are removed, as the test protocol does with ``train``). Leave-one-out: train on ``train``,
    validate on the last click of ``valid``, over the dataset's catalogue.
    Or ``train`` and ``valid``: click files (e.g. ``train_tr.tsv`` / ``train_valid.tsv``) or
    parquet files of a dataset; a dataset's ``test`` split, and a time split's full ``train``
    (which holds the validation period), are refused.
    """
    if data is not None:
        if train is not None or valid is not None:
            raise NextclickError("give either a dataset directory (--data) or --train and --valid files, not both")
        return _from_dataset(Path(data))
    if train is None or valid is None:
        raise NextclickError("tuning needs a dataset directory (--data) or both --train and --valid files")
    train, valid = Path(train), Path(valid)
    for opt, p in (("--train", train), ("--valid", valid)):
        if not p.exists():
            raise NextclickError(f"{opt} {p}: no such file")
        if p.is_dir():
            raise NextclickError(f"{opt} {p}: is a directory; pass a prepared dataset as --data (it uses train_tr -> valid)")
        _refuse_wrong_split(opt, p)
    if train.resolve() == valid.resolve():
        raise NextclickError(f"--train and --valid are the same file ({train}); validate on held-out sessions")
    tr, _ = load_sessions(train, "train_tr")
    va, rep = load_sessions(valid, "valid", vocab=tr.vocab)
    _log_encode(valid, rep.as_dict())
    _check_overlap(tr, va, train, valid)
    return _checked(TuningData(tr, va, {"train": str(train), "valid": str(valid)}))


def _from_dataset(path: Path) -> TuningData:
    if not path.is_dir():
        raise NextclickError(f"--data {path}: not a directory; give a dataset prepared by `nextclick prepare`")
    ds = Dataset.open(path)
    split = ds.meta.get("split")
    if split == "time":
        train_role = "train_tr"
        frame = ds.frame(train_role)
        vocab = ItemVocab.fit(frame.get_column("ItemId").to_numpy())
        tr, _ = encode_clicks(frame, vocab, last_only=ds.last_only(train_role))
    elif split == "loo":
        train_role = "train"
        tr, _ = ds.sessions(train_role)
    else:
        raise NextclickError(f"--data {path}: split {split!r} has no validation split; prepare it with --split time or loo")
    va, rep = ds.sessions("valid", vocab=tr.vocab)
    _log_encode(path / ds.meta["files"]["valid"], rep.as_dict())
    sources = {
        "dataset": str(path),
        "train": str(path / ds.meta["files"][train_role]),
        "valid": str(path / ds.meta["files"]["valid"]),
        "train_role": train_role,
        "valid_role": "valid",
    }
    return _checked(TuningData(tr, va, sources))


def _refuse_wrong_split(opt: str, p: Path) -> None:
    """A parquet file of a prepared dataset: refuse its test split, and a time split's full train."""
    if p.suffix != ".parquet" or not (p.parent / META).exists():
        if re.search(r"(^|[^a-z])test([^a-z]|$)", p.stem.lower()):
            log.warning("%s %s: the name looks like a test split; tuning should only see training and validation data", opt, p)
        return
    ds = Dataset.open(p.parent)
    role = next((r for r, f in ds.meta["files"].items() if f == p.name), None)
    if role == "test":
        raise NextclickError(f"{opt} {p}: is the test split of {p.parent}; tuning never reads it (use train_tr and valid)")
    if opt == "--train" and role == "train" and ds.meta.get("split") == "time":
        raise NextclickError(f"--train {p}: the full train split holds the validation period; use train_tr.parquet")


def _check_overlap(tr: Sessions, va: Sessions, train: Path, valid: Path) -> None:
    """Warn when training holds validation sessions in full (e.g. train_full.tsv with train_valid.tsv)."""
    if tr.session_ids is None or va.session_ids is None or not tr.n_sessions or not va.n_sessions:
        return
    if tr.session_ids.dtype.kind != va.session_ids.dtype.kind:
        return
    _, ti, vi = np.intersect1d(tr.session_ids, va.session_ids, assume_unique=True, return_indices=True)
    n = int((tr.lengths[ti] >= va.lengths[vi]).sum())  # leave-one-out: train holds shorter prefixes
    if n:
        log.warning(
            "--train %s holds %d of the %d validation sessions of --valid %s in full: their targets are in training",
            train,
            n,
            va.n_sessions,
            valid,
        )


def _log_encode(path: Path, rep: dict[str, int]) -> None:
    if any(rep.values()):
        log.info(
            "%s: removed %d clicks on items unknown to training, then %d sessions left shorter than 2",
            path,
            rep["unknown_item_events_removed"],
            rep["short_sessions_removed"],
        )


def _checked(d: TuningData) -> TuningData:
    if d.train.n_events == 0:
        raise NextclickError(f"{d.sources['train']}: no training clicks")
    if d.valid.n_predictions() == 0:
        raise NextclickError(f"{d.sources['valid']}: no validation predictions left (no session of 2+ known clicks)")
    return d
