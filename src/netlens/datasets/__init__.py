"""Offline data: scikit-learn's handwritten digits and the rotation pretext task.

Nothing here downloads anything: :func:`load_digits` serves the 1,797 digits
that ship with scikit-learn, and :class:`RotationDataset` / :func:`rotate_batch`
turn any images into the four-way rotation task of Gidaris et al. (2018).

Examples
--------
>>> from netlens.datasets import load_digits, rotate_batch
>>> train, _ = load_digits(size=16)
>>> rotated, labels = rotate_batch(train.images[:2])
>>> rotated.shape, labels.tolist()
(torch.Size([8, 1, 16, 16]), [0, 1, 2, 3, 0, 1, 2, 3])
"""

from netlens.datasets.digits import DIGIT_CLASSES, Split, load_digits
from netlens.datasets.rotation import ROTATION_NAMES, RotationDataset, rotate, rotate_batch

__all__ = [
    "DIGIT_CLASSES",
    "ROTATION_NAMES",
    "RotationDataset",
    "Split",
    "load_digits",
    "rotate",
    "rotate_batch",
]
