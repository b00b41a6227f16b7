"""Attribution maps (CAM, Grad-CAM, saliency, ...) over the images they explain, or beside them.

Colours follow the values, unless ``cmap=`` names a colormap: a map with a
negative value is *signed* and is drawn with :data:`SIGNED_CMAP` centred at
zero (limits :math:`\\pm\\max|m|`, so white is 0, red positive, blue
negative); a map without one is drawn with :data:`NONNEGATIVE_CMAP` from its
minimum (black) to its maximum (pale yellow). The top of the scale sits at
the 99th percentile of the map (``clip=99``; of :math:`|m|` for a signed
map), so that a few extreme values, common in gradient maps, do not push
everything else to black; stronger values share the top colour. Over an
image, a pixel's opacity grows with the strength of the map there
(``alpha_mode="value"``): ``alpha`` times its position on the scale (of
:math:`|m|` on :math:`[0, \\max|m|]` for a signed map), so the image stays
visible where the map is weak and fine speckle keeps its contrast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import FigureBase
from torch import Tensor

from netlens.viz._common import ArrayLike, as_numpy, class_name, new_axes, new_figure
from netlens.viz.image import _heatmap_2d, to_image

__all__ = ["NONNEGATIVE_CMAP", "SIGNED_CMAP", "attribution_grid", "overlay"]

#: Colormap of maps with a negative value, centred at 0 (diverging).
SIGNED_CMAP = "RdBu_r"
#: Colormap of maps without a negative value (sequential, black to pale yellow).
NONNEGATIVE_CMAP = "inferno"

Mode = Literal["overlay", "heatmap", "image-heatmap-overlay"]
AlphaMode = Literal["value", "constant"]

_MODES = ("overlay", "heatmap", "image-heatmap-overlay")
_PANEL = 2.4  # inches: the width of one panel
_LINE = 0.3  # inches: one line of titles
_BAR = 0.6  # inches: the extra width of a panel with a colorbar


@dataclass(frozen=True)
class _Style:
    """How the maps of one method are coloured and laid over their image."""

    cmap: Colormap
    signed: bool
    alpha: float
    alpha_mode: str
    clip: float | None


def _style(
    signed: bool,
    cmap: str | Colormap | None,
    alpha: float | None,
    alpha_mode: str,
    clip: float | None,
) -> _Style:
    if alpha_mode not in ("value", "constant"):
        raise ValueError(f"alpha_mode must be 'value' or 'constant', not {alpha_mode!r}")
    if alpha is None:
        alpha = 0.8 if alpha_mode == "value" else 0.5
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha!r}")
    if cmap is None:
        cmap = SIGNED_CMAP if signed else NONNEGATIVE_CMAP
    if isinstance(cmap, str):
        if cmap not in colormaps:
            raise ValueError(f"unknown colormap {cmap!r}; see matplotlib.colormaps")
        cmap = colormaps[cmap]
    elif not isinstance(cmap, Colormap):
        raise TypeError(f"cmap must be a colormap name or a Colormap, not {type(cmap).__name__}")
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, Real) or not 0 < clip <= 100
    ):
        raise ValueError(f"clip must be a percentile in (0, 100] or None, not {clip!r}")
    return _Style(cmap, signed, float(alpha), alpha_mode, None if clip is None else float(clip))


def _as_maps(value: object, what: str) -> Tensor:
    """A float64 CPU tensor of ``value``, checked to be finite."""
    maps = torch.as_tensor(as_numpy(value)).to(torch.float64)
    if maps.numel() and not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{what} holds NaN or infinite values; there is nothing honest to draw")
    return maps


def _limits(heat: Tensor, signed: bool, clip: float | None) -> tuple[float, float, str]:
    """The raw values at the two ends of the colormap for one map, and which lie beyond.

    With ``clip`` the top end is that percentile of the values (of ``|m|`` for a
    signed map); where that leaves no range (a map that is mostly constant) the
    full range is kept. The third item is the colorbar's ``extend``.
    """
    values = heat.abs() if signed else heat
    top = float(values.max())
    if clip is not None and clip < 100:
        cut = float(np.quantile(values.numpy(), clip / 100.0))
        if cut > (0.0 if signed else float(heat.min())):
            top = cut
    above = bool((heat > top).any())
    below = signed and bool((heat < -top).any())
    extend = {(True, True): "both", (True, False): "max", (False, True): "min"}
    if signed:
        return -top, top, extend.get((above, below), "neither")
    return float(heat.min()), top, extend.get((above, below), "neither")


def _strength(heat: Tensor, low: float, high: float, signed: bool) -> np.ndarray:
    """How strong each value is, in [0, 1]: what the opacity follows."""
    if high <= low:
        return np.zeros(tuple(heat.shape))
    if signed:
        return (heat.abs() / high).clamp(0, 1).numpy()
    return ((heat - low) / (high - low)).clamp(0, 1).numpy()


def _draw_map(
    ax: Axes,
    picture: np.ndarray,
    heat: Tensor,
    style: _Style,
    *,
    over: bool,
    colorbar: bool,
) -> None:
    """One panel: ``heat`` ``(h, w)`` over ``picture`` (``over``) or alone, at its shape."""
    height, width = picture.shape[:2]
    low, high, extend = _limits(heat, style.signed, style.clip)
    constant = high <= low
    norm = Normalize(vmin=low, vmax=high if not constant else low + 1.0)
    if over:
        ax.imshow(picture)
        resized = F.interpolate(
            heat[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
        if constant:
            opacity: Any = 0.0
        elif style.alpha_mode == "value":
            opacity = style.alpha * _strength(resized, low, high, style.signed)
        else:
            opacity = style.alpha
        ax.imshow(resized.numpy(), cmap=style.cmap, norm=norm, alpha=opacity)
    else:
        ax.imshow(
            heat.numpy(),
            cmap=style.cmap,
            norm=norm,
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
            interpolation="nearest",
        )
    ax.set_axis_off()
    if constant:
        # No range to colour: say so rather than show a scale that means nothing.
        ax.text(
            0.5,
            0.5,
            f"constant {low:.3g}",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none"},
        )
    elif colorbar:
        figure = ax.get_figure()
        assert figure is not None
        figure.colorbar(
            ScalarMappable(norm=norm, cmap=style.cmap), ax=ax, fraction=0.08, extend=extend
        )


def overlay(
    image: Any,
    heatmap: ArrayLike,
    *,
    alpha: float | None = None,
    cmap: str | Colormap | None = None,
    alpha_mode: AlphaMode = "value",
    clip: float | None = 99.0,
    colorbar: bool = False,
    ax: Axes | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    title: str | None = None,
) -> Axes:
    """Draw a heatmap (CAM, Grad-CAM, saliency, a channel) over an image.

    The map is resized to the image (bilinear) and drawn as a second image
    layer over it, coloured by the rule of this module: a map with a negative
    value with :data:`SIGNED_CMAP` centred at 0, any other with
    :data:`NONNEGATIVE_CMAP` from its minimum to its ``clip`` percentile. A
    constant map has no range to colour: it is left transparent and labelled
    "constant" with its value.

    Parameters
    ----------
    image
        Anything :func:`to_image` accepts; ``mean`` / ``std`` undo the
        normalisation of a model-ready tensor.
    heatmap
        One raw map ``(h, w)`` (leading dimensions of size 1 are dropped).
    alpha
        Opacity of the map, in [0, 1]: at its strongest value with
        ``alpha_mode="value"`` (default 0.8), everywhere with
        ``alpha_mode="constant"`` (default 0.5).
    cmap
        A matplotlib colormap (name), instead of the rule above; a signed map
        stays centred at 0.
    alpha_mode
        ``"value"``: each pixel's opacity is ``alpha`` times the strength of
        the map there (its position on the colour scale, from 0 at the
        minimum to 1 at the top; :math:`|m|` over the top for a signed map),
        so weak regions leave the image visible. ``"constant"``:
        one opacity, ``(1 - alpha) * image + alpha * colour`` as in
        :func:`blend` (``cmap="jet", alpha_mode="constant"`` is the classic
        CAM picture, with ``clip=None``).
    clip
        Percentile of the map's values (of :math:`|m|` for a signed map) at
        which the colour scale tops out; stronger values share the top
        colour. ``None`` or 100: the maximum. Where the percentile leaves no
        range (a map zero almost everywhere) the maximum is used.
    colorbar
        Add a colorbar of the map's raw values (an arrow at an end when
        ``clip`` cut values off there).
    ax
        Axes to draw on; a new figure's when omitted.
    mean, std
        Undo the image's normalisation.
    title
        Title of the axes.

    Returns
    -------
    Axes
        With two images: ``ax.images[0]`` the picture ``(H, W, 3)``,
        ``ax.images[1]`` the resized map ``(H, W)`` with its colormap and
        limits (raw values).

    Examples
    --------
    >>> import torch
    >>> ax = overlay(torch.rand(3, 32, 32), torch.rand(4, 4), title="CAM")
    >>> ax.images[0].get_array().shape, ax.images[1].get_array().shape, ax.get_title()
    ((32, 32, 3), (32, 32), 'CAM')
    >>> ax.images[1].get_cmap().name
    'inferno'
    >>> overlay(torch.rand(3, 32, 32), torch.randn(32, 32)).images[1].get_cmap().name
    'RdBu_r'
    """
    picture = to_image(image, mean=mean, std=std)
    heat = _as_maps(_heatmap_2d(heatmap), "the heatmap")
    style = _style(bool((heat < 0).any()), cmap, alpha, alpha_mode, clip)
    ax = new_axes(ax, (5, 5))
    _draw_map(ax, picture, heat, style, over=True, colorbar=colorbar)
    if title is not None:
        ax.set_title(title)
    return ax


def attribution_grid(
    images: Tensor | Sequence[Any],
    maps: Mapping[str, ArrayLike] | ArrayLike,
    *,
    titles: Sequence[str] | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    alpha: float | None = None,
    cmap: str | Colormap | None = None,
    alpha_mode: AlphaMode = "value",
    clip: float | None = 99.0,
    mode: Mode = "overlay",
    ncols: int | None = None,
    colorbar: bool = False,
    targets: ArrayLike | int | None = None,
    class_names: Sequence[str] | None = None,
    scores: ArrayLike | None = None,
    show_image: bool = True,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Compare attribution maps: per image, the image, then each method's maps.

    Each image gets one block of panels in a row: the image (``show_image``),
    then for every method (and, for maps ``(N, K, h, w)``, every one of the
    ``K`` classes) one panel, or two in ``"image-heatmap-overlay"`` mode. By
    default blocks are stacked, one per row; ``ncols`` puts that many blocks
    side by side, so 10 images with ``ncols=5`` make a grid of 2 rows. The
    figure is sized to the grid and to the images' aspect ratio.

    Every map is resized to its image and scaled on its own. Colours follow
    the rule of :mod:`netlens.viz.attribution`, decided per method: if any map
    of a method has a negative value, all its maps are drawn as signed
    (:data:`SIGNED_CMAP`, centred at 0), else with :data:`NONNEGATIVE_CMAP`;
    ``cmap`` overrides the colormap.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` tensor or a sequence of images (see :func:`to_image`).
    maps
        ``{method name: maps}``, e.g. ``{"CAM": cam(x), "Grad-CAM": gc(x)}``, or
        one method's maps alone (its panels are then untitled by method).
        Maps are ``(N, h, w)``, one per image, or ``(N, K, h, w)``, ``K`` per
        image (a method called with ``K`` targets per image); every method
        must have the same ``K``. Raw values: the figure scales them.
    titles
        One label per image, shown over its image panel (or over its block's
        first panel when ``show_image=False``).
    mean, std
        Undo the images' normalisation.
    alpha, alpha_mode, cmap, clip
        How a map is coloured and laid over its image: see :func:`overlay`.
    mode
        ``"overlay"``: each map over its image. ``"heatmap"``: each map alone
        in colour, at its own resolution (nothing interpolated). ``"image-
        heatmap-overlay"``: both, the map alone then over its image.
    ncols
        Image blocks per row (default 1).
    colorbar
        Add a colorbar of raw values to every map panel (to the heatmap panel
        only in ``"image-heatmap-overlay"`` mode). Each map is scaled on its
        own, so each bar belongs to its panel and shows that map's raw
        values: from its minimum to its ``clip`` percentile (from minus to
        plus that percentile of :math:`|m|` for a signed map), with an arrow
        where values were cut off. A constant map has no bar, only its value
        written on the panel.
    targets
        The class of each map, to title panels with: an int (every map), one
        class per image ``(N,)`` for maps ``(N, h, w)``, or ``(N, K)`` for
        maps ``(N, K, h, w)`` (``(K,)``: the same ``K`` classes for every
        image), e.g. the targets the method was called with.
    class_names
        Names of the classes, indexed by ``targets`` (``"class i"`` without).
    scores
        Numbers to write after the class (e.g. probabilities), of the shape of
        ``targets``.
    show_image
        Draw the image itself in the first panel of each block. ``False`` in
        ``"overlay"`` mode gives a grid of overlays only.
    fig
        Figure or subfigure to draw on (it is cleared); a new figure when
        omitted.

    Returns
    -------
    FigureBase
        The figure: its axes are the panels, block after block, row by row,
        then the colorbars.

    Raises
    ------
    ValueError
        Maps of the wrong shape or count, NaN or infinite values, differing
        ``K``, targets, titles or scores of the wrong shape, an unknown mode.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16)
    >>> fig = attribution_grid(x, {"A": torch.rand(2, 4, 4), "B": torch.rand(2, 16, 16)})
    >>> len(fig.axes), [ax.get_title() for ax in fig.axes[:3]]
    (6, ['image', 'A', 'B'])

    Three classes of one image in one row, titled by class and probability:

    >>> fig = attribution_grid(
    ...     x[:1], {"Grad-CAM": torch.rand(1, 3, 4, 4)}, targets=[2, 0, 1],
    ...     class_names=["cat", "dog", "car"], scores=[[0.5, 0.3, 0.1]],
    ... )
    >>> [ax.get_title() for ax in fig.axes]
    ['image', 'Grad-CAM\\ncar 0.50', 'Grad-CAM\\ncat 0.30', 'Grad-CAM\\ndog 0.10']

    Ten images in two rows of five, each map beside and over its image:

    >>> fig = attribution_grid(
    ...     torch.rand(10, 3, 8, 8), torch.rand(10, 8, 8), ncols=5,
    ...     mode="image-heatmap-overlay", colorbar=True,
    ... )
    >>> width, height = fig.get_size_inches()
    >>> len(fig.axes), bool(width > height)
    (40, True)
    """
    pictures = [to_image(img, mean=mean, std=std) for img in images]
    count = len(pictures)
    if not count:
        raise ValueError("no images given")
    entries = _entries(maps, count)
    classes = next(iter(entries.values())).shape[1]
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, not {mode!r}")
    if not show_image and mode == "image-heatmap-overlay":
        raise ValueError("mode 'image-heatmap-overlay' shows the image; use show_image=True")
    if titles is not None and len(titles) != count:
        raise ValueError(f"{len(titles)} titles for {count} images")
    if class_names is not None and targets is None:
        raise ValueError("class_names name the targets: pass targets= too")
    labels = None if targets is None else _per_map(targets, count, classes, "targets", True)
    values = None if scores is None else _per_map(scores, count, classes, "scores", False)
    if labels is not None:
        for n, k in np.ndindex(labels.shape):
            class_name(int(labels[n, k]), class_names)  # every label must have a name
    styles = {
        name: _style(bool((value < 0).any()), cmap, alpha, alpha_mode, clip)
        for name, value in entries.items()
    }
    parts = ("heatmap", "overlay") if mode == "image-heatmap-overlay" else (mode,)
    if ncols is None:
        across = 1
    elif isinstance(ncols, Integral) and not isinstance(ncols, bool) and ncols >= 1:
        across = min(int(ncols), count)
    else:
        raise ValueError(f"ncols must be a positive int, not {ncols!r}")
    down = math.ceil(count / across)
    block = int(show_image) + len(entries) * classes * len(parts)
    bars = 0 if not colorbar else len(entries) * classes
    lines = labels is not None or values is not None or (titles is not None and not show_image)
    aspect = min(max(pictures[0].shape[0] / pictures[0].shape[1], 0.5), 2.0)
    fig = new_figure(
        fig,
        (
            across * (block * _PANEL + bars * _BAR),
            down * (_PANEL * aspect + (_LINE if lines else 0.0)) + _LINE,
        ),
    )
    axes = fig.subplots(down, across * block, squeeze=False)
    for n, picture in enumerate(pictures):
        row, start = divmod(n, across)
        panels = iter(axes[row, start * block : (start + 1) * block])
        first_line = [str(titles[n])] if titles is not None and not show_image else []
        if show_image:
            ax = next(panels)
            ax.imshow(picture)
            ax.set_axis_off()
            if titles is not None:
                ax.set_title(str(titles[n]))
            elif row == 0:
                ax.set_title("image")
        for name, value in entries.items():
            for k in range(classes):
                label = []
                if labels is not None:
                    label.append(class_name(int(labels[n, k]), class_names))
                if values is not None:
                    label.append(f"{float(values[n, k]):.2f}")
                for part in parts:
                    ax = next(panels)
                    _draw_map(
                        ax,
                        picture,
                        value[n, k],
                        styles[name],
                        over=part == "overlay",
                        colorbar=colorbar and (part == "heatmap" or len(parts) == 1),
                    )
                    header = " ".join(
                        word
                        for word in (name, part if len(parts) > 1 else None)
                        if word is not None
                    )
                    text = [*first_line]
                    if row == 0 and header:
                        text.append(header)
                    if label:
                        text.append(" ".join(label))
                    first_line = []
                    if text:
                        ax.set_title("\n".join(text))
    for ax in axes.flat[count * block :]:  # the rest of a last, shorter row
        ax.remove()
    return fig


def _entries(maps: object, count: int) -> dict[str | None, Tensor]:
    """``{method name (None for one unnamed method): (N, K, h, w) float64 maps}``."""
    given: dict[str | None, object]
    if isinstance(maps, Mapping):
        if not maps:
            raise ValueError("no maps given; pass {method name: (N, h, w) tensor}")
        given = {str(name): value for name, value in maps.items()}
    else:
        given = {None: maps}
    entries: dict[str | None, Tensor] = {}
    for name, value in given.items():
        what = "maps" if name is None else f"maps['{name}']"
        shape = tuple(getattr(value, "shape", np.shape(value)))
        if len(shape) not in (3, 4) or shape[0] != count:
            raise ValueError(
                f"{what} has shape {shape}; expected ({count}, h, w), one map per image, or "
                f"({count}, K, h, w), K maps per image"
            )
        tensor = _as_maps(value, what)
        entries[name] = tensor[:, None] if tensor.dim() == 3 else tensor
    ks = {name: tensor.shape[1] for name, tensor in entries.items()}
    if len(set(ks.values())) != 1:
        raise ValueError(f"every method must have the same number K of maps per image: {ks}")
    return entries


def _per_map(given: object, count: int, classes: int, what: str, integral: bool) -> np.ndarray:
    """``targets`` or ``scores`` as an ``(N, K)`` array, one entry per map."""
    array = np.asarray(as_numpy(given))
    if integral and not (
        np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.bool_)
    ):
        raise TypeError(f"{what} must be integer class indices, not {array.dtype}")
    if not integral and not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{what} must be numbers, not {array.dtype}")
    if array.ndim == 0 and integral:
        return np.full((count, classes), array.item())
    if array.ndim == 1 and classes == 1 and len(array) == count:
        return array[:, None]
    if array.ndim == 1 and classes > 1 and len(array) == classes:
        return np.tile(array, (count, 1))
    if array.ndim == 2 and array.shape == (count, classes):
        return array
    expected = f"({count},)" if classes == 1 else f"({count}, {classes}) or ({classes},)"
    raise ValueError(f"{what} has shape {array.shape}; the maps need one entry per map: {expected}")
