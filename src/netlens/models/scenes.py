"""A scene classifier trained on synthetic scenes in a minute or two, and its untrained twin.

:func:`train_scene_classifier` trains :class:`~netlens.models.SmallResNet` on
:func:`netlens.datasets.scenes` to tell cities, mountains, coasts, forests,
fields and highways apart; :func:`scene_network` builds the same network with
the same initial weights and no training, the control of a dissection. The
training and validation scenes come from seeds :data:`TRAIN_SEED` +
``seed`` and :data:`VALIDATION_SEED` + ``seed``: scenes drawn with any seed
below :data:`TRAIN_SEED` were never seen in training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from netlens._checks import check_positive_int
from netlens.datasets.scenes import SCENE_CLASSES, scenes
from netlens.models.resnet import SmallResNet
from netlens.models.training import History, train_classifier

__all__ = [
    "SceneClassifier",
    "TRAIN_SEED",
    "VALIDATION_SEED",
    "scene_network",
    "train_scene_classifier",
]

#: ``scenes(..., seed=TRAIN_SEED + seed)`` are the training scenes.
TRAIN_SEED = 10_000
#: ``scenes(..., seed=VALIDATION_SEED + seed)`` are the validation scenes.
VALIDATION_SEED = 20_000


@dataclass
class SceneClassifier:
    """A trained scene network and how it was trained.

    Attributes
    ----------
    model : nn.Module
        The :class:`~netlens.models.SmallResNet`, in eval mode.
    history : History
        Its learning curves (validation on scenes it was not trained on).
    classes : list[str]
        The class names, in logit order (:data:`~netlens.datasets.SCENE_CLASSES`).
    size : int
        Side of the scenes it was trained on.
    seed : int
        The seed of its initial weights, its training order and its scenes.
    seconds : float
        Wall time of the training.

    Examples
    --------
    >>> history = History(val_accuracy=[0.81, 0.9])
    >>> found = SceneClassifier(scene_network(), history)
    >>> found.model(torch.zeros(1, 3, 32, 32)).shape, found.classes[0], found.val_accuracy
    (torch.Size([1, 6]), 'city', 0.9)
    """

    model: nn.Module
    history: History
    classes: list[str] = field(default_factory=lambda: list(SCENE_CLASSES))
    size: int = 64
    seed: int = 0
    seconds: float = 0.0

    @property
    def val_accuracy(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.history.val_accuracy[-1]


def scene_network(*, width: int = 8, seed: int = 0) -> SmallResNet:
    """The untrained scene network: :class:`SmallResNet` with the initial weights of ``seed``.

    :func:`train_scene_classifier` with the same ``width`` and ``seed``
    starts from exactly these weights, so this is the control a trained
    network is compared with. The global random state is left as it was. In
    eval mode, with BatchNorm's initial statistics (mean 0, variance 1).

    Examples
    --------
    >>> a, b = scene_network(seed=1), scene_network(seed=1)
    >>> bool(torch.equal(a.conv1.weight, b.conv1.weight)), a.training
    (True, False)
    """
    width = check_positive_int(width, "width")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallResNet(num_classes=len(SCENE_CLASSES), in_channels=3, width=width)
    return model.eval()


def train_scene_classifier(
    *,
    images: int = 3000,
    val_images: int = 600,
    epochs: int = 3,
    width: int = 8,
    size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> SceneClassifier:
    """Train a scene classifier on synthetic scenes (about a minute on two CPU cores).

    :func:`scene_network` (``width``, ``seed``) is trained with
    :func:`~netlens.models.train_classifier` (Adam, learning rate 3e-3, batch
    64) for ``epochs`` epochs on ``images`` scenes of ``size`` pixels, and
    validated after every epoch on ``val_images`` other scenes. The defaults
    reach about 90 % validation accuracy (chance: 17 %).

    Parameters
    ----------
    images, val_images
        Numbers of training and validation scenes.
    epochs
        Passes over the training scenes.
    width
        Channels of the first stage (``layer4`` has ``8 * width`` units).
    size
        Side of the scenes in pixels.
    seed
        Seed of the initial weights, the scenes and the training order.
    device
        Where to train.
    progress
        Show a progress bar over the epochs.

    Returns
    -------
    SceneClassifier

    Examples
    --------
    >>> trained = train_scene_classifier(images=60, val_images=30, epochs=1, size=32,
    ...                                  progress=False)
    >>> len(trained.history.val_accuracy), trained.model.training
    (1, False)
    """
    images = check_positive_int(images, "images")
    val_images = check_positive_int(val_images, "val_images")
    epochs = check_positive_int(epochs, "epochs")
    start = time.perf_counter()
    model = scene_network(width=width, seed=seed).to(device)
    train = scenes(images, size=size, seed=TRAIN_SEED + seed)
    val = scenes(val_images, size=size, seed=VALIDATION_SEED + seed)
    history = train_classifier(
        model, train.split(), val.split(), epochs=epochs, seed=seed, progress=progress
    )
    return SceneClassifier(
        model=model.eval(),
        history=history,
        size=size,
        seed=seed,
        seconds=time.perf_counter() - start,
    )
