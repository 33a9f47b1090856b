"""Hyper-parameter search with Optuna (TPE) for any registered model, on validation data only.

Every trial trains on the training part of the training data (``train_tr`` of a time-split
dataset, ``train`` of a leave-one-out one, or an explicit ``--train`` file) and is scored on the
validation split (``valid`` / ``train_valid.tsv``) with the same full-catalogue evaluation as
:func:`nextclick.evaluate.evaluate`. The test split is never opened.

=========== ===================================================================================
``data``    :func:`load_tuning_data`: the training and validation sessions, never a test split
``space``   :func:`parse_space`: the JSON search space checked against the model's ``Config``;
            :func:`parse_metric`
``study``   :func:`tune`: the Optuna study, its trials, ``trials.csv`` and ``best.json``
=========== ===================================================================================

Results are plain files: ``trials.csv`` (one row per trial) and ``best.json`` (best parameters
merged with the preset and fixed ones, the metric, the data used). A trial whose parameter
combination a model rejects (:class:`NextclickError`) is recorded as failed; the study goes on.

Example::

    from nextclick.tune import load_tuning_data, tune
    data = load_tuning_data("data/shop")                      # train_tr -> valid
    res = tune("vsknn", data, {"k": {"low": 50, "high": 500}}, n_trials=20, out="runs/tune-vsknn")
    print(res.best_value, res.best_params)
"""

from nextclick.tune.data import TuningData, load_tuning_data
from nextclick.tune.space import METRICS, ParamSpace, SearchSpace, parse_metric, parse_space
from nextclick.tune.study import (
    BEST_FILE,
    TRIALS_FILE,
    TUNE_FORMAT,
    Direction,
    TuneResult,
    check_arguments,
    require_optuna,
    tune,
    write_trials_csv,
)

__all__ = [
    "BEST_FILE",
    "METRICS",
    "TRIALS_FILE",
    "TUNE_FORMAT",
    "Direction",
    "ParamSpace",
    "SearchSpace",
    "TuneResult",
    "TuningData",
    "check_arguments",
    "load_tuning_data",
    "parse_metric",
    "parse_space",
    "require_optuna",
    "tune",
    "write_trials_csv",
]
