"""Which units of a layer fire on a given image region.

Network dissection (Bau et al., 2017, "Network Dissection: Quantifying
Interpretability of Deep Visual Representations") scores a unit against a
concept mask by thresholding the unit's upsampled activation and taking the
intersection over union (IoU) of the two regions. Here the concept is one
region of one image that you draw yourself (a sky, a face, a digit's stroke).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from netlens._repr import ShortRepr

_CHUNK = 32  # channels upsampled at once: bounds memory for large masks


@dataclass(repr=False)
class RegionUnits(ShortRepr):
    """Units ranked by how well their strongest activations cover a region.

    Attributes
    ----------
    units : Tensor
        ``(k,)`` channel indices, best first.
    iou : Tensor
        ``(k,)`` intersection over union with the mask, descending.
    thresholds : Tensor
        ``(k,)`` each unit's activation threshold (its own quantile).
    masks : Tensor
        ``(k, H, W)`` bool: where each unit's upsampled activation exceeds its
        threshold, at the mask's resolution.
    quantile : float
        The quantile the thresholds were taken at.

    Examples
    --------
    >>> import torch
    >>> mask = torch.zeros(8, 8, dtype=torch.bool)
    >>> mask[:4] = True  # the top half of the image
    >>> features = torch.rand(3, 4, 4)
    >>> features[2, :2] = 10.0  # unit 2 fires on the top half
    >>> found = units_for_region(features, mask, top=1)
    >>> found.units.tolist(), round(float(found.iou[0]), 2)
    ([2], 1.0)
    """

    units: Tensor
    iou: Tensor
    thresholds: Tensor
    masks: Tensor
    quantile: float


def units_for_region(
    features: Tensor,
    mask: Tensor | np.ndarray,
    *,
    quantile: float | None = None,
    top: int = 10,
) -> RegionUnits:
    """Rank the units (channels) of a feature map by IoU with an image region.

    Each channel is upsampled bilinearly to the mask's size, thresholded at its
    own ``quantile`` (pixels at or above it form the unit's region) and
    compared with the mask by IoU. A constant channel has no region (IoU 0).

    Parameters
    ----------
    features
        ``(1, C, h, w)`` or ``(C, h, w)``: one image's activations.
    mask
        ``(H, W)`` boolean region at image resolution.
    quantile
        Bau et al. threshold at the top 0.5 % of a unit's activations over a
        whole dataset (``0.995``). On one image that leaves a few pixels, far
        fewer than most regions, so the default ``None`` uses
        ``1 - mask.mean()``: each unit's region then has the mask's area and a
        unit that fires exactly on the region reaches IoU 1.
    top
        How many units to return (all if larger than ``C``).

    Returns
    -------
    RegionUnits

    Examples
    --------
    >>> feats = torch.zeros(4, 8, 8)
    >>> feats[2, :4] = 1.0  # channel 2 fires on the top half
    >>> mask = torch.zeros(32, 32, dtype=torch.bool)
    >>> mask[:16] = True
    >>> found = units_for_region(feats, mask, top=2)
    >>> found.units.tolist(), round(found.iou[0].item(), 2)
    ([2, 0], 1.0)
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, not {type(features).__name__}")
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError(
                f"features hold {features.shape[0]} images; pass one, e.g. features[i:i + 1]"
            )
        features = features[0]
    if features.dim() != 3:
        raise ValueError(
            f"features must be (1, C, h, w) or (C, h, w), got shape {tuple(features.shape)}"
        )
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if mask.dim() != 2:
        raise ValueError(f"mask must be (H, W), got shape {tuple(mask.shape)}")
    mask = mask.to(device=features.device, dtype=torch.bool)
    area = mask.float().mean().item()
    if area == 0.0:
        raise ValueError("the mask is empty; mark the region with True")
    if quantile is None:
        quantile = 1.0 - area
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), not {quantile}")
    if top < 1:
        raise ValueError(f"top must be at least 1, not {top}")

    size = tuple(mask.shape)
    pixels = mask.numel()
    rank = min(pixels, max(1, math.floor(quantile * pixels) + 1))
    ious, thresholds = [], []
    for start in range(0, features.shape[0], _CHUNK):
        up = _upsample(features[start : start + _CHUNK], size).flatten(1)
        threshold = up.kthvalue(rank, dim=1).values
        region = (up >= threshold[:, None]) & (up.amax(1) > up.amin(1))[:, None]
        inter = (region & mask.flatten()).sum(1).float()
        union = (region | mask.flatten()).sum(1).float()
        ious.append(inter / union)
        thresholds.append(threshold)
    iou = torch.cat(ious)
    threshold = torch.cat(thresholds)
    order = torch.sort(iou, descending=True, stable=True).indices[:top]
    up = _upsample(features[order], size)
    varies = (up.flatten(1).amax(1) > up.flatten(1).amin(1))[:, None, None]
    return RegionUnits(
        units=order,
        iou=iou[order],
        thresholds=threshold[order],
        masks=(up >= threshold[order][:, None, None]) & varies,
        quantile=quantile,
    )


def _upsample(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    return F.interpolate(maps[None].float(), size=size, mode="bilinear", align_corners=False)[0]
