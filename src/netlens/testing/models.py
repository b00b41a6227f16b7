"""A small model every built-in attribution method applies to."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["tiny_cnn"]


def tiny_cnn(in_channels: int = 3, num_classes: int = 5, *, seed: int = 0) -> nn.Sequential:
    """A small seeded CNN in eval mode that every built-in attribution method applies to.

    ``features`` (conv, BatchNorm, ReLU, strided conv, ReLU), then global
    average pooling (``pool``), ``flatten`` and a linear classifier (``fc``):
    the logits are one linear map of the global average of ``features``, so
    CAM applies, and the BatchNorm layer makes a forward pass in train mode
    visible in its running statistics.

    Parameters
    ----------
    in_channels
        Channels of the input images.
    num_classes
        Number of logits.
    seed
        Seed of the random weights (and of the BatchNorm statistics).

    Examples
    --------
    >>> import torch
    >>> model = tiny_cnn()
    >>> model(torch.randn(2, 3, 16, 16)).shape, model.training
    (torch.Size([2, 5]), False)
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        model = nn.Sequential(
            OrderedDict(
                features=features,
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(16, num_classes),
            )
        )
    batch_norm = features[1]
    with torch.no_grad():
        # Statistics of a trained network rather than the identity, so eval and
        # train mode give different outputs.
        batch_norm.running_mean.copy_(0.1 * torch.randn(8, generator=generator))
        batch_norm.running_var.copy_(1 + 0.5 * torch.rand(8, generator=generator))
        batch_norm.weight.copy_(1 + 0.1 * torch.randn(8, generator=generator))
        batch_norm.bias.copy_(0.1 * torch.randn(8, generator=generator))
    return model.eval()
