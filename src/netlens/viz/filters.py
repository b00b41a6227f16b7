"""The weights of a convolution, one tile per filter."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

from netlens.viz._common import new_axes
from netlens.viz.image import normalize

__all__ = ["filter_grid"]


def filter_grid(
    weight_or_layer: Tensor | nn.Conv2d,
    *,
    scale: Literal["layer", "filter"] = "layer",
    ncols: int | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Draw every filter of a convolution as one tile of a grid.

    A filter with 3 input channels (a first layer on RGB images) is shown in
    colour. Any other filter is shown in gray as the mean over its input
    channels: one tile per output channel, so a 512 x 512 layer stays a
    readable grid of 512 tiles rather than 262,144.

    Parameters
    ----------
    weight_or_layer
        An ``nn.Conv2d`` or its weight ``(out_channels, in_channels, kh, kw)``.
    scale
        ``"layer"``: one min-max over the whole layer, so tiles compare (gray
        is the same weight everywhere). ``"filter"``: each tile spans the full
        range, which shows the pattern of weak filters too.
    ncols
        Tiles per row; default about the square root of the filter count.
    ax
        Axes to draw on; a new figure's when omitted.

    Returns
    -------
    Axes
        One image: the tiles, upscaled without blur, separated by white lines.

    Examples
    --------
    >>> ax = filter_grid(nn.Conv2d(3, 8, 5), ncols=4)
    >>> ax.images[0].get_array().shape  # 2 rows x 4 tiles of 5 pixels, 1-pixel gaps
    (11, 23, 3)
    """
    weight = weight_or_layer.weight if isinstance(weight_or_layer, nn.Module) else weight_or_layer
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(
            "expected an nn.Conv2d or a weight of shape (out_channels, in_channels, kh, kw), "
            f"got {tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}"
        )
    if scale not in ("layer", "filter"):
        raise ValueError(f"scale must be 'layer' or 'filter', not {scale!r}")
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True)
    if scale == "layer":
        w = normalize(w)
    else:
        w = torch.stack([normalize(f) for f in w])
    tiles = w.permute(0, 2, 3, 1).expand(-1, -1, -1, 3).numpy()
    count, height, width = tiles.shape[:3]
    ncols = ncols or math.ceil(math.sqrt(count))
    nrows = math.ceil(count / ncols)
    mosaic = np.ones((nrows * (height + 1) - 1, ncols * (width + 1) - 1, 3))
    for i, tile in enumerate(tiles):
        top, left = (i // ncols) * (height + 1), (i % ncols) * (width + 1)
        mosaic[top : top + height, left : left + width] = tile
    ax = new_axes(ax, (5, 5))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    channels = weight.shape[1]
    kind = {3: "RGB", 1: "gray"}.get(channels, f"mean of {channels} input channels")
    ax.set_title(f"{count} filters {height}x{width}\n{kind}, scaled per {scale}")
    return ax
