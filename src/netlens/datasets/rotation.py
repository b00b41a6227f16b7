"""Rotation prediction, a self-supervised pretext task (Gidaris et al., 2018).

A network that can tell whether an image was turned by 0, 90, 180 or 270
degrees has to recognise the objects in it, so it learns useful features from
images alone, without class labels [1]_. The data side is all there is to it:
every image appears four times, once per rotation, labelled with the rotation
index ``r`` (the image turned by ``r * 90`` degrees counter-clockwise, as
``torch.rot90(image, r, dims=(-2, -1))``); the network is an ordinary
classifier with four outputs.

References
----------
.. [1] S. Gidaris, P. Singh and N. Komodakis, "Unsupervised Representation
   Learning by Predicting Image Rotations", ICLR 2018, arXiv:1803.07728.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

ROTATIONS = 4
ROTATION_NAMES = ["0°", "90°", "180°", "270°"]


class _Sized(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> object: ...


def rotate(image: Tensor, rotation: int) -> Tensor:
    """``image`` turned by ``rotation * 90`` degrees counter-clockwise (last two dims).

    Examples
    --------
    >>> rotate(torch.tensor([[1, 2], [3, 4]]), 1).tolist()
    [[2, 4], [1, 3]]
    """
    return torch.rot90(image, int(rotation), dims=(-2, -1))


def rotate_batch(images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Every image of a batch at all four rotations, with rotation labels.

    Row ``4 * i + r`` is image ``i`` turned by ``r * 90`` degrees; its label is
    ``r``. Class labels, if passed, are ignored: the signature fits
    ``train_classifier(..., transform=rotate_batch)``
    (:func:`netlens.models.train_classifier`) directly.

    Parameters
    ----------
    images
        ``(N, C, H, W)`` with ``H == W`` (turned images must stack).
    labels
        Ignored.

    Returns
    -------
    rotated : Tensor
        ``(4 N, C, H, W)``.
    rotation_labels : Tensor
        ``(4 N,)`` int64 in ``0..3`` on the images' device.

    Examples
    --------
    >>> x, r = rotate_batch(torch.rand(2, 1, 8, 8))
    >>> x.shape, r.tolist()
    (torch.Size([8, 1, 8, 8]), [0, 1, 2, 3, 0, 1, 2, 3])
    """
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"expected images of shape (N, C, H, W), got {shape}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"images must be square to rotate a whole batch, got {tuple(images.shape[-2:])}; "
            "crop or resize them first, or use RotationDataset for per-image rotation."
        )
    rotated = torch.stack([rotate(images, r) for r in range(ROTATIONS)], dim=1).flatten(0, 1)
    rotation_labels = torch.arange(ROTATIONS, device=images.device).repeat(len(images))
    return rotated, rotation_labels


class RotationDataset(Dataset):
    """A dataset of images seen at 0, 90, 180 and 270 degrees, labelled by rotation.

    Item ``4 * i + r`` is image ``i`` of ``dataset`` turned by ``r * 90``
    degrees counter-clockwise, with label ``r``; the length is ``4 * len(dataset)``.

    Parameters
    ----------
    dataset
        Anything indexable with a length whose items are images (tensors
        ``(C, H, W)`` or PIL images) or tuples whose first item is one
        (``(image, class_label)``; the class label is dropped).

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> base = TensorDataset(torch.rand(3, 1, 8, 8), torch.tensor([7, 8, 9]))
    >>> rotations = RotationDataset(base)
    >>> len(rotations), rotations[5][1]
    (12, 1)
    """

    def __init__(self, dataset: _Sized) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError("RotationDataset needs an indexable dataset with a length")
        self.dataset = dataset

    def __len__(self) -> int:
        return ROTATIONS * len(self.dataset)

    def __getitem__(self, index: int) -> tuple[object, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} rotated images")
        index %= len(self)
        item = self.dataset[index // ROTATIONS]
        if isinstance(item, (tuple, list)):
            item = item[0]
        rotation = index % ROTATIONS
        return _rotate_any(item, rotation), rotation


def _rotate_any(image: object, rotation: int) -> object:
    if isinstance(image, Tensor):
        if image.dim() < 2:
            raise ValueError(f"an image needs at least two dims, got {tuple(image.shape)}")
        return rotate(image, rotation)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        Image = None  # noqa: N806
    if Image is not None and isinstance(image, Image.Image):
        # PIL turns counter-clockwise too, so labels mean the same for both kinds.
        return image.rotate(90 * rotation, expand=True) if rotation else image.copy()
    raise TypeError(
        f"cannot rotate a {type(image).__name__}; items must be tensors (C, H, W) or PIL "
        "images (add transforms.ToTensor() to the dataset)"
    )
