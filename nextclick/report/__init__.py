"""The evaluation report: one self-contained HTML file of static figures (matplotlib).

Typical use::

    runs = [run_model(model, test, categories=item_categories(model.vocab_, ids, cats)[0]) for model in models]
    write_report(runs, "report.html")

:func:`run_model` evaluates a model once and keeps every prediction (:mod:`.predictions`); the
statistics, with bootstrap intervals over sessions, are in :mod:`.stats`; the figures in
:mod:`.figures` (imported when a report is written); the page in :mod:`.html`.
"""

from __future__ import annotations

from nextclick.report.build import ReportOptions, write_report
from nextclick.report.predictions import ModelRun, PredictionLog, Predictions, item_categories, read_items, run_model

__all__ = ["ModelRun", "PredictionLog", "Predictions", "ReportOptions", "item_categories", "read_items", "run_model", "write_report"]
