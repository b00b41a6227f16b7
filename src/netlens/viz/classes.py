"""Class scores of one image: the top-k bars, before and after an ablation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from netlens._checks import check_positive_int
from netlens.viz._common import ArrayLike, as_numpy, class_name, new_axes, new_figure

__all__ = ["ablation_comparison", "topk_bars"]


def _scores(logits: ArrayLike, name: str) -> np.ndarray:
    values = as_numpy(logits).astype(np.float64)
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be (C,) or (1, C) scores of one image, got {values.shape}")
    return values


def topk_bars(
    logits: ArrayLike,
    class_names: Sequence[str] | None = None,
    k: int = 5,
    *,
    xlabel: str = "score",
    ax: Axes | None = None,
) -> Axes:
    """Horizontal bars of the ``k`` highest scores of one image, best on top.

    Pass logits or probabilities (``logits.softmax(-1)``); the values are
    drawn as given and written at the end of each bar.

    Parameters
    ----------
    logits
        ``(C,)`` or ``(1, C)`` scores.
    class_names
        One name per score; default ``"class {index}"``.
    k
        Number of bars.
    xlabel
        Label of the score axis.
    ax
        Axes to draw on; a new figure's when omitted.

    Examples
    --------
    >>> import torch
    >>> ax = topk_bars(torch.tensor([0.1, 2.0, 0.5, 1.0]), ["a", "b", "c", "d"], k=2)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['b', 'd']
    """
    scores = _scores(logits, "logits")
    if class_names is not None and len(class_names) != len(scores):
        raise ValueError(f"{len(class_names)} class names for {len(scores)} scores")
    k = check_positive_int(k, "k")
    order = np.argsort(-scores, kind="stable")[:k]
    ax = new_axes(ax, (5, 0.5 * len(order) + 1))
    positions = np.arange(len(order))
    bars = ax.barh(positions, scores[order], color="tab:blue")
    ax.set_yticks(positions, [class_name(int(i), class_names) for i in order])
    ax.invert_yaxis()
    ax.bar_label(bars, fmt="%.3g", padding=3)
    ax.set_xlabel(xlabel)
    ax.set_title(f"top {len(order)}")
    ax.margins(x=0.2)
    return ax


def ablation_comparison(
    logits_before: ArrayLike,
    logits_after: ArrayLike,
    class_names: Sequence[str] | None = None,
    k: int = 5,
    *,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Top-``k`` bars before and after an ablation, side by side on one scale.

    Each panel ranks its own top ``k``, so a class that rises into the top
    ``k`` after the ablation appears on the right only.

    Examples
    --------
    >>> import torch
    >>> fig = ablation_comparison(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.5, 1.0, 2.0]), k=2)
    >>> [ax.get_title() for ax in fig.axes]
    ['before ablation (top 2)', 'after ablation (top 2)']
    """
    before, after = _scores(logits_before, "logits_before"), _scores(logits_after, "logits_after")
    if before.shape != after.shape:
        raise ValueError(f"before and after hold {before.shape} and {after.shape} scores")
    fig = new_figure(fig, (10, 0.5 * k + 1.2))
    left, right = fig.subplots(1, 2, sharex=True)
    for ax, values, when in ((left, before, "before"), (right, after, "after")):
        topk_bars(values, class_names, k, ax=ax)
        ax.set_title(f"{when} ablation (top {min(k, len(values))})")
    return fig
