"""Lazy re-exports for packages whose modules are heavy to import (polars, torch, numba)."""

from __future__ import annotations

import importlib
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Any:
    """A module ``__getattr__`` (PEP 562) for ``package`` that imports ``exports[name]`` (a module
    path) on first access to ``name``: importing the package itself then costs nothing."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
