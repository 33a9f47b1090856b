"""What a model may see while it is fitted: guards that keep test data and training data out of
validation, and validation data held out of training data when none is given.

Validation picks epochs and hyper-parameters, so validating on a test split, or on sessions the
model trains on, quietly leaks. :func:`refuse_test_split` refuses a dataset's test split (and a
click file named like one); :func:`refuse_overlap` refuses validation sessions that training holds
in full. ``nextclick train`` and ``nextclick tune`` both call them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nextclick.data.dataset import META, Dataset
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError

_TEST_NAME = re.compile(r"(^|[^a-z])test([^a-z]|$)")


def split_role(path: Path) -> str | None:
    """The role (``train``, ``test``, ...) of ``path`` in the dataset it belongs to, else None."""
    if path.suffix != ".parquet" or not (path.parent / META).exists():
        return None
    ds = Dataset.open(path.parent)
    return next((r for r, f in ds.meta["files"].items() if f == path.name), None)


def refuse_test_split(opt: str, path: Path) -> None:
    """Refuse ``path`` as training or validation data when it is a test split: a prepared
    dataset's ``test`` file, or a click file whose name has the word ``test`` in it."""
    role = split_role(path)
    if role == "test":
        raise NextclickError(f"{opt} {path}: is the test split of {path.parent}; fit on train and validate on valid only")
    if role is None and not path.is_dir() and _TEST_NAME.search(path.stem.lower()):
        raise NextclickError(
            f"{opt} {path}: the file name says test split; validating or training on test data leaks it into the "
            "model. Use a validation split (e.g. `nextclick prepare` writes valid.parquet), or rename a file that is not test data"
        )


def refuse_overlap(tr: Sessions, va: Sessions, train: Path, valid: Path) -> None:
    """Refuse validation sessions that training holds in full, e.g. ``--train train_full.tsv
    --valid train_valid.tsv``, or a time split's full ``train`` beside its ``valid``.

    Leave-one-out validation shares its sequences with training by design: training holds each
    sequence without its last two clicks, so a sequence counts only where training holds at least
    as many clicks of it as validation does."""
    if tr.session_ids is None or va.session_ids is None or not tr.n_sessions or not va.n_sessions:
        return
    if tr.session_ids.dtype.kind != va.session_ids.dtype.kind:
        return
    _, ti, vi = np.intersect1d(tr.session_ids, va.session_ids, assume_unique=True, return_indices=True)
    n = int((tr.lengths[ti] >= va.lengths[vi]).sum())
    if n:
        hint = " (a prepared dataset: train on its train_tr.parquet)" if train.is_dir() else ""
        raise NextclickError(
            f"--valid {valid}: {n:,} of its {va.n_sessions:,} sessions are in --train {train} in full, so validation "
            f"would score clicks the model trained on; train on data that ends before the validation period{hint}"
        )


def hold_out_last_clicks(
    train: Sessions, share: float, seed: int = 0, max_sequences: int = 10_000
) -> tuple[Sessions, Sessions]:
    """Validation data taken from training data itself, for a model that early-stops when no
    validation data is given: the last click of a random ``share`` of the sequences of three or
    more clicks (at most ``max_sequences`` of them) is held out.

    Returns ``(fit, valid)``: ``fit`` is ``train`` with those last clicks removed; ``valid`` holds
    the chosen sequences whole, with only their last click a target (``last_only``), as in the
    leave-one-out protocol. The same ``seed`` picks the same sequences (every rank of a
    data-parallel fit agrees)."""
    if not 0.0 < share < 1.0:
        raise NextclickError(f"the held-out share of sequences must be in (0, 1), got {share}")
    eligible = np.flatnonzero(train.lengths >= 3)
    n = min(int(round(share * eligible.size)), max_sequences)
    if n == 0:
        raise NextclickError(
            f"no validation data and too few sequences of 3+ clicks ({eligible.size}) to hold out {share:.0%} of them; "
            "give validation data or turn early stopping off"
        )
    pick = np.sort(np.random.default_rng([seed, 7]).choice(eligible, size=n, replace=False))
    valid = train.select(pick)
    valid.last_only = True
    keep = np.ones(train.n_events, dtype=bool)
    keep[train.offsets[pick + 1] - 1] = False
    lengths = train.lengths.copy()
    lengths[pick] -= 1
    fit = Sessions(
        items=train.items[keep],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        n_items=train.n_items,
        session_ids=train.session_ids,
        times=None if train.times is None else train.times[keep],
        last_only=train.last_only,
        vocab=train.vocab,
        meta=dict(train.meta),
    )
    return fit, valid
