"""Offline digits and a small network that learns them, under one name.

The names live in :mod:`netlens.datasets` (:func:`load_digits`,
:class:`Split`, ``DIGIT_CLASSES``) and :mod:`netlens.models`
(:class:`SmallResNet`, :func:`train_classifier`, :class:`History`,
:func:`accuracy`, :func:`load_torchvision_classifier`); this module gathers
them, so ``from netlens.data import load_digits, SmallResNet`` keeps working.

Examples
--------
>>> from netlens.data import SmallResNet, load_digits
>>> train, _ = load_digits(size=16)
>>> SmallResNet(width=4)(train.images[:2]).shape
torch.Size([2, 10])
"""

from netlens.datasets import DIGIT_CLASSES, Split, load_digits
from netlens.errors import WeightsUnavailableError
from netlens.models import (
    History,
    SmallResNet,
    accuracy,
    load_torchvision_classifier,
    train_classifier,
)

__all__ = [
    "DIGIT_CLASSES",
    "History",
    "SmallResNet",
    "Split",
    "WeightsUnavailableError",
    "accuracy",
    "load_digits",
    "load_torchvision_classifier",
    "train_classifier",
]
