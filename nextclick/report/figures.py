"""The report's static figures, drawn with matplotlib's Agg canvas and returned as PNG bytes.

Figures are built as :class:`matplotlib.figure.Figure` objects on an Agg canvas, never through
pyplot, so drawing them changes no global matplotlib state (a notebook's backend stays its own).
Every function takes numbers already computed (:mod:`nextclick.report.stats`) and one colour per
model, so a model has the same colour in every figure.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nextclick.report.stats import Estimate

DPI = 110


def colours(n: int) -> list:
    """``n`` colours: matplotlib's tab10; beyond ten, tab20's dark shades first, then its light ones."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    cmap = colormaps["tab20"]
    return [cmap((2 * i) % 20 + (i // 10) % 2) for i in range(n)]


def _legend(fig: Figure, ax) -> None:
    """One legend for the figure, outside the axes on the right."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")


def _figure(ncols: int, width: float = 12.0, height: float = 4.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _errors(e: Estimate, i: int | slice, j: int) -> np.ndarray:
    """The (2, n) distances below and above the value, for ``errorbar``."""
    v = e.value[i, j]
    return np.nan_to_num(np.stack([v - e.lo[i, j], e.hi[i, j] - v]), nan=0.0).clip(min=0.0)


def leaderboard_figure(names: Sequence[str], est: Estimate, metrics: Sequence[str], cols: Sequence) -> bytes:
    """Dot and whisker per model (rows) for each metric (columns of ``est``)."""
    fig, axes = _figure(len(metrics), height=0.45 * len(names) + 1.4)
    y = np.arange(len(names))[::-1]
    for j, (ax, m) in enumerate(zip(axes, metrics)):
        for i in range(len(names)):
            ax.errorbar(est.value[i, j], y[i], xerr=_errors(est, slice(i, i + 1), j), fmt="o", color=cols[i], capsize=3)
        ax.set_yticks(y, names)
        ax.set_ylim(-0.6, len(names) - 0.4)
        ax.set_xlabel(f"{m} (95% CI over sessions)")
        ax.grid(axis="x", alpha=0.3)
        if j:
            ax.tick_params(labelleft=False)
    return png(fig)


def curves_figure(names: Sequence[str], recall: np.ndarray, mrr: np.ndarray, cols: Sequence) -> bytes:
    """Recall@K and MRR@K against K (``recall``, ``mrr``: (models, max_k))."""
    fig, (a, b) = _figure(2)
    ks = np.arange(1, recall.shape[1] + 1)
    for i, name in enumerate(names):
        a.plot(ks, recall[i], color=cols[i], label=name)
        b.plot(ks, mrr[i], color=cols[i], label=name)
    for ax, label in ((a, "Recall@K"), (b, "MRR@K")):
        ax.set_xlabel("K (list length)")
        ax.set_ylabel(label)
        ax.set_xlim(1, ks[-1])
        ax.grid(alpha=0.3)
    _legend(fig, a)
    return png(fig)


def _lines_with_bands(ax, x: np.ndarray, names: Sequence[str], ests: Sequence[Estimate], j: int, cols: Sequence) -> None:
    for i, name in enumerate(names):
        e = ests[i]
        ax.plot(x, e.value[:, j], "o-", color=cols[i], label=name, markersize=4)
        ax.fill_between(x, e.lo[:, j], e.hi[:, j], color=cols[i], alpha=0.15, linewidth=0)
    ax.grid(alpha=0.3)


def position_figure(names: Sequence[str], labels: Sequence[str], ests: Sequence[Estimate], k: int, cols: Sequence) -> bytes:
    """Recall@k and MRR@k by clicks given (``ests[i]``: (positions, 2)), with 95% bands."""
    fig, (a, b) = _figure(2)
    x = np.arange(len(labels))
    _lines_with_bands(a, x, names, ests, 0, cols)
    _lines_with_bands(b, x, names, ests, 1, cols)
    for ax, label in ((a, f"Recall@{k}"), (b, f"MRR@{k}")):
        ax.set_xticks(x, labels)
        ax.set_xlabel("clicks given (position in the session)")
        ax.set_ylabel(label)
    _legend(fig, a)
    return png(fig)


def shift_figure(
    names: Sequence[str], share: Sequence[Estimate], hits: Sequence[Estimate], overall: Sequence[float], k: int, cols: Sequence
) -> bytes:
    """Left: share of the top-k in the new category by offset from the shift; right: Recall@k by
    offset, each model's overall Recall@k dotted (``share``, ``hits``: (offsets, 1))."""
    fig, (a, b) = _figure(2, height=4.6)
    x = np.arange(share[0].value.shape[0])
    _lines_with_bands(a, x, names, share, 0, cols)
    _lines_with_bands(b, x, names, hits, 0, cols)
    a.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    for i in range(len(names)):
        b.axhline(overall[i], color=cols[i], linestyle=":", linewidth=1, alpha=0.7)
    a.set_ylabel(f"share of top-{k} in the new category")
    b.set_ylabel(f"Recall@{k}")
    for ax in (a, b):
        ax.set_xticks(x, ["0\n(target is\nthe shift)"] + [str(j) for j in x[1:]])
        ax.set_xlabel("clicks given in the new category")
    a.set_ylim(0, 1)
    _legend(fig, a)
    return png(fig)


def popularity_figure(
    names: Sequence[str], cutoffs: Sequence[int], coverage: np.ndarray, pop: Estimate, k: int, cols: Sequence
) -> bytes:
    """Left: catalogue coverage@K per model (``coverage``: (models, cutoffs)); right: mean relative
    popularity of the top-k with 95% intervals (``pop``: (models, 1))."""
    fig, (a, b) = _figure(2)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(cutoffs))
    for i, name in enumerate(names):
        a.bar(x + (i - (len(names) - 1) / 2) * width, coverage[i], width, color=cols[i], label=name)
    a.set_xticks(x, [f"@{c}" for c in cutoffs])
    a.set_ylabel("coverage: share of the catalogue recommended")
    _legend(fig, a)
    y = np.arange(len(names))[::-1]
    for i in range(len(names)):
        b.errorbar(pop.value[i, 0], y[i], xerr=_errors(pop, slice(i, i + 1), 0), fmt="o", color=cols[i], capsize=3)
    b.set_yticks(y, names)
    b.set_ylim(-0.6, len(names) - 0.4)
    b.set_xlabel(f"popularity@{k} (relative to the most clicked item; 95% CI)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    return png(fig)


def training_figure(names: Sequence[str], curves: Sequence[list[dict[str, float]]], metric: str | None, cols: Sequence) -> bytes:
    """Training loss per epoch (each model on its own scale: divided by its first epoch's) and the
    validation ``metric`` per epoch where recorded."""
    fig, (a, b) = _figure(2)
    for i, name in enumerate(names):
        ep = np.array([p["epoch"] for p in curves[i]], dtype=float)
        loss = np.array([p["loss"] for p in curves[i]], dtype=float)
        a.plot(ep, loss / loss[0] if loss.size and loss[0] else loss, "o-", color=cols[i], label=name, markersize=4)
        pts = [(p["epoch"], p[metric]) for p in curves[i] if metric and metric in p]
        if pts:
            b.plot(*zip(*pts), "o-", color=cols[i], label=name, markersize=4)
    a.set_ylabel("training loss / first epoch's")
    b.set_ylabel(f"validation {metric.removeprefix('valid_')}" if metric else "no validation recorded")
    for ax in (a, b):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    _legend(fig, a)
    return png(fig)
