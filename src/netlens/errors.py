"""Every public exception of netlens, under one base class.

Catch :class:`NetlensError` to handle anything netlens refuses; each subclass
also derives from the built-in exception its meaning matches (``ValueError``
for a bad argument, ``RuntimeError`` for a pass that went wrong), so code
written against those keeps working.
"""

from __future__ import annotations

__all__ = [
    "CAMNotApplicableError",
    "CorruptFeaturesError",
    "GraphCutError",
    "GuidedRuleError",
    "ImageFileError",
    "InputFileError",
    "LayerNotFoundError",
    "LayerNotReachedError",
    "NetlensError",
    "NotFittedError",
    "OutputError",
    "RepeatedCallError",
    "StateDictError",
    "UndefinedMapError",
    "ZeroScoreError",
    "WeightsUnavailableError",
]


class NetlensError(Exception):
    """Base class of every exception netlens raises on purpose.

    Examples
    --------
    >>> import torch.nn as nn
    >>> from netlens.layers import resolve_layer
    >>> try:
    ...     resolve_layer(nn.Sequential(nn.ReLU()), "relu")
    ... except NetlensError as error:
    ...     print(type(error).__name__, isinstance(error, ValueError))
    LayerNotFoundError True
    """


class LayerNotFoundError(NetlensError, ValueError):
    """The model has no such layer (the message lists close matches)."""


class LayerNotReachedError(NetlensError, RuntimeError):
    """A hooked module did not run during the forward pass.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from netlens import FeatureExtractor
    >>> class Skips(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv, self.unused = nn.Conv2d(3, 2, 1), nn.ReLU()
    ...     def forward(self, x):
    ...         return self.conv(x)  # self.unused never runs
    >>> try:
    ...     FeatureExtractor(Skips(), ["unused"])(torch.randn(1, 3, 4, 4))
    ... except LayerNotReachedError as error:
    ...     print(type(error).__name__)
    LayerNotReachedError
    """


class RepeatedCallError(NetlensError, RuntimeError):
    """A hooked module ran more than once in one forward pass and no call was chosen.

    Name the call, ``"layer:k"`` for the ``k``-th one, to read it.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from netlens import FeatureExtractor
    >>> class Twice(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.act = nn.ReLU()
    ...     def forward(self, x):
    ...         return self.act(self.act(x) - 1)
    >>> try:
    ...     FeatureExtractor(Twice(), ["act"])(torch.randn(1, 3, 2, 2))
    ... except RepeatedCallError as error:
    ...     print(type(error).__name__)
    RepeatedCallError
    >>> second = FeatureExtractor(Twice(), ["act:1"])(torch.ones(1, 3, 2, 2))["act:1"]
    >>> second.shape, float(second.max())  # relu(relu(1) - 1)
    (torch.Size([1, 3, 2, 2]), 0.0)
    """


class GraphCutError(NetlensError, RuntimeError):
    """The gradient a method needs does not exist: the autograd graph is cut."""


class GuidedRuleError(NetlensError, RuntimeError):
    """A ReLU that cannot take guided backpropagation's rule (named in the message)."""


class OutputError(NetlensError, TypeError):
    """The model's output cannot be read as logits (pass ``output=``)."""


class CAMNotApplicableError(NetlensError, ValueError):
    """The model's logits are not a linear map of the layer's global average."""


class UndefinedMapError(NetlensError, ValueError):
    """The method's formula is undefined at this input (a zero denominator, a tie)."""


class ZeroScoreError(UndefinedMapError, ZeroDivisionError):
    """Ablation-CAM's class score is exactly 0, so its weights (a division by it) do not exist."""


class NotFittedError(NetlensError, RuntimeError):
    """An embedding probe was used before :meth:`~netlens.EmbeddingProbe.fit`."""


class WeightsUnavailableError(NetlensError, RuntimeError):
    """Pretrained weights cannot be had (no download possible, no file given)."""


class CorruptFeaturesError(NetlensError, RuntimeError):
    """A feature folder does not match its manifest (a missing, truncated or changed shard)."""


class InputFileError(NetlensError, ValueError):
    """A file given to netlens cannot be used."""


class ImageFileError(InputFileError):
    """An image file cannot be read."""


class StateDictError(InputFileError):
    """A weights file is not a state dict this model accepts."""
