"""The weights of a convolution, one tile per filter (or per filter and input channel)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from netlens.viz._common import new_axes, pick_indices
from netlens.viz.image import normalize

__all__ = ["filter_grid"]


def filter_grid(
    weight_or_layer: Tensor | nn.Conv2d,
    *,
    scale: Literal["layer", "filter"] = "layer",
    ncols: int | None = None,
    in_channels: Literal["mean"] | int | Sequence[int] | None = None,
    rgb: bool = False,
    ax: Axes | None = None,
) -> Axes:
    """Draw every filter of a convolution as one tile (or one group of tiles) of a grid.

    By default a filter with 3 input channels (a first layer on RGB images)
    is shown in colour, and any other in gray as the mean over its input
    channels: one tile per output channel, so a 512 x 512 layer stays a
    readable grid of 512 tiles rather than 262,144. ``in_channels`` chooses
    input channels to show instead: each filter becomes a group of gray tiles,
    one per chosen input channel, side by side; with ``rgb=True`` three chosen
    input channels become the red, green and blue of one colour tile per
    filter.

    Parameters
    ----------
    weight_or_layer
        An ``nn.Conv2d`` or its weight ``(out_channels, in_channels, kh, kw)``
        (for a grouped convolution the second dimension counts the input
        channels of one group, and ``in_channels`` indexes it).
    scale
        ``"layer"``: one min-max over everything shown, so tiles compare (gray
        is the same weight everywhere). ``"filter"``: each filter's tiles
        share one min-max spanning the full range, which shows the pattern of
        weak filters too.
    ncols
        Filters (tiles, or groups of tiles) per row; default about the square
        root of the filter count, or for groups of ``k`` tiles of the filter
        count over ``k``, so the grid stays roughly square.
    in_channels
        ``None``: the default above. ``"mean"``: the gray mean over all input
        channels, for any layer (a first layer too). An int ``k``: the first
        ``k`` input channels; a sequence: those input channels, in that order.
    rgb
        Draw the three input channels chosen by ``in_channels`` (exactly three)
        as one colour tile per filter, in the order red, green, blue.
    ax
        Axes to draw on; a new figure's when omitted.

    Returns
    -------
    Axes
        One image: the tiles, upscaled without blur, separated by white lines
        of 1 pixel (3 pixels between the groups of different filters).

    Raises
    ------
    IndexError
        An input channel out of range.
    ValueError
        A weight that is not 4-D, an unknown ``scale`` or ``in_channels``, or
        ``rgb=True`` without exactly three chosen input channels.

    Examples
    --------
    >>> ax = filter_grid(nn.Conv2d(3, 8, 5), ncols=4)
    >>> ax.images[0].get_array().shape  # 2 rows x 4 tiles of 5 pixels, 1-pixel gaps
    (11, 23, 3)
    >>> ax = filter_grid(nn.Conv2d(16, 4, 3), in_channels=[0, 7], ncols=2)
    >>> ax.images[0].get_array().shape  # 2 rows x 2 filters x 2 tiles, 3-pixel group gaps
    (7, 17, 3)
    >>> filter_grid(nn.Conv2d(16, 4, 3), in_channels=[2, 0, 5], rgb=True).get_title()
    '4 filters 3x3\\ninput channels 2, 0, 5 as RGB, scaled per layer'
    """
    weight = weight_or_layer.weight if isinstance(weight_or_layer, nn.Module) else weight_or_layer
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(
            "expected an nn.Conv2d or a weight of shape (out_channels, in_channels, kh, kw), "
            f"got {tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}"
        )
    if scale not in ("layer", "filter"):
        raise ValueError(f"scale must be 'layer' or 'filter', not {scale!r}")
    if not isinstance(rgb, bool):
        raise TypeError(f"rgb must be True or False, not {rgb!r}")
    w = weight.detach().float().cpu()
    channels = w.shape[1]
    if isinstance(in_channels, str):
        if in_channels != "mean":
            raise ValueError(f"in_channels must be 'mean', an int or indices, not {in_channels!r}")
        if rgb:
            raise ValueError("rgb=True needs three chosen input channels, not 'mean'")
        w = w.mean(1, keepdim=True)[:, None]
        kind = f"mean of {channels} input channels"
    elif in_channels is None:
        if rgb and channels != 3:
            raise ValueError(
                f"rgb=True needs three chosen input channels; the filters have {channels}: "
                "pass in_channels=[r, g, b]"
            )
        if channels != 3:
            w = w.mean(1, keepdim=True)
        w = w[:, None]
        kind = {3: "RGB", 1: "gray"}.get(channels, f"mean of {channels} input channels")
    else:
        chosen = pick_indices(in_channels, channels, "in_channels")
        listed = _listing(chosen)
        if rgb:
            if len(chosen) != 3:
                raise ValueError(
                    f"rgb=True needs exactly three input channels, got {len(chosen)}: {chosen}"
                )
            w = w[:, chosen][:, None]
            kind = f"input channels {listed} as RGB"
        else:
            w = w[:, chosen, None]  # (out, k, 1, kh, kw): k gray tiles per filter
            kind = f"input channel {listed}" if len(chosen) == 1 else f"input channels {listed}"
    # w: (filters, tiles per filter, 1 or 3, kh, kw)
    if scale == "layer":
        w = normalize(w)
    else:
        w = torch.stack([normalize(f) for f in w])
    tiles = w.permute(0, 1, 3, 4, 2).expand(-1, -1, -1, -1, 3).numpy()
    count, group, height, width = tiles.shape[:4]
    if ncols is None:
        ncols = math.ceil(math.sqrt(count / group))
    elif isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, not {ncols!r}")
    mosaic = _mosaic(tiles, ncols)
    ax = new_axes(ax, (5, 5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{count} filters {height}x{width}\n{kind}, scaled per {scale}")
    return ax


def _listing(chosen: list[int]) -> str:
    if len(chosen) <= 6:
        return ", ".join(map(str, chosen))
    return f"{', '.join(map(str, chosen[:3]))}, ..., {chosen[-1]} ({len(chosen)})"


def _mosaic(tiles: np.ndarray, ncols: int) -> np.ndarray:
    """``(count, group, h, w, 3)`` tiles on white: groups ``ncols`` per row, 1 or 3 px apart."""
    count, group, height, width = tiles.shape[:4]
    between = 1 if group == 1 else 3  # white between groups; 1 pixel between a group's tiles
    group_width = group * (width + 1) - 1
    nrows = math.ceil(count / ncols)
    mosaic = np.ones((nrows * (height + 1) - 1, ncols * (group_width + between) - between, 3))
    for i in range(count):
        top = (i // ncols) * (height + 1)
        start = (i % ncols) * (group_width + between)
        for j in range(group):
            left = start + j * (width + 1)
            mosaic[top : top + height, left : left + width] = tiles[i, j]
    return mosaic
