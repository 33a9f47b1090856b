"""The choices of the CLI's options: each built from the ``Literal`` type of the config field it
fills (:class:`ReadOptions`, :class:`PrepareOptions`, the service's :class:`Settings`,
:func:`nextclick.tune.tune`), so they are defined once. None of these imports polars, numpy or
torch."""

from __future__ import annotations

import typing
from enum import Enum
from typing import Any

from nextclick.data.options import PrepareOptions, ReadOptions
from nextclick.serve.settings import Settings
from nextclick.tune import Direction as _Direction


def _choices(name: str, owner: Any, field: str) -> type[Enum]:
    """A str ``Enum`` (what typer turns into choices) of the values of the ``Literal`` annotation of
    ``field`` of ``owner``, a dataclass or a function, in their order."""
    values = typing.get_args(typing.get_type_hints(owner)[field])
    return Enum(name, [(v, v) for v in values], type=str, module=__name__)


Fmt = _choices("Fmt", ReadOptions, "format")
TimeFmt = _choices("TimeFmt", ReadOptions, "time_format")
IdKind = _choices("IdKind", ReadOptions, "item_type")
Split = _choices("Split", PrepareOptions, "split")
SplitBy = _choices("SplitBy", PrepareOptions, "split_by")
Direction = Enum("Direction", [(v, v) for v in typing.get_args(_Direction)], type=str, module=__name__)
ScoringMode = _choices("ScoringMode", Settings, "scoring")
ModelWorkerKind = _choices("ModelWorkerKind", Settings, "model_worker")
StoreKind = _choices("StoreKind", Settings, "store")
