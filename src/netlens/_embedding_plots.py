"""Plots of embeddings: t-SNE scatter, nearest-neighbour grid, two networks side by side.

Every function takes plain arrays or tensors (what :class:`netlens.embedding.EmbeddingProbe`
returns) and draws with matplotlib; nothing here computes features.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

ArrayLike = np.ndarray | Tensor | Sequence[float]

#: Frame / title colour of a neighbour whose class differs from the query's.
WRONG_COLOUR = "#d62728"
#: Frame / title colour of a neighbour of the query's class.
RIGHT_COLOUR = "#2ca02c"


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is None:
        return str(label)
    if not 0 <= label < len(class_names):
        raise ValueError(f"label {label} has no entry in the {len(class_names)} class_names")
    return str(class_names[label])


def tsne_scatter(
    points: ArrayLike,
    labels: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    legend: bool = True,
    point_size: float = 12.0,
) -> Axes:
    """A 2-D map (t-SNE or any other) with points coloured by class.

    Parameters
    ----------
    points
        ``(N, 2)`` coordinates, e.g. from :meth:`EmbeddingProbe.tsne`.
    labels
        ``(N,)`` integer classes; ``None`` draws every point in one colour.
    class_names
        Legend text per class index; default: the index itself.
    ax
        Axes to draw into; default: a new figure.
    title
        Axes title.
    legend
        Draw a legend with one entry per class present.
    point_size
        Marker area in points squared.

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
    pts = _numpy(points)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must be (N, 2), got shape {pts.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 5), layout="constrained")
    if labels is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=point_size, alpha=0.8)
    else:
        lab = _numpy(labels).astype(int).reshape(-1)
        if len(lab) != len(pts):
            raise ValueError(f"got {len(lab)} labels for {len(pts)} points")
        classes = np.unique(lab)
        cmap = plt.get_cmap("tab10" if classes.max(initial=0) < 10 else "tab20")
        for c in classes:
            mask = lab == c
            ax.scatter(
                pts[mask, 0],
                pts[mask, 1],
                s=point_size,
                color=cmap(int(c) % cmap.N),
                label=_class_name(int(c), class_names),
                alpha=0.8,
            )
        if legend:
            ax.legend(title="class", loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title is not None:
        ax.set_title(title)
    return ax


def _display(image: ArrayLike) -> tuple[np.ndarray, str | None]:
    """A (C, H, W) or (H, W) image as something imshow shows faithfully, min-max scaled."""
    img = _numpy(image).astype(np.float32)
    if img.ndim == 3:
        img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] != 3):
        raise ValueError(f"cannot show an image of shape {_numpy(image).shape}; use (C, H, W)")
    low, high = float(img.min()), float(img.max())
    img = (img - low) / (high - low) if high > low else np.zeros_like(img)
    return img, ("gray" if img.ndim == 2 else None)


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
    fig: Figure | None = None,
) -> Figure:
    """Each query image followed by its nearest neighbours, one row per query.

    With labels, each neighbour is titled with its class and framed green
    when it matches the query's class, red (:data:`WRONG_COLOUR`) when not.

    Parameters
    ----------
    query_images
        ``(Q, C, H, W)`` images (any range: each is min-max scaled for display).
    bank_images
        ``(N, C, H, W)`` the images the neighbours index into.
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
    matplotlib.figure.Figure
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
    queries, bank, idx = _numpy(query_images), _numpy(bank_images), _numpy(indices)
    if idx.ndim != 2 or len(idx) != len(queries):
        raise ValueError(f"indices must be (Q, k) with Q = {len(queries)}, got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= len(bank)):
        raise ValueError(f"indices must lie in [0, {len(bank)}) (rows of bank_images)")
    q_lab = None if query_labels is None else _numpy(query_labels).astype(int).reshape(-1)
    b_lab = None if bank_labels is None else _numpy(bank_labels).astype(int).reshape(-1)
    dist = None if distances is None else _numpy(distances)
    rows, k = idx.shape
    if fig is None:
        fig = plt.figure(figsize=(1.3 * (k + 1), 1.45 * rows + 0.3), layout="constrained")
    else:
        fig.clear()
    axes = fig.subplots(rows, k + 1, squeeze=False)
    for i in range(rows):
        img, cmap = _display(queries[i])
        ax = axes[i, 0]
        ax.imshow(img, cmap=cmap)
        ax.set_xticks([])
        ax.set_yticks([])
        _frame(ax, "black", 2.5)
        name = "" if q_lab is None else f": {_class_name(int(q_lab[i]), class_names)}"
        ax.set_title(f"query{name}", fontsize=8, fontweight="bold")
        for j in range(k):
            n = int(idx[i, j])
            img, cmap = _display(bank[n])
            ax = axes[i, j + 1]
            ax.imshow(img, cmap=cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "black"
            title = f"#{j + 1}"
            if b_lab is not None:
                title = _class_name(int(b_lab[n]), class_names)
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
    fig: Figure | None = None,
) -> Figure:
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
    if len(_numpy(points_a)) != len(_numpy(points_b)):
        raise ValueError("both maps must hold the same images (same number of points)")
    if fig is None:
        fig = plt.figure(figsize=(11, 4.8), layout="constrained")
    else:
        fig.clear()
    ax_a, ax_b = fig.subplots(1, 2)
    tsne_scatter(points_a, labels, class_names, ax_a, title=titles[0], legend=False)
    tsne_scatter(points_b, labels, class_names, ax_b, title=titles[1], legend=False)
    if labels is not None:
        handles, names = ax_a.get_legend_handles_labels()
        fig.legend(handles, names, title="class", loc="outside right center", fontsize=8)
    return fig
