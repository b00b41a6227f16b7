"""Plots of embeddings: t-SNE scatter, nearest-neighbour grid, two networks side by side.

Every function takes plain arrays or tensors (what :class:`netlens.embedding.EmbeddingProbe`
returns) and draws with matplotlib; nothing here computes features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase

from netlens.viz._common import (
    ArrayLike,
    as_numpy,
    class_labels,
    class_name,
    hide_ticks,
    new_axes,
    new_figure,
)
from netlens.viz.image import normalize, to_image

__all__ = ["RIGHT_COLOUR", "WRONG_COLOUR", "compare_tsne", "neighbour_grid", "tsne_scatter"]

#: Frame / title colour of a neighbour whose class differs from the query's.
WRONG_COLOUR = "#d62728"
#: Frame / title colour of a neighbour of the query's class.
RIGHT_COLOUR = "#2ca02c"


def tsne_scatter(
    points: ArrayLike,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    legend: bool = True,
    point_size: float = 12.0,
    ax: Axes | None = None,
) -> Axes:
    """A 2-D map (t-SNE or any other) with points coloured by class.

    Parameters
    ----------
    points
        ``(N, 2)`` coordinates, e.g. from :meth:`EmbeddingProbe.tsne`.
    labels
        ``(N,)`` integer classes (whole-number floats are accepted); ``None``
        draws every point in one colour.
    class_names
        Legend text per class index; default ``"class {index}"``.
    title
        Axes title.
    legend
        Draw a legend with one entry per class present.
    point_size
        Marker area in points squared.
    ax
        Axes to draw into; default: a new figure.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with one scatter collection per class (in class order).

    Examples
    --------
    >>> import numpy as np
    >>> ax = tsne_scatter(np.random.rand(30, 2), np.arange(30) % 3, ["a", "b", "c"])
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['a', 'b', 'c']
    """
    pts = as_numpy(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {pts.shape}")
    lab = None if labels is None else class_labels(labels)
    if lab is not None and len(lab) != len(pts):
        raise ValueError(f"got {len(lab)} labels for {len(pts)} points")
    classes = [] if lab is None else [int(c) for c in np.unique(lab)]
    names = [class_name(c, class_names) for c in classes]
    ax = new_axes(ax, (6, 5))
    if lab is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, alpha=0.8)
    else:
        cmap = colormaps["tab10" if max(classes, default=0) < 10 else "tab20"]
        for c, name in zip(classes, names, strict=True):
            mask = lab == c
            ax.scatter(
                pts[mask, 0],
                pts[mask, 1],
                s=point_size,
                color=cmap(c % cmap.N),
                label=name,
                alpha=0.8,
            )
        if legend:
            ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    hide_ticks(ax)
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title is not None:
        ax.set_title(title)
    return ax


def _frame(ax: Axes, colour: str, width: float) -> None:
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def neighbour_grid(
    query_images: ArrayLike,
    bank_images: ArrayLike,
    indices: ArrayLike,
    *,
    query_labels: ArrayLike | None = None,
    bank_labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    distances: ArrayLike | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Each query image followed by its nearest neighbours, one row per query.

    With labels, each neighbour is titled with its class and framed green
    when it matches the query's class, red (:data:`WRONG_COLOUR`) when not.

    Parameters
    ----------
    query_images
        ``(Q, C, H, W)`` images, or ``Q`` of anything :func:`~netlens.viz.to_image`
        reads; any range: each is min-max scaled for display
        (``to_image(normalize(image))``).
    bank_images
        ``(N, C, H, W)`` (or ``N`` images) the neighbours index into.
    indices
        ``(Q, k)`` neighbour rows into ``bank_images`` (from :meth:`EmbeddingProbe.knn`).
    query_labels, bank_labels
        Class labels, to title the images and mark wrong-class neighbours.
    class_names
        Name per class index.
    distances
        ``(Q, k)``, shown under each neighbour when given.
    fig
        Figure to draw into (cleared first); default: a new one.

    Returns
    -------
    matplotlib.figure.FigureBase
        ``Q * (k + 1)`` axes, row by row.

    Examples
    --------
    >>> import torch
    >>> bank = torch.rand(6, 1, 8, 8)
    >>> fig = neighbour_grid(bank[:2], bank, torch.tensor([[1, 2], [3, 4]]),
    ...                      query_labels=[0, 1], bank_labels=[0, 0, 1, 1, 0, 1])
    >>> len(fig.axes)
    6
    """
    queries, bank, idx = query_images, bank_images, as_numpy(indices)
    if idx.ndim != 2 or len(idx) != len(queries):
        raise ValueError(f"indices must be (Q, k) with Q = {len(queries)}, got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= len(bank)):
        raise ValueError(f"indices must lie in [0, {len(bank)}) (rows of bank_images)")
    q_lab = None if query_labels is None else class_labels(query_labels)
    b_lab = None if bank_labels is None else class_labels(bank_labels)
    dist = None if distances is None else as_numpy(distances)
    rows, k = idx.shape
    fig = new_figure(fig, (1.3 * (k + 1), 1.45 * rows + 0.3))
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for i in range(rows):
        ax = axes[i, 0]
        ax.imshow(to_image(normalize(queries[i])))
        hide_ticks(ax)
        _frame(ax, "black", 2.5)
        name = "" if q_lab is None else f": {class_name(int(q_lab[i]), class_names)}"
        ax.set_title(f"query{name}", fontsize=8, fontweight="bold")
        for j in range(k):
            n = int(idx[i, j])
            ax = axes[i, j + 1]
            ax.imshow(to_image(normalize(bank[n])))
            hide_ticks(ax)
            colour = "black"
            title = f"#{j + 1}"
            if b_lab is not None:
                title = class_name(int(b_lab[n]), class_names)
                if q_lab is not None:
                    colour = WRONG_COLOUR if b_lab[n] != q_lab[i] else RIGHT_COLOUR
                    _frame(ax, colour, 2.5 if colour == WRONG_COLOUR else 1.5)
            ax.set_title(title, fontsize=8, color=colour)
            if dist is not None:
                ax.set_xlabel(f"d = {float(dist[i, j]):.3g}", fontsize=7)
    return fig


def compare_tsne(
    points_a: ArrayLike,
    points_b: ArrayLike,
    labels: ArrayLike | None = None,
    titles: Sequence[str] = ("network A", "network B"),
    *,
    class_names: Sequence[str] | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Two 2-D maps of the same images side by side, coloured alike, one legend.

    Examples
    --------
    >>> import numpy as np
    >>> fig = compare_tsne(np.random.rand(20, 2), np.random.rand(20, 2), np.arange(20) % 2)
    >>> [ax.get_title() for ax in fig.axes]
    ['network A', 'network B']
    """
    if len(titles) != 2:
        raise ValueError(f"give two titles, got {len(titles)}")
    if len(points_a) != len(points_b):
        raise ValueError("both maps must hold the same images (same number of points)")
    fig = new_figure(fig, (11, 4.8))
    ax_a, ax_b = fig.subplots(1, 2)
    tsne_scatter(points_a, labels, class_names, title=titles[0], legend=False, ax=ax_a)
    tsne_scatter(points_b, labels, class_names, title=titles[1], legend=False, ax=ax_b)
    if labels is not None:
        handles, names = ax_a.get_legend_handles_labels()
        fig.legend(handles, names, title="class", loc="outside right center", fontsize=8)
    return fig
