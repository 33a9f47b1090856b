"""GRU4Rec's presets, written as differences from the defaults, resolve to these configurations
(every field stated, so a change of a default that moves a preset shows up here)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from nextclick.models.gru4rec import GRU4Rec  # noqa: E402
from nextclick.models.gru4rec.config import PRESETS, GRU4RecConfig  # noqa: E402

_COMMON = dict(
    nesterov=False, sample_cache_max_size=10_000_000, embedding=0, constrained_embedding=True, n_epochs=10,
    session_order="time", adagrad_eps=1e-06, seed=42, n_threads=1, engine="compiled", device="cpu", time_budget=0.0,
)
RESOLVED = {
    "spec_rsc15": dict(
        layers=(100,), loss="cross-entropy", batch_size=32, dropout_p_embed=0.1, dropout_p_hidden=0.0,
        learning_rate=0.1, momentum=0.0, n_sample=2048, sample_alpha=0.75, bpreg=0.0, elu_param=0.0, logq=1.0,
    ),
    "official_rsc15": dict(
        layers=(100,), loss="cross-entropy", batch_size=32, dropout_p_embed=0.0, dropout_p_hidden=0.4,
        learning_rate=0.2, momentum=0.2, n_sample=2048, sample_alpha=0.5, bpreg=0.0, elu_param=0.0, logq=1.0,
    ),
    "official_retailrocket": dict(
        layers=(224,), loss="bpr-max", batch_size=80, dropout_p_embed=0.5, dropout_p_hidden=0.05,
        learning_rate=0.05, momentum=0.4, n_sample=2048, sample_alpha=0.4, bpreg=1.95, elu_param=0.5, logq=0.0,
    ),
    "tuned_rsc15": dict(
        layers=(100,), loss="cross-entropy", batch_size=32, dropout_p_embed=0.43, dropout_p_hidden=0.48,
        learning_rate=0.089, momentum=0.29, n_sample=512, sample_alpha=0.6, bpreg=0.0, elu_param=0.0, logq=1.0,
    ),
    "tuned_rsc15_bprmax": dict(
        layers=(224,), loss="bpr-max", batch_size=80, dropout_p_embed=0.58, dropout_p_hidden=0.32,
        learning_rate=0.0375, momentum=0.58, n_sample=2048, sample_alpha=0.44, bpreg=2.87, elu_param=0.5, logq=0.0,
    ),
}


@pytest.mark.parametrize("name", list(RESOLVED))
def test_every_preset_resolves_to_its_configuration(name: str) -> None:
    got = dataclasses.asdict(GRU4Rec.from_preset(name).config)
    assert got == {**_COMMON, **RESOLVED[name]}


def test_presets_state_only_differences_from_the_defaults() -> None:
    assert set(PRESETS) == set(RESOLVED)
    defaults = dataclasses.asdict(GRU4RecConfig())
    for name, values in PRESETS.items():
        same = [k for k, v in values.items() if defaults[k] == v]
        assert not same, f"preset {name!r} restates defaults: {same}"


def test_old_preset_names_say_the_new_name() -> None:
    from nextclick.errors import NextclickError
    from nextclick.models import get_model_class

    for model, old, new in [("gru4rec", "rsc15", "spec_rsc15"), ("gru4rec", "rsc15_tuned", "tuned_rsc15"),
                            ("sasrec", "rsc15", "tuned_rsc15"), ("vsknn", "rsc15", "tuned_rsc15")]:
        klass = get_model_class(model)
        with pytest.raises(NextclickError, match=f"preset '{old}' is now called '{new}'"):
            klass.from_preset(old)
        assert new in klass.presets
        assert set(klass.recommended.values()) <= set(klass.presets)
