"""Feature maps of one layer: one panel per image and channel."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import FigureBase
from torch import Tensor

from netlens._checks import check_feature_maps
from netlens.viz._common import as_numpy, hide_ticks, new_figure
from netlens.viz.image import normalize

__all__ = ["activation_grid"]


def _indices(pick: int | Sequence[int], total: int, what: str) -> list[int]:
    chosen = list(range(min(pick, total))) if isinstance(pick, int) else [int(i) for i in pick]
    bad = [i for i in chosen if not 0 <= i < total]
    if bad or not chosen:
        raise IndexError(f"{what} {bad or chosen} out of range: there are {total}")
    return chosen


def activation_grid(
    features: Tensor,
    *,
    channels: int | Sequence[int] = 8,
    images: int | Sequence[int] = 4,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Show feature maps: one row per image, one column per channel.

    Each panel is min-max normalised on its own (a dead channel is black) and
    the top row is titled by channel index.

    Parameters
    ----------
    features
        ``(N, C, H, W)`` or ``(C, H, W)`` activations of one layer.
    channels
        The first ``k`` channels, or a sequence of channel indices.
    images
        The first ``n`` images of the batch, or a sequence of indices.
    fig
        Figure or subfigure to draw on (it is cleared); a new figure when
        omitted.

    Examples
    --------
    >>> import torch
    >>> fig = activation_grid(torch.rand(2, 16, 6, 6), channels=[0, 5, 9])
    >>> len(fig.axes), fig.axes[1].get_title()
    (6, 'ch 5')
    """
    features = check_feature_maps(features)
    chans = _indices(channels, features.shape[1], "channels")
    rows = _indices(images, features.shape[0], "images")
    fig = new_figure(fig, (1.6 * len(chans), 1.6 * len(rows) + 0.3))
    axes = fig.subplots(len(rows), len(chans), squeeze=False)
    for r, n in enumerate(rows):
        for c, ch in enumerate(chans):
            ax = axes[r, c]
            ax.imshow(as_numpy(normalize(features[n, ch].float())), cmap="viridis", vmin=0, vmax=1)
            hide_ticks(ax)
            if r == 0:
                ax.set_title(f"ch {ch}")
            if c == 0:
                ax.set_ylabel(f"image {n}")
    return fig
