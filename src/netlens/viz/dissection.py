"""The images where each dissected unit fires most, with its region and a concept outlined."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import FigureBase

from netlens.dissect.dataset import Dissection
from netlens.viz._common import as_numpy, new_figure
from netlens.viz.image import to_image

__all__ = ["unit_images"]

UNIT_COLOUR = "#ffd400"
CONCEPT_COLOUR = "#00e5ff"


def unit_images(
    dissection: Dissection,
    images: Any,
    masks: Mapping[str, Any] | None = None,
    *,
    units: Sequence[int] | None = None,
    concept: str | None = None,
    count: int = 4,
    examples: int | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    fig: FigureBase | None = None,
) -> FigureBase:
    """One row per unit: the images where it peaks highest, its region outlined.

    Each panel shows one of the unit's top images (:attr:`Dissection.top_images
    <netlens.dissect.Dissection.top_images>`), dimmed outside the unit's
    thresholded region, whose edge is drawn in yellow; with ``masks`` the
    concept's mask is outlined in cyan (the unit's own label, or ``concept``).
    The first panel of a row names the unit, its concept and the IoU over the
    whole dataset.

    Parameters
    ----------
    dissection
        The result of :func:`netlens.dissect.dissect`.
    images
        The dissected images, indexable by dataset position (``images[i]``
        is ``(C, H, W)``), in the same order.
    masks
        The dissection's masks, to outline the concept.
    units
        Units to show; by default the ``count`` best for ``concept``, or the
        ``count`` units with the highest IoU for any concept.
    concept
        The concept whose units to show and whose mask to outline.
    count
        Number of units when ``units`` is not given.
    examples
        Images per unit (at most those the dissection kept; default up to 5).
    mean, std
        A normalisation of ``images`` to undo for display (:func:`to_image`).
    fig
        A figure or subfigure to draw into (cleared first).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from netlens.dissect import dissect
    >>> x = torch.zeros(4, 3, 8, 8)
    >>> x[:, 0, :3] = 1.0  # a red band on top of every image
    >>> masks = {"band": x[:, 0] > 0}
    >>> found = dissect(nn.Sequential(nn.Identity()), "0", x, masks, quantile=0.375,
    ...                 progress=False)
    >>> fig = unit_images(found, x, masks, units=[0], examples=3)
    >>> len(fig.axes), fig.axes[0].get_title()
    (3, 'unit 0: band (IoU 1.00)\\nimage 0')
    """
    if concept is not None and concept not in dissection.concepts:
        raise KeyError(f"no concept {concept!r}; the concepts are {dissection.concepts}")
    if units is None:
        if concept is not None:
            units = [unit for unit, _ in dissection.top(concept, count)]
        else:
            units = [row["unit"] for row in dissection.rows(count)]
    units = [int(u) for u in units]
    for unit in units:
        if not 0 <= unit < dissection.units:
            raise IndexError(f"unit {unit} is out of range: the layer has {dissection.units} units")
    if not units:
        raise ValueError("no unit to show")
    kept = dissection.top_images.shape[1]
    shown = min(kept, 5) if examples is None else min(int(examples), kept)
    if shown < 1:
        raise ValueError(f"examples must be at least 1, not {examples}")
    fig = new_figure(fig, (1.9 * shown, 2.15 * len(units)))
    axes = fig.subplots(len(units), shown, squeeze=False)
    for row, unit in zip(axes, units, strict=True):
        name, iou = dissection.label(unit)
        outlined = concept if concept is not None else name
        if concept is not None:
            iou = float(dissection.iou[unit, dissection.concepts.index(concept)])
        for column, ax in enumerate(row):
            index = int(dissection.top_images[unit, column])
            picture = to_image(images[index], mean=mean, std=std)
            mask = None if masks is None else as_numpy(masks[outlined][index]).astype(bool)
            size = mask.shape if mask is not None else picture.shape[:2]
            if picture.shape[:2] != tuple(size):
                picture = _resize(picture, tuple(size))
            region = dissection.regions(unit, tuple(size))[column].numpy()
            ax.imshow(np.where(region[..., None], picture, 0.35 * picture))
            if region.any() and not region.all():
                ax.contour(region.astype(float), levels=[0.5], colors=UNIT_COLOUR, linewidths=1.2)
            if mask is not None and mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors=CONCEPT_COLOUR, linewidths=1)
            title = f"image {index}"
            if column == 0:
                title = f"unit {unit}: {outlined} (IoU {iou:.2f})\n{title}"
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    return fig


def _resize(picture: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An ``(H, W, 3)`` picture resized bilinearly to ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1)[None].float()
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)[0]
    return out.permute(1, 2, 0).clamp(0, 1).numpy()
