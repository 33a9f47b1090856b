"""User-facing errors.

Anything raised as :class:`NextclickError` is a mistake in the user's input (a file, a column, an
argument). The CLI prints its message and exits with status 2, without a traceback.
"""

from __future__ import annotations


class NextclickError(Exception):
    """A user error whose message says what was wrong and what was expected."""


class NotFittedError(NextclickError, RuntimeError):
    """A recommender was asked for recommendations before ``fit`` or ``load``."""
