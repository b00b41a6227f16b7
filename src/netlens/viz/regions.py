"""The units whose maps match a region of an image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import FigureBase

from netlens.dissect import RegionUnits
from netlens.viz._common import ArrayLike, as_numpy, new_figure
from netlens.viz.image import to_image

__all__ = ["region_units"]


def region_units(
    image: Any,
    found: RegionUnits,
    *,
    mask: ArrayLike | None = None,
    count: int = 4,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Show the units that best match a region (from :func:`netlens.dissect.units_for_region`).

    The first panel is the image with the region outlined (when ``mask`` is
    given); then one panel per unit, the image dimmed outside the unit's
    thresholded region, titled with the unit index and its IoU.

    Examples
    --------
    >>> import torch
    >>> from netlens.dissect import units_for_region
    >>> feats = torch.rand(6, 4, 4)
    >>> mask = torch.zeros(16, 16, dtype=torch.bool)
    >>> mask[:8] = True
    >>> found = units_for_region(feats, mask, top=3)
    >>> fig = region_units(torch.rand(3, 16, 16), found, mask=mask)
    >>> len(fig.axes), fig.axes[0].get_title()
    (4, 'region')
    """
    picture = to_image(image, mean=mean, std=std)
    shown = min(count, len(found.units))
    if tuple(found.masks.shape[1:]) != picture.shape[:2]:
        raise ValueError(
            f"the unit regions are {tuple(found.masks.shape[1:])} but the image is "
            f"{picture.shape[:2]}; use a mask the size of the image"
        )
    fig = new_figure(fig, (2.6 * (shown + 1), 2.9))
    axes = fig.subplots(1, shown + 1, squeeze=False)[0]
    axes[0].imshow(picture)
    if mask is not None:
        axes[0].contour(as_numpy(mask).astype(float), levels=[0.5], colors="yellow", linewidths=2)
    axes[0].set_title("region")
    for ax, unit, iou, region in zip(axes[1:], found.units, found.iou, found.masks, strict=False):
        keep = as_numpy(region).astype(bool)[..., None]
        ax.imshow(np.where(keep, picture, 0.25 * picture))
        if mask is not None:
            ax.contour(as_numpy(mask).astype(float), levels=[0.5], colors="yellow", linewidths=1)
        ax.set_title(f"unit {int(unit)}  IoU {float(iou):.2f}")
    for ax in axes:
        ax.set_axis_off()
    return fig
