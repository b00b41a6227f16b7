"""scikit-learn's handwritten digits, ready for a small CNN, with no download.

The digits (1,797 images of 8x8 pixels, 10 classes) come with scikit-learn
itself, so tests, docs and the ``netlens`` command run offline. Upsampled to
32x32 they give a CNN enough room for meaningful feature maps, CAMs, t-SNE
clusters and neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from netlens._repr import ShortRepr

DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass(repr=False)
class Split(ShortRepr):
    """Images ``(N, C, size, size)`` in [0, 1] and integer labels ``(N,)``.

    Examples
    --------
    >>> split = Split(torch.zeros(3, 1, 8, 8), torch.tensor([0, 1, 2]))
    >>> len(split), len(split.dataset()), len(split.first(2)), len(split.first(None))
    (3, 3, 2, 3)
    """

    images: Tensor
    labels: Tensor

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, count: int | None) -> Split:
        """The first ``count`` images and labels (``None``: all of them)."""
        if count is None:
            return self
        return Split(self.images[:count], self.labels[:count])


def load_digits(
    size: int = 32, *, channels: int = 1, test_fraction: float = 0.25, seed: int = 0
) -> tuple[Split, Split]:
    """scikit-learn's digits as float tensors, upsampled and split into train / test.

    Parameters
    ----------
    size
        Side of the (bilinearly upsampled) square images.
    channels
        1 for grayscale, 3 to repeat the gray channel (for RGB networks).
    test_fraction
        Share of the 1,797 images held out, stratified by class.
    seed
        Seed of the split.

    Examples
    --------
    >>> train, test = load_digits(size=16)
    >>> train.images.shape, test.images.shape
    (torch.Size([1347, 1, 16, 16]), torch.Size([450, 1, 16, 16]))
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).repeat(1, channels, 1, 1)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    pick = torch.from_numpy
    return (
        Split(images[pick(train_idx)], labels[pick(train_idx)]),
        Split(images[pick(test_idx)], labels[pick(test_idx)]),
    )
