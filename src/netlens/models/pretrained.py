"""A network to look inside: torchvision's pretrained one, or else a small one trained here.

:func:`pretrained_or_digits` loads a torchvision classifier with its ImageNet
weights and a few scikit-image sample photos to show it; where the weights
cannot be had (no internet, no cache) it trains a :class:`SmallResNet` on the
handwritten digits of :func:`~netlens.datasets.load_digits` instead, and picks
test digits to show it. Either way it returns a :class:`Subject` that says
which of the two it is, and prints one line saying what it did.
:func:`sample_photo` gives one of scikit-image's sample photos as a tensor.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens._repr import ShortRepr
from netlens.datasets.digits import DIGIT_CLASSES, Split, load_digits
from netlens.errors import WeightsUnavailableError
from netlens.models.resnet import SmallResNet
from netlens.models.torchvision_classifiers import load_torchvision_classifier
from netlens.models.training import History, train_classifier

__all__ = ["PHOTOS", "Subject", "pretrained_or_digits", "sample_photo"]

#: The photos of :mod:`skimage.data` that ship with scikit-image, by the name
#: of their function there.
PHOTOS = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
)

#: The channel statistics torchvision's ImageNet weights expect.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(repr=False)
class Subject(ShortRepr):
    """A trained network, its class names and the pictures to show it: :func:`pretrained_or_digits`.

    Attributes
    ----------
    model : torch.nn.Module
        The network, in eval mode.
    class_names : list[str]
        One name per output.
    pictures : Tensor
        ``(N, C, H, W)`` in [0, 1], as they are drawn (``viz.to_image(pictures[i])``).
    inputs : Tensor
        ``pictures`` as the network takes them: ``prepare(pictures)``.
    pretrained : bool
        ``True`` for torchvision's pretrained network and photos, ``False``
        for the small network trained on the digits.
    mean, std : tuple of float or None
        The per-channel normalisation of ``inputs`` (torchvision's ImageNet
        statistics), ``None`` for the digits, which the network takes as they are.
    train, test : Split or None
        The digits it was trained and measured on; ``None`` when pretrained.
    history : History or None
        Its learning curves; ``None`` when pretrained.
    summary : str
        One line saying what was loaded or trained (printed by
        :func:`pretrained_or_digits`).

    Examples
    --------
    >>> subject = pretrained_or_digits(
    ...     None, digits=[0, 1], size=8, network=SmallResNet(width=4), epochs=1, verbose=False
    ... )
    >>> subject.pretrained, subject.mean, tuple(subject.inputs.shape)
    (False, None, (2, 1, 8, 8))
    >>> bool((subject.prepare(subject.pictures) == subject.inputs).all())
    True
    """

    model: nn.Module = field(repr=False)
    class_names: list[str]
    pictures: Tensor
    inputs: Tensor
    pretrained: bool
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    train: Split | None = field(repr=False)
    test: Split | None = field(repr=False)
    history: History | None = field(repr=False)
    summary: str
    _start: nn.Module | Callable[[], nn.Module] = field(repr=False)

    def prepare(self, pictures: Tensor) -> Tensor:
        """Pictures in [0, 1], ``(C, H, W)`` or ``(N, C, H, W)``, normalised for the network."""
        if self.mean is None or self.std is None:
            return pictures
        mean = torch.tensor(self.mean, dtype=pictures.dtype, device=pictures.device)
        std = torch.tensor(self.std, dtype=pictures.dtype, device=pictures.device)
        return (pictures - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)

    def untrained(self) -> nn.Module:
        """A new copy of the network before training: the control for what training taught.

        For the digits it is the small network with the random weights its
        training started from; for a pretrained network, the same torchvision
        architecture with a fresh random initialisation (the weights its
        training started from are not published). In eval mode.
        """
        if isinstance(self._start, nn.Module):
            return copy.deepcopy(self._start).eval()
        return self._start().eval()


def sample_photo(name: str, size: int = 224) -> Tensor:
    """One of scikit-image's sample photos as a ``(3, size, size)`` tensor in [0, 1].

    The photo is cut to its central square and resized with antialiasing;
    gray photos (``"camera"``) are repeated over the three channels.

    Parameters
    ----------
    name
        One of ``netlens.models.pretrained.PHOTOS``: the photos that come with scikit-image (no
        download), such as ``"astronaut"``, ``"chelsea"``, ``"coffee"``,
        ``"rocket"`` or the gray ``"camera"``.
    size
        Side of the square result.

    Raises
    ------
    ValueError
        ``name`` is not one of those photos.

    Examples
    --------
    >>> photo = sample_photo("camera", size=32)
    >>> tuple(photo.shape), bool(photo.min() >= 0 and photo.max() <= 1)
    ((3, 32, 32), True)
    """
    import numpy as np
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"{name!r} is not a sample photo; choose one of {', '.join(PHOTOS)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, not {size!r}")
    array = getattr(skimage.data, name)()
    picture = torch.from_numpy(np.ascontiguousarray(array)).float() / 255
    if picture.dim() == 2:
        picture = picture[..., None].expand(-1, -1, 3)
    picture = picture[..., :3].permute(2, 0, 1)
    side = min(picture.shape[1:])
    top, left = (picture.shape[1] - side) // 2, (picture.shape[2] - side) // 2
    square = picture[None, :, top : top + side, left : left + side]
    resized = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True)
    return resized[0].clamp(0, 1)


def pretrained_or_digits(
    arch: str | None = "resnet18",
    *,
    photos: Sequence[str] = ("chelsea", "coffee", "astronaut"),
    photo_size: int = 224,
    digits: Sequence[int] = (0, 1, 2),
    size: int = 32,
    margin: int = 0,
    channels: int = 1,
    network: nn.Module | Callable[[], nn.Module] | None = None,
    epochs: int = 5,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    verbose: bool = True,
) -> Subject:
    """torchvision's pretrained ``arch`` and sample photos, or else a small network on the digits.

    The pretrained network comes with :func:`sample_photo` pictures normalised
    by the ImageNet statistics. Where its weights cannot be loaded
    (:class:`~netlens.errors.WeightsUnavailableError`: offline and not
    cached), or with ``arch=None``, ``network`` (by default a
    :class:`SmallResNet` with ten outputs) is trained with
    :func:`train_classifier` on the digits of
    :func:`~netlens.datasets.load_digits`, and the test digits numbered
    ``digits`` are the pictures. Both kinds end in global average pooling and
    one linear layer with torchvision's layer names, so code written for one
    runs on the other.

    Parameters
    ----------
    arch
        A torchvision classification architecture, or ``None`` to train on
        the digits without trying torchvision.
    photos, photo_size
        The :func:`sample_photo` names shown to the pretrained network, and
        their side in pixels.
    digits
        Indices into the test digits shown to the small network.
    size, margin, channels
        The digits: side of each image in pixels, of which ``margin`` pixels
        on every side are black (the digit itself is ``size - 2 * margin``
        pixels: the scans are cropped to their ink, and a margin keeps the
        strokes off the border), and 1 (gray) or 3 (repeated) channels.
    network
        The network to train on the digits (in place), or a function that
        builds it, called only when the digits are used; by default
        ``SmallResNet(num_classes=10, in_channels=channels)``. A network built
        here draws its initial weights from torch's global generator, so
        ``torch.manual_seed`` before the call fixes them.
    epochs, lr, batch_size, seed
        Passed to :func:`train_classifier` (``seed`` seeds its shuffling and,
        for a pretrained network, the random weights of
        :meth:`Subject.untrained`).
    verbose
        Print :attr:`Subject.summary`.

    Returns
    -------
    Subject

    Raises
    ------
    ValueError
        Unknown architecture or photo, bad digit geometry, or an index past
        the test digits.

    Examples
    --------
    >>> small = SmallResNet(width=4)
    >>> subject = pretrained_or_digits(None, digits=[0, 5], size=8, network=small, epochs=1)
    trained a SmallResNet on the handwritten digits (1 epoch): test accuracy 0...
    >>> subject.model is small, subject.class_names[:3], tuple(subject.pictures.shape)
    (True, ['0', '1', '2'], (2, 1, 8, 8))
    >>> bool((subject.pictures == subject.test.images[[0, 5]]).all())
    True
    """
    if arch is not None:
        if isinstance(photos, str) or not photos:
            raise ValueError(f"photos must be a non-empty sequence of names, not {photos!r}")
        try:
            model, class_names = load_torchvision_classifier(arch)
        except WeightsUnavailableError as error:
            cause = type(error.__cause__ or error).__name__
            reason = f"torchvision's pretrained {arch} could not be loaded ({cause}); "
        else:
            pictures = torch.stack([sample_photo(name, photo_size) for name in photos])
            subject = Subject(
                model=model,
                class_names=class_names,
                pictures=pictures,
                inputs=pictures,
                pretrained=True,
                mean=_IMAGENET_MEAN,
                std=_IMAGENET_STD,
                train=None,
                test=None,
                history=None,
                summary=(
                    f"loaded torchvision's pretrained {arch} ({len(class_names)} classes) and "
                    f"{len(photos)} sample photo(s) at {photo_size}x{photo_size}"
                ),
                _start=_random_twin(arch, seed),
            )
            subject.inputs = subject.prepare(pictures)
            return _announce(subject, verbose)
    else:
        reason = ""
    for value, name in ((size, "size"), (epochs, "epochs")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= 2 * margin < size:
        raise ValueError(f"margin must be an int with 0 <= 2 * margin < size, not {margin!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    train, test = load_digits(size=size - 2 * margin, channels=channels)
    if margin:
        pad = (margin,) * 4
        train, test = (Split(F.pad(s.images, pad), s.labels) for s in (train, test))
    picked = [int(i) for i in digits]
    if not picked or not all(-len(test) <= i < len(test) for i in picked):
        raise ValueError(f"digits must index the {len(test)} test digits, not {list(digits)}")
    if network is None:
        network = SmallResNet(num_classes=len(DIGIT_CLASSES), in_channels=channels)
    elif not isinstance(network, nn.Module):
        network = network()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network() must return an nn.Module, not {type(network).__name__}")
    start = copy.deepcopy(network)
    history = train_classifier(
        network, train, test, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, progress=False
    )
    network.eval()
    score = history.val_accuracy[-1]
    pictures = test.images[picked]
    subject = Subject(
        model=network,
        class_names=list(DIGIT_CLASSES),
        pictures=pictures,
        inputs=pictures,
        pretrained=False,
        mean=None,
        std=None,
        train=train,
        test=test,
        history=history,
        summary=(
            f"{reason}trained a {type(network).__name__} on the handwritten digits "
            f"({epochs} epoch{'s' if epochs != 1 else ''}): test accuracy {score:.3f}"
        ),
        _start=start,
    )
    return _announce(subject, verbose)


def _random_twin(arch: str, seed: int) -> Callable[[], nn.Module]:
    """A function that builds ``arch`` with random weights drawn from ``seed`` alone."""

    def build() -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return load_torchvision_classifier(arch, weights=None)[0]

    return build


def _announce(subject: Subject, verbose: bool) -> Subject:
    if verbose:
        print(subject.summary)
    return subject
