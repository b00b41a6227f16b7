"""CIFAR-10 when it can be had, else the handwritten digits in its shape.

:func:`load_cifar10` reads (and on first use downloads) CIFAR-10 with
torchvision and keeps a subset as tensors; without a connection it falls back
to :func:`~netlens.datasets.load_digits` at 32x32 pixels, says so, and marks
the result, so that code written for CIFAR-10 runs offline unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from netlens._repr import ShortRepr
from netlens.datasets.digits import DIGIT_CLASSES, Split, load_digits

__all__ = ["ImageSplits", "load_cifar10"]


@dataclass(repr=False)
class ImageSplits(ShortRepr):
    """Training and test images with their class names, from :func:`load_cifar10`.

    Attributes
    ----------
    train, test : Split
        Images ``(N, C, 32, 32)`` in [0, 1] and their labels.
    classes : list[str]
        The name of each label.
    cifar : bool
        ``True`` for CIFAR-10, ``False`` for the digits that stood in for it.
    summary : str
        One line saying which data it is and how much (printed by
        :func:`load_cifar10`).

    Examples
    --------
    >>> data = ImageSplits(Split(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1])),
    ...                    Split(torch.zeros(1, 3, 32, 32), torch.tensor([1])),
    ...                    ["a", "b"], cifar=False, summary="two blank images")
    >>> len(data.train), len(data.test), data.classes
    (2, 1, ['a', 'b'])
    """

    train: Split = field(repr=False)
    test: Split = field(repr=False)
    classes: list[str]
    cifar: bool
    summary: str


def load_cifar10(
    n_train: int | None = 5000,
    n_test: int | None = 1000,
    *,
    root: str | Path | None = None,
    download: bool = True,
    fallback: bool = True,
    digit_channels: int = 3,
    verbose: bool = True,
) -> ImageSplits:
    """The first ``n_train`` / ``n_test`` images of CIFAR-10, or else the digits at 32x32.

    CIFAR-10 comes from ``torchvision.datasets.CIFAR10`` (about 170 MB,
    downloaded into ``root`` on first use). When it cannot be read or
    downloaded (no connection: an ``OSError``; a missing or damaged copy with
    ``download=False``: a ``RuntimeError``) and ``fallback`` is true, the
    1,797 handwritten digits of :func:`~netlens.datasets.load_digits` take its
    place whole, upsampled to 32x32 and repeated over ``digit_channels``
    channels; the one printed line and :attr:`ImageSplits.cifar` say which it is.

    Parameters
    ----------
    n_train, n_test
        How many images of each CIFAR-10 split to keep (the first ones, which
        hold every class about equally often); ``None`` for all (50,000 and
        10,000). They do not apply to the digits.
    root
        Where CIFAR-10 is kept; default ``~/.cache/netlens/cifar10``.
    download
        Download CIFAR-10 if it is not in ``root``.
    fallback
        Use the digits when CIFAR-10 cannot be had; with ``False`` the error
        is raised.
    digit_channels
        Channels of the digits: 3 (CIFAR-10's shape, the gray value repeated)
        or 1.
    verbose
        Print :attr:`ImageSplits.summary`.

    Returns
    -------
    ImageSplits

    Examples
    --------
    >>> import tempfile
    >>> data = load_cifar10(root=tempfile.mkdtemp(), download=False)  # nothing there
    CIFAR-10 could not be loaded (RuntimeError); using the handwritten digits, ...
    >>> data.cifar, tuple(data.train.images.shape), data.classes[:3]
    (False, (1347, 3, 32, 32), ['0', '1', '2'])
    """
    for value, name in ((n_train, "n_train"), (n_test, "n_test")):
        bad = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if value is not None and bad:
            raise ValueError(f"{name} must be a positive int or None, not {value!r}")
    if digit_channels not in (1, 3):
        raise ValueError(f"digit_channels must be 1 or 3, not {digit_channels!r}")
    folder = Path(root) if root is not None else Path.home() / ".cache" / "netlens" / "cifar10"
    try:
        import torchvision

        sets = [
            torchvision.datasets.CIFAR10(str(folder), train=part, download=download)
            for part in (True, False)
        ]
    except (OSError, RuntimeError) as error:  # no connection: URLError is an OSError
        if not fallback:
            raise
        train, test = load_digits(size=32, channels=digit_channels)
        summary = (
            f"CIFAR-10 could not be loaded ({type(error).__name__}); using the handwritten "
            f"digits, upsampled to 32x32 with {digit_channels} channel"
            f"{'s' if digit_channels != 1 else ''}, instead: {len(train)} training and "
            f"{len(test)} test images"
        )
        data = ImageSplits(train, test, list(DIGIT_CLASSES), cifar=False, summary=summary)
    else:
        train, test = (
            _as_split(dataset, n) for dataset, n in zip(sets, (n_train, n_test), strict=True)
        )
        summary = (
            f"CIFAR-10: {len(train)} of {len(sets[0])} training and {len(test)} of "
            f"{len(sets[1])} test images"
        )
        data = ImageSplits(train, test, list(sets[0].classes), cifar=True, summary=summary)
    if verbose:
        print(data.summary)
    return data


def _as_split(dataset, n: int | None) -> Split:
    """The first ``n`` images of a torchvision CIFAR set as float tensors in [0, 1]."""
    images = torch.from_numpy(dataset.data[:n]).permute(0, 3, 1, 2).float() / 255
    return Split(images, torch.tensor(dataset.targets[:n]))
