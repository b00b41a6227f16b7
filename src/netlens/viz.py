"""Pictures of what a CNN sees: filters, activation maps, overlays, top-k bars.

Every function draws with matplotlib on the ``ax`` (or ``fig``) it is given,
or on a new pyplot figure (so ``plt.show()`` shows it; close it with
``plt.close(fig)`` when drawing many), and returns it. Nothing here computes attributions: pass the
tensors that :class:`netlens.FeatureExtractor`, CAM, Grad-CAM or saliency
returned. Maps are min-max normalised for display only.

Image layout rules of :func:`to_image` (used by every function taking an image):

* a PIL image is read as RGB;
* a 2-D array or tensor is one grayscale ``(H, W)`` image;
* a 3-D array or tensor is ``(C, H, W)`` when only its first dimension could
  be channels (1 or 3), ``(H, W, C)`` when only its last could (1, 3, or 4
  with alpha, which is dropped); when both or neither could, it is ambiguous
  and raises ``ValueError``;
* a 4-D tensor must hold one image ``(1, C, H, W)``;
* ``uint8`` values are divided by 255; float values must lie in [0, 1] unless
  ``mean`` / ``std`` undo a normalisation first (the result is then clipped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import FigureBase
from torch import Tensor, nn

# Embedding plots live beside EmbeddingProbe's code; users find them here.
from netlens._embedding_plots import compare_tsne as compare_tsne
from netlens._embedding_plots import neighbour_grid as neighbour_grid
from netlens._embedding_plots import tsne_scatter as tsne_scatter
from netlens.dissect import RegionUnits

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArrayLike = Tensor | np.ndarray
_TOLERANCE = 1e-3


def to_image(
    img: Any,
    *,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """Convert a tensor, array or PIL image to an ``(H, W, 3)`` float array in [0, 1].

    See the module notes for how the layout (CHW or HWC) is decided.

    Parameters
    ----------
    img
        ``(C, H, W)`` / ``(1, C, H, W)`` tensor, ``(H, W, C)`` or ``(H, W)``
        array (uint8 or float), or a PIL image.
    mean, std
        Per-channel (or scalar) mean and standard deviation of a
        normalisation to undo, e.g. :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`.

    Examples
    --------
    >>> to_image(torch.rand(3, 4, 5)).shape
    (4, 5, 3)
    >>> to_image(np.full((2, 2), 255, dtype=np.uint8))[0, 0]
    array([1., 1., 1.])
    >>> mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    >>> x = (torch.full((2, 2, 3), 0.5) - mean) / std  # normalised, then made CHW
    >>> to_image(x.permute(2, 0, 1), mean=IMAGENET_MEAN, std=IMAGENET_STD).round(3)[0, 0]
    array([0.5, 0.5, 0.5])
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std to undo a normalisation, or neither")
    if hasattr(img, "convert") and hasattr(img, "size") and not isinstance(img, np.ndarray):
        img = np.asarray(img.convert("RGB"))
    if isinstance(img, Tensor):
        array = img.detach().cpu()
        if array.dim() == 4:
            if array.shape[0] != 1:
                raise ValueError(
                    f"got a batch of {array.shape[0]} images; pass one image, e.g. x[0]"
                )
            array = array[0]
        array = array.numpy() if array.dtype != torch.bfloat16 else array.float().numpy()
    elif isinstance(img, np.ndarray):
        array = img
    else:
        raise TypeError(
            f"expected a torch.Tensor, numpy array or PIL image, not {type(img).__name__}"
        )
    hwc = _as_hwc(array)
    if hwc.dtype == np.uint8:
        out = hwc.astype(np.float64) / 255.0
    elif np.issubdtype(hwc.dtype, np.floating) or hwc.dtype == np.bool_:
        out = hwc.astype(np.float64)
    else:
        raise TypeError(f"expected uint8 or float pixels, not {hwc.dtype}")
    if mean is not None:
        out = out * _per_channel(std, out.shape[2]) + _per_channel(mean, out.shape[2])
        out = np.clip(out, 0.0, 1.0)
    elif out.size and (out.min() < -_TOLERANCE or out.max() > 1 + _TOLERANCE):
        raise ValueError(
            f"float pixel values span [{out.min():.3g}, {out.max():.3g}], outside [0, 1]; "
            "pass mean= and std= to undo a normalisation, or divide 0-255 values by 255"
        )
    out = np.clip(out, 0.0, 1.0)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out


def _as_hwc(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(
            f"expected an image of shape (C, H, W), (H, W, C) or (H, W), got {array.shape}"
        )
    first = array.shape[0] in (1, 3)
    last = array.shape[2] in (1, 3, 4)
    if first and not last:
        return np.transpose(array, (1, 2, 0))
    if last and not first:
        return array[:, :, :3] if array.shape[2] == 4 else array
    raise ValueError(
        f"cannot tell the channel dimension of shape {array.shape}: "
        + ("both the first and the last" if first else "neither the first nor the last")
        + " dimension could hold 1 or 3 channels; pass (C, H, W) or (H, W, C) with H and W "
        "not in (1, 3)"
    )


def _per_channel(value: Sequence[float] | float | None, channels: int) -> np.ndarray:
    vector = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if vector.size not in (1, channels):
        raise ValueError(
            f"mean/std have {vector.size} values for an image with {channels} channels"
        )
    return vector.reshape(1, 1, -1)


def normalize(map: ArrayLike) -> ArrayLike:
    """Min-max scale an array or tensor to [0, 1] over all its entries.

    A constant map (no range) becomes all zeros, never NaN. The type (tensor or
    array) is kept; for a batch, normalise each map separately if each should
    span [0, 1].

    Examples
    --------
    >>> normalize(torch.tensor([2.0, 4.0, 6.0]))
    tensor([0.0000, 0.5000, 1.0000])
    >>> normalize(np.full(3, 7.0))
    array([0., 0., 0.])
    """
    if isinstance(map, Tensor):
        values = map.detach().float() if not map.is_floating_point() else map.detach()
        low, high = values.min(), values.max()
        span = high - low
        return torch.where(span > 0, (values - low) / torch.where(span > 0, span, 1), 0.0)
    values = np.asarray(map, dtype=np.float64)
    low, high = values.min(), values.max()
    if high > low:
        return (values - low) / (high - low)
    return np.zeros_like(values)


def _new_ax(ax: Axes | None, figsize: tuple[float, float] = (5, 5)) -> Axes:
    if ax is not None:
        return ax
    return plt.subplots(figsize=figsize)[1]


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


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
    ax = _new_ax(ax)
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    channels = weight.shape[1]
    kind = {3: "RGB", 1: "gray"}.get(channels, f"mean of {channels} input channels")
    ax.set_title(f"{count} filters {height}x{width}\n{kind}, scaled per {scale}")
    return ax


def _as_batch(features: Tensor) -> Tensor:
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, not {type(features).__name__}")
    if features.dim() == 3:
        features = features[None]
    if features.dim() != 4:
        raise ValueError(
            f"features must be (N, C, H, W) or (C, H, W), got shape {tuple(features.shape)}"
        )
    return features.detach()


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
    >>> fig = activation_grid(torch.rand(2, 16, 6, 6), channels=[0, 5, 9])
    >>> len(fig.axes), fig.axes[1].get_title()
    (6, 'ch 5')
    """
    features = _as_batch(features)
    chans = _indices(channels, features.shape[1], "channels")
    rows = _indices(images, features.shape[0], "images")
    if fig is None:
        fig = plt.figure(figsize=(1.6 * len(chans), 1.6 * len(rows) + 0.3), layout="constrained")
    else:
        fig.clear()
    axes = np.atleast_2d(fig.subplots(len(rows), len(chans), squeeze=False))
    for r, n in enumerate(rows):
        for c, ch in enumerate(chans):
            ax = axes[r, c]
            ax.imshow(_numpy(normalize(features[n, ch].float())), cmap="viridis", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"ch {ch}")
            if c == 0:
                ax.set_ylabel(f"image {n}")
    return fig


def reduce_channels(features: Tensor, method: Literal["mean", "max", "pca"] = "mean") -> Tensor:
    """Reduce the channels of feature maps to something one can look at.

    Parameters
    ----------
    features
        ``(N, C, H, W)`` or ``(C, H, W)``.
    method
        ``"mean"`` or ``"max"`` over channels: raw values ``(N, H, W)``.
        ``"pca"``: the three leading principal components of the channel
        vectors of all pixels of all images (one basis for the batch, so
        colours mean the same in every image), each min-max scaled to [0, 1]
        over the batch: an RGB picture ``(N, H, W, 3)``. Each component's sign
        is fixed so its largest loading is positive, so the result is
        deterministic. With fewer than 3 channels the missing components are 0.

    Examples
    --------
    >>> reduce_channels(torch.rand(2, 8, 5, 5), "max").shape
    torch.Size([2, 5, 5])
    >>> rgb = reduce_channels(torch.rand(2, 8, 5, 5), "pca")
    >>> rgb.shape, bool(rgb.min() >= 0), bool(rgb.max() <= 1)
    (torch.Size([2, 5, 5, 3]), True, True)
    """
    features = _as_batch(features)
    if method == "mean":
        return features.mean(1)
    if method == "max":
        return features.amax(1)
    if method != "pca":
        raise ValueError(f"method must be 'mean', 'max' or 'pca', not {method!r}")
    n, c, h, w = features.shape
    x = features.double().permute(0, 2, 3, 1).reshape(-1, c)
    x = x - x.mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x)
    basis = vectors.flip(1)[:, :3]
    signs = torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
    basis = basis * torch.where(signs == 0, 1.0, signs)
    projected = x @ basis
    if projected.shape[1] < 3:
        projected = F.pad(projected, (0, 3 - projected.shape[1]))
    rgb = torch.stack([normalize(projected[:, k]) for k in range(3)], dim=1)
    return rgb.reshape(n, h, w, 3).to(
        features.dtype if features.is_floating_point() else torch.float
    )


def _heatmap_2d(heatmap: ArrayLike) -> Tensor:
    heat = torch.as_tensor(_numpy(heatmap), dtype=torch.float32)
    while heat.dim() > 2 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.dim() != 2:
        raise ValueError(
            f"expected one heatmap (h, w), (1, h, w) or (1, 1, h, w), got {tuple(heat.shape)}"
        )
    return heat


def blend(
    image: Any,
    heatmap: ArrayLike,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> np.ndarray:
    """Colour a heatmap and mix it into an image: ``(1 - alpha) * image + alpha * colour``.

    The heatmap is resized to the image with bilinear interpolation and
    min-max normalised before colouring.

    Parameters
    ----------
    image
        Anything :func:`to_image` accepts; for a normalised tensor, undo the
        normalisation first with ``to_image(x, mean=..., std=...)``.
    heatmap
        ``(h, w)`` map (leading dimensions of size 1 are dropped).
    alpha
        Weight of the heatmap, in [0, 1]; 0 returns the image itself.
    cmap
        A matplotlib colormap name.

    Returns
    -------
    np.ndarray
        ``(H, W, 3)`` floats in [0, 1].

    Examples
    --------
    >>> out = blend(torch.zeros(3, 8, 8), torch.rand(2, 2), alpha=1.0)
    >>> out.shape, bool(out.max() <= 1.0)
    ((8, 8, 3), True)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], not {alpha}")
    picture = to_image(image)
    heat = _heatmap_2d(heatmap)
    resized = F.interpolate(
        heat[None, None], size=picture.shape[:2], mode="bilinear", align_corners=False
    )[0, 0]
    coloured = colormaps[cmap](normalize(resized).numpy())[..., :3]
    return (1.0 - alpha) * picture + alpha * coloured


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
    >>> ax = overlay(torch.rand(3, 32, 32), torch.rand(4, 4), title="CAM")
    >>> ax.images[0].get_array().shape, ax.get_title()
    ((32, 32, 3), 'CAM')
    """
    picture = to_image(image, mean=mean, std=std)
    ax = _new_ax(ax)
    ax.imshow(blend(picture, heatmap, alpha, cmap))
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    return ax


def _scores(logits: ArrayLike, name: str) -> np.ndarray:
    values = _numpy(logits).astype(np.float64)
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be (C,) or (1, C) scores of one image, got {values.shape}")
    return values


def _class_name(index: int, class_names: Sequence[str] | None) -> str:
    if class_names is None:
        return f"class {index}"
    return str(class_names[index])


def topk_bars(
    logits: ArrayLike,
    class_names: Sequence[str] | None = None,
    k: int = 5,
    ax: Axes | None = None,
    *,
    xlabel: str = "score",
) -> Axes:
    """Horizontal bars of the ``k`` highest scores of one image, best on top.

    Pass logits or probabilities (``logits.softmax(-1)``); the values are
    drawn as given and written at the end of each bar.

    Examples
    --------
    >>> ax = topk_bars(torch.tensor([0.1, 2.0, 0.5, 1.0]), ["a", "b", "c", "d"], k=2)
    >>> [t.get_text() for t in ax.get_yticklabels()]
    ['b', 'd']
    """
    scores = _scores(logits, "logits")
    if class_names is not None and len(class_names) != len(scores):
        raise ValueError(f"{len(class_names)} class names for {len(scores)} scores")
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    order = np.argsort(-scores, kind="stable")[:k]
    ax = _new_ax(ax, figsize=(5, 0.5 * len(order) + 1))
    positions = np.arange(len(order))
    bars = ax.barh(positions, scores[order], color="tab:blue")
    ax.set_yticks(positions, [_class_name(int(i), class_names) for i in order])
    ax.invert_yaxis()
    ax.bar_label(bars, fmt="%.3g", padding=3)
    ax.set_xlabel(xlabel)
    ax.set_title(f"top {len(order)}")
    ax.margins(x=0.2)
    return ax


def ablation_comparison(
    logits_before: ArrayLike,
    logits_after: ArrayLike,
    class_names: Sequence[str] | None = None,
    k: int = 5,
    *,
    fig: FigureBase | None = None,
) -> FigureBase:
    """Top-``k`` bars before and after an ablation, side by side on one scale.

    Each panel ranks its own top ``k``, so a class that rises into the top
    ``k`` after the ablation appears on the right only.

    Examples
    --------
    >>> fig = ablation_comparison(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.5, 1.0, 2.0]), k=2)
    >>> [ax.get_title() for ax in fig.axes]
    ['before ablation (top 2)', 'after ablation (top 2)']
    """
    before, after = _scores(logits_before, "logits_before"), _scores(logits_after, "logits_after")
    if before.shape != after.shape:
        raise ValueError(f"before and after hold {before.shape} and {after.shape} scores")
    if fig is None:
        fig = plt.figure(figsize=(10, 0.5 * k + 1.2), layout="constrained")
    else:
        fig.clear()
    left, right = fig.subplots(1, 2, sharex=True)
    for ax, values, when in ((left, before, "before"), (right, after, "after")):
        topk_bars(values, class_names, k, ax, xlabel="score")
        ax.set_title(f"{when} ablation (top {min(k, len(values))})")
    return fig


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
    if fig is None:
        fig = plt.figure(figsize=(2.4 * cols, 2.4 * len(pictures) + 0.3), layout="constrained")
    else:
        fig.clear()
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
    if fig is None:
        fig = plt.figure(figsize=(2.6 * (shown + 1), 2.9), layout="constrained")
    else:
        fig.clear()
    axes = fig.subplots(1, shown + 1, squeeze=False)[0]
    axes[0].imshow(picture)
    if mask is not None:
        axes[0].contour(_numpy(mask).astype(float), levels=[0.5], colors="yellow", linewidths=2)
    axes[0].set_title("region")
    for ax, unit, iou, region in zip(axes[1:], found.units, found.iou, found.masks, strict=False):
        keep = _numpy(region).astype(bool)[..., None]
        ax.imshow(np.where(keep, picture, 0.25 * picture))
        if mask is not None:
            ax.contour(_numpy(mask).astype(float), levels=[0.5], colors="yellow", linewidths=1)
        ax.set_title(f"unit {int(unit)}  IoU {float(iou):.2f}")
    for ax in axes:
        ax.set_axis_off()
    return fig
