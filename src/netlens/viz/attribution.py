"""Attribution maps (CAM, Grad-CAM, saliency, ...) over the images they explain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from torch import Tensor

from netlens.viz._common import ArrayLike, new_axes, new_figure
from netlens.viz.image import blend, to_image

__all__ = ["attribution_grid", "overlay"]


def overlay(
    image: Any,
    heatmap: ArrayLike,
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    ax: Axes | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    title: str | None = None,
) -> Axes:
    """Draw a heatmap (CAM, Grad-CAM, saliency, a channel) over an image.

    See :func:`blend` for the mixing and :func:`to_image` for accepted images;
    ``mean`` / ``std`` undo the normalisation of a model-ready tensor.

    Examples
    --------
    >>> import torch
    >>> ax = overlay(torch.rand(3, 32, 32), torch.rand(4, 4), title="CAM")
    >>> ax.images[0].get_array().shape, ax.get_title()
    ((32, 32, 3), 'CAM')
    """
    picture = to_image(image, mean=mean, std=std)
    ax = new_axes(ax, (5, 5))
    ax.imshow(blend(picture, heatmap, alpha, cmap))
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def attribution_grid(
    images: Tensor | Sequence[Any],
    maps: Mapping[str, ArrayLike],
    *,
    titles: Sequence[str] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    fig: FigureBase | None = None,
) -> FigureBase:
    """Compare attribution methods: rows are images, columns image | method 1 | ...

    Parameters
    ----------
    images
        ``(N, C, H, W)`` tensor or a sequence of images (see :func:`to_image`).
    maps
        ``{method name: (N, h, w) maps}``, e.g. ``{"CAM": cam(x), "Grad-CAM": gc(x)}``;
        each map is resized to its image and normalised on its own.
    titles
        One label per image (e.g. the target class), shown over the image column.
    mean, std
        Undo the images' normalisation.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16)
    >>> fig = attribution_grid(x, {"A": torch.rand(2, 4, 4), "B": torch.rand(2, 16, 16)})
    >>> len(fig.axes), [ax.get_title() for ax in fig.axes[:3]]
    (6, ['image', 'A', 'B'])
    """
    pictures = [to_image(img, mean=mean, std=std) for img in images]
    if not pictures:
        raise ValueError("no images given")
    if not maps:
        raise ValueError("no maps given; pass {method name: (N, h, w) tensor}")
    for name, value in maps.items():
        shape = tuple(value.shape)
        if len(shape) != 3 or shape[0] != len(pictures):
            raise ValueError(
                f"maps['{name}'] has shape {shape}; expected ({len(pictures)}, h, w), one map "
                "per image"
            )
    if titles is not None and len(titles) != len(pictures):
        raise ValueError(f"{len(titles)} titles for {len(pictures)} images")
    cols = 1 + len(maps)
    fig = new_figure(fig, (2.4 * cols, 2.4 * len(pictures) + 0.3))
    axes = fig.subplots(len(pictures), cols, squeeze=False)
    for r, picture in enumerate(pictures):
        axes[r, 0].imshow(picture)
        label = "image" if titles is None else str(titles[r])
        if r == 0 or titles is not None:
            axes[r, 0].set_title(label)
        for c, (name, value) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(blend(picture, value[r], alpha, cmap))
            if r == 0:
                axes[r, c].set_title(name)
        for ax in axes[r]:
            ax.set_axis_off()
    return fig
