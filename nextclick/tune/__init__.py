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

from typing import Literal

from nextclick.lazy import lazy_exports

Direction = Literal["maximize", "minimize"]

# imported on first use, so the command line reads ``Direction`` without loading the data stack
_EXPORTS = {
    **dict.fromkeys(["TuningData", "load_tuning_data"], "nextclick.tune.data"),
    **dict.fromkeys(["METRICS", "ParamSpace", "SearchSpace", "parse_metric", "parse_space"], "nextclick.tune.space"),
    **dict.fromkeys(
        ["BEST_FILE", "TRIALS_FILE", "TUNE_FORMAT", "TuneResult", "check_arguments", "read_best", "require_optuna", "tune",
         "write_trials_csv"],
        "nextclick.tune.study",
    ),
}
__all__ = sorted([*_EXPORTS, "Direction"])
__getattr__ = lazy_exports(__name__, _EXPORTS)
