"""Many channels of feature maps reduced to few: a mean, a max, or three principal components.

A layer's output has hundreds of channels; a person can look at one map or
three (as the red, green and blue of a picture). :func:`reduce_channels`
computes that reduction on the tensors :class:`netlens.FeatureExtractor`
returns; :mod:`netlens.viz` draws the result.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens._checks import check_feature_maps

__all__ = ["reduce_channels"]


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
        deterministic. With fewer than 3 channels the missing components are
        0, and so is a component that is constant over the batch.

    Returns
    -------
    Tensor
        ``(N, H, W)`` for ``"mean"`` / ``"max"``, ``(N, H, W, 3)`` for
        ``"pca"``, on the device of ``features``, in its floating dtype.

    Examples
    --------
    >>> import torch
    >>> reduce_channels(torch.rand(2, 8, 5, 5), "max").shape
    torch.Size([2, 5, 5])
    >>> rgb = reduce_channels(torch.rand(2, 8, 5, 5), "pca")
    >>> rgb.shape, bool(rgb.min() >= 0), bool(rgb.max() <= 1)
    (torch.Size([2, 5, 5, 3]), True, True)
    """
    features = check_feature_maps(features)
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
    low, span = projected.amin(0), projected.amax(0) - projected.amin(0)
    rgb = torch.where(span > 0, (projected - low) / torch.where(span > 0, span, 1.0), 0.0)
    return rgb.reshape(n, h, w, 3).to(
        features.dtype if features.is_floating_point() else torch.float
    )
