"""Offline data: handwritten digits, the rotation pretext task, synthetic scenes.

Nothing here downloads anything: :func:`load_digits` serves the 1,797 digits
that ship with scikit-learn, :class:`RotationDataset` / :func:`rotate_batch`
turn any images into the four-way rotation task of Gidaris et al. (2018), and
:func:`scenes` paints outdoor scenes with a scene label and an exact mask per
concept (sky, building, tree, ...), for dissection.

Examples
--------
>>> from netlens.datasets import load_digits, rotate_batch
>>> train, _ = load_digits(size=16)
>>> rotated, labels = rotate_batch(train.images[:2])
>>> rotated.shape, labels.tolist()
(torch.Size([8, 1, 16, 16]), [0, 1, 2, 3, 0, 1, 2, 3])
"""

from netlens.datasets.cifar import ImageSplits, load_cifar10
from netlens.datasets.digits import DIGIT_CLASSES, Split, load_digits
from netlens.datasets.rotation import ROTATION_NAMES, RotationDataset, rotate, rotate_batch

# The function shares its module's name: importing it here makes
# ``netlens.datasets.scenes`` the function for good.
from netlens.datasets.scenes import SCENE_CLASSES, SCENE_CONCEPTS, Scenes, scenes

__all__ = [
    "DIGIT_CLASSES",
    "ImageSplits",
    "ROTATION_NAMES",
    "RotationDataset",
    "SCENE_CLASSES",
    "SCENE_CONCEPTS",
    "Scenes",
    "Split",
    "load_cifar10",
    "load_digits",
    "rotate",
    "rotate_batch",
    "scenes",
]
