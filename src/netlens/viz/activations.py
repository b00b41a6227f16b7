"""Feature maps of one layer or of several: one panel per image and channel."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from matplotlib.figure import FigureBase
from torch import Tensor

from netlens._checks import check_feature_maps
from netlens.viz._common import as_numpy, hide_ticks, new_figure, pick_indices
from netlens.viz.image import normalize

__all__ = ["activation_grid"]

_PANEL = 1.6  # inches per panel
_LABEL = 0.45  # inches above a layer's block for its name


def activation_grid(
    features: Tensor | Mapping[str, Tensor],
    *,
    channels: int | Sequence[int] | Mapping[str, int | Sequence[int]] = 8,
    images: int | Sequence[int] = 4,
    layers_per_row: int | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Show feature maps: one row per image, one column per channel.

    Each panel is min-max normalised on its own (a dead channel is black) and
    the top row is titled by channel index. Given several layers (a dict such
    as :class:`netlens.FeatureExtractor` returns), each layer becomes one
    block of that kind, labelled with its name and the shape of one image's
    maps, and the blocks share one figure.

    Parameters
    ----------
    features
        ``(N, C, H, W)`` or ``(C, H, W)`` activations of one layer, or a dict
        ``{layer name: (N, C, H, W) activations}`` (every layer of the same
        ``N`` images).
    channels
        The first ``k`` channels (fewer when a layer has fewer), or a sequence
        of channel indices (valid in every layer). With a dict of layers, also
        a dict ``{layer name: int or indices}`` naming every layer.
    images
        The first ``n`` images of the batch, or a sequence of indices; the
        same images in every block.
    layers_per_row
        Blocks side by side, for a dict of layers; by default about the square
        root of the number of layers (2 x 2 blocks for 4 layers). Blocks fill
        rows left to right, in the dict's order.
    fig
        Figure or subfigure to draw on (it is cleared); a new figure when
        omitted. Each layer's block is a subfigure of it (``fig.subfigs``),
        titled with its name; its axes are in the block, and in
        ``fig.figure.axes`` (all axes of the whole figure).

    Raises
    ------
    IndexError
        A channel or image index out of range (of any layer).
    ValueError
        An empty dict, layers with different batch sizes, or a ``channels``
        dict that does not name every layer.

    Examples
    --------
    >>> import torch
    >>> fig = activation_grid(torch.rand(2, 16, 6, 6), channels=[0, 5, 9])
    >>> len(fig.axes), fig.axes[1].get_title()
    (6, 'ch 5')
    >>> layers = {"conv1": torch.rand(3, 8, 8, 8), "pool1": torch.rand(3, 8, 4, 4)}
    >>> fig = activation_grid(layers, channels=5, images=3)
    >>> [block.get_suptitle() for block in fig.subfigs]
    ['conv1  (8, 8, 8)', 'pool1  (8, 4, 4)']
    >>> len(fig.axes), len(fig.subfigs[1].axes)
    (30, 15)
    """
    if isinstance(features, Mapping):
        return _layer_blocks(features, channels, images, layers_per_row, fig)
    if isinstance(channels, Mapping):
        raise TypeError("channels may be a dict only when features is a dict of layers")
    if layers_per_row is not None:
        raise TypeError("layers_per_row applies to a dict of layers, not to one tensor")
    features = check_feature_maps(features)
    chans = pick_indices(channels, features.shape[1], "channels")
    rows = pick_indices(images, features.shape[0], "images")
    fig = new_figure(fig, (_PANEL * len(chans), _PANEL * len(rows) + 0.3))
    _draw_block(fig, features, chans, rows)
    return fig


def _draw_block(fig: FigureBase, features: Tensor, chans: list[int], rows: list[int]) -> None:
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


def _layer_blocks(
    features: Mapping[str, Tensor],
    channels: int | Sequence[int] | Mapping[str, int | Sequence[int]],
    images: int | Sequence[int],
    layers_per_row: int | None,
    fig: FigureBase | None,
) -> FigureBase:
    if not features:
        raise ValueError("no layers given; pass {layer name: (N, C, H, W) tensor}")
    layers = {str(name): check_feature_maps(value) for name, value in features.items()}
    sizes = {name: value.shape[0] for name, value in layers.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every layer must hold the same images; batch sizes are {sizes}")
    if isinstance(channels, Mapping):
        missing = sorted(set(layers) - {str(name) for name in channels})
        extra = sorted({str(name) for name in channels} - set(layers))
        if missing or extra:
            raise ValueError(
                f"the channels dict must name every layer: missing {missing}, unknown {extra}"
            )
        wanted = {str(name): pick for name, pick in channels.items()}
    else:
        wanted = dict.fromkeys(layers, channels)
    picked = {
        name: pick_indices(wanted[name], value.shape[1], f"channels of '{name}'")
        for name, value in layers.items()
    }
    rows = pick_indices(images, next(iter(sizes.values())), "images")
    if layers_per_row is None:
        across = math.ceil(math.sqrt(len(layers)))
    elif isinstance(layers_per_row, int) and not isinstance(layers_per_row, bool):
        if layers_per_row < 1:
            raise ValueError(f"layers_per_row must be at least 1, not {layers_per_row}")
        across = min(layers_per_row, len(layers))
    else:
        raise TypeError(f"layers_per_row must be an int, not {layers_per_row!r}")
    down = math.ceil(len(layers) / across)
    widest = max(len(chans) for chans in picked.values())
    fig = new_figure(fig, (across * _PANEL * widest, down * (_PANEL * len(rows) + _LABEL)))
    blocks = fig.subfigures(down, across, squeeze=False)
    for i, (name, value) in enumerate(layers.items()):
        block = blocks[i // across, i % across]
        _draw_block(block, value, picked[name], rows)
        block.suptitle(f"{name}  {tuple(value.shape[1:])}")
    for block in blocks.flat[len(layers) :]:
        block.set_visible(False)
    return fig
