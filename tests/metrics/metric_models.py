"""Models whose faithful maps are known, shared by the metric tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Linear(nn.Module):
    """Two logits: ``w . x`` for class 0 and 0 for class 1, so ``p_0`` rises with ``w . x``."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())

    def forward(self, x: Tensor) -> Tensor:
        score = (x * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], 1)


class Halves(nn.Module):
    """Class 0's logit reads only the left half of the image, class 1's only the right half.

    Each logit is the mean of ``relu(x - 0.5)`` over its half, times 12: bright
    pixels count, and a blurred or imputed (smoother) half scores lower.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(12.0))

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[-1] // 2
        left = torch.relu(x[..., :half] - 0.5).flatten(1).mean(1)
        right = torch.relu(x[..., half:] - 0.5).flatten(1).mean(1)
        return self.scale * torch.stack([left, right], 1)


def half_maps(n: int, size: int, *, left: bool, seed: int = 0) -> Tensor:
    """Maps ``(n, size, size)`` that rank every pixel of one half above the other half."""
    generator = torch.Generator().manual_seed(seed)
    maps = 0.1 * torch.rand(n, size, size, generator=generator)
    half = size // 2
    if left:
        maps[..., :half] += 1
    else:
        maps[..., half:] += 1
    return maps


class FullResolution(nn.Module):
    """A CNN without downsampling: its last feature map has the input's size (no resizing)."""

    def __init__(self, channels: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def full_resolution(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return FullResolution().eval()
