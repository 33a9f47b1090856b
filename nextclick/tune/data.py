"""Training and validation data of a search: a prepared dataset's ``train_tr`` (leave-one-out:
``train``) and ``valid`` splits, or two click files. A test split is never read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nextclick.data.dataset import Dataset, encode_clicks, load_sessions
from nextclick.data.holdout import refuse_overlap, refuse_test_split, split_role
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
        refuse_test_split(opt, p)
        if opt == "--train" and split_role(p) == "train" and Dataset.open(p.parent).meta.get("split") == "time":
            raise NextclickError(f"--train {p}: the full train split holds the validation period; use train_tr.parquet")
    if train.resolve() == valid.resolve():
        raise NextclickError(f"--train and --valid are the same file ({train}); validate on held-out sessions")
    tr, _ = load_sessions(train, "train_tr")
    va, rep = load_sessions(valid, "valid", vocab=tr.vocab)
    _log_encode(valid, rep.as_dict())
    refuse_overlap(tr, va, train, valid)
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
