"""nextclick: session-based next-click recommendation (data prep, models, evaluation, serving)."""

__version__ = "0.1.0"
