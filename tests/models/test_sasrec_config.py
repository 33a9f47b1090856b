"""SASRec's presets, written as differences from the defaults, resolve to these literal configs."""

from __future__ import annotations

import dataclasses

import pytest

from nextclick.models.sasrec.config import PRESETS, SASRecConfig
from nextclick.models.sasrec.model import SASRec

DEFAULTS = {
    "max_len": 50, "hidden": 50, "n_blocks": 2, "n_heads": 1, "dropout": 0.5, "lr": 0.001, "batch_size": 128,
    "n_epochs": 200, "l2": 0.0, "item_optimizer": "adam", "loss": "ce", "bce_exclude_seen": True, "n_negatives": 256, "gbce_t": 0.75,
    "sample_alpha": 1.0, "in_batch_negatives": False, "neg_sharing": "auto", "top_k_negatives": 0, "logq_correction": True,
    "pre_ln": False, "positions": "start", "scale_emb": True,
    "patience": 5, "holdout": 0.1, "eval_every": 1, "valid_metric": "recall@20", "valid_negatives": 100, "seed": 0, "device": "cpu",
    "n_threads": 1, "progress": True,
}
RESOLVED = {
    "paper": {**DEFAULTS, "loss": "bce", "positions": "end", "valid_metric": "ndcg@10", "patience": 3},
    "paper_ce": {**DEFAULTS, "loss": "ce", "positions": "end", "valid_metric": "ndcg@10", "patience": 3},
    "tuned_rsc15": {**DEFAULTS, "hidden": 100, "dropout": 0.3, "n_epochs": 16, "holdout": 0.0},
    "gsasrec": {**DEFAULTS, "loss": "gbce", "n_negatives": 256, "gbce_t": 0.75, "hidden": 128},
    "tron": {**DEFAULTS, "loss": "sampled_ce", "sample_alpha": 0.0, "in_batch_negatives": True, "n_negatives": 4096,
             "top_k_negatives": 100, "logq_correction": False, "hidden": 200, "n_blocks": 2, "pre_ln": True, "dropout": 0.05,
             "lr": 0.0005, "batch_size": 128, "max_len": 50, "n_epochs": 10},
}


def test_defaults() -> None:
    assert dataclasses.asdict(SASRecConfig()) == DEFAULTS


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_preset_resolves_to_its_literal_config(name: str) -> None:
    assert dataclasses.asdict(SASRec.from_preset(name).config) == RESOLVED[name]


def test_every_preset_is_pinned_and_states_only_differences() -> None:
    assert set(PRESETS) == set(RESOLVED)
    for name, diff in PRESETS.items():
        assert all(DEFAULTS[k] != v for k, v in diff.items()), name
