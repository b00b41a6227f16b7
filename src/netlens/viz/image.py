"""Pictures from tensors: an image in [0, 1], a map scaled for display, a heatmap blended in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch import Tensor

from netlens.viz._common import ArrayLike, as_numpy

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "blend", "normalize", "to_image"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TOLERANCE = 1e-3


def to_image(
    img: Any,
    *,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """Convert a tensor, array or PIL image to an ``(H, W, 3)`` float array in [0, 1].

    Parameters
    ----------
    img
        ``(C, H, W)`` / ``(1, C, H, W)`` tensor, ``(H, W, C)`` or ``(H, W)``
        array (uint8 or float), or a PIL image.
    mean, std
        Per-channel (or scalar) mean and standard deviation of a
        normalisation to undo, e.g. :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`.

    Notes
    -----
    Every function of :mod:`netlens.viz` that takes an image reads it with
    these rules:

    * a PIL image is read as RGB;
    * a 2-D array or tensor is one grayscale ``(H, W)`` image;
    * a 3-D array or tensor is ``(C, H, W)`` when only its first dimension
      could be channels (1 or 3), ``(H, W, C)`` when only its last could (1,
      3, or 4 with alpha, which is dropped); when both or neither could, it is
      ambiguous and raises ``ValueError``;
    * a 4-D tensor must hold one image ``(1, C, H, W)``;
    * ``uint8`` values are divided by 255; float values must lie in [0, 1]
      unless ``mean`` / ``std`` undo a normalisation first (the result is
      then clipped). For an image of any range, scale it first:
      ``to_image(normalize(x))``.

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
        array = img.detach()
        if array.dim() == 4:
            if array.shape[0] != 1:
                raise ValueError(
                    f"got a batch of {array.shape[0]} images; pass one image, e.g. x[0]"
                )
            array = array[0]
        array = as_numpy(array)
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


def _heatmap_2d(heatmap: ArrayLike) -> Tensor:
    heat = torch.as_tensor(as_numpy(heatmap), dtype=torch.float32)
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
