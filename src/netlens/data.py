"""Small real data that ships offline, and a small network that learns it in seconds.

scikit-learn's handwritten digits (1,797 images of 8x8 pixels, 10 classes) come
with scikit-learn itself, so tests, docs and the ``netlens`` command run
without any download. Upsampled to 32x32 they give a CNN enough room for
meaningful feature maps, CAMs, t-SNE clusters and neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from netlens.errors import WeightsUnavailableError

DIGIT_CLASSES = [str(i) for i in range(10)]


@dataclass
class Split:
    """Images ``(N, C, size, size)`` in [0, 1] and integer labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)

    def __len__(self) -> int:
        return len(self.labels)


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


class _Block(nn.Module):
    """A torchvision-style basic residual block."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class SmallResNet(nn.Module):
    """A ResNet-18 shrunk in depth and width, with torchvision's layer names.

    ``conv1 -> bn1 -> relu -> layer1..layer4 -> avgpool -> fc``: one basic block
    per stage, widths ``width * (1, 2, 4, 8)``, no stem max-pool (the inputs
    are small). Global average pooling + one linear layer, so CAM applies.

    Examples
    --------
    >>> net = SmallResNet(num_classes=10, in_channels=1)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 8]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _Block(width, widths[0], 1)
        self.layer2 = _Block(widths[0], widths[1], 2)
        self.layer3 = _Block(widths[1], widths[2], 2)
        self.layer4 = _Block(widths[2], widths[3], 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@dataclass
class History:
    """Per-epoch training loss and accuracies of :func:`train_classifier`."""

    loss: list[float]
    train_accuracy: list[float]
    test_accuracy: list[float]


def accuracy(
    model: nn.Module,
    split: Split,
    batch_size: int = 256,
    *,
    transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``split`` (eval mode; training flags restored).

    ``transform(images, labels)``, if given, maps each batch first, as in
    :func:`train_classifier`: with :func:`~netlens.rotate_batch` this is the
    accuracy of the rotation pretext task.

    Examples
    --------
    >>> from netlens import rotate_batch
    >>> _, test = load_digits(size=16)
    >>> always_upright = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
    >>> with torch.no_grad():
    ...     _ = always_upright[1].weight.zero_(), always_upright[1].bias.copy_(
    ...         torch.tensor([1.0, 0, 0, 0]))
    >>> accuracy(always_upright, test, transform=rotate_batch)
    0.25
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size].to(device)
            y = split.labels[start : start + batch_size].to(device)
            if transform is not None:
                x, y = transform(x, y)
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train(was_training)
    return correct / total


def train_classifier(
    model: nn.Module,
    train: Split,
    test: Split | None = None,
    *,
    epochs: int = 4,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
) -> History:
    """Train ``model`` with Adam and cross-entropy; return the learning curves.

    ``transform(images, labels)``, if given, maps each batch before the step
    (e.g. a rotation pretext task); the accuracies in the returned history
    are measured on batches mapped the same way. After each epoch the BatchNorm running
    statistics are recomputed over the whole training set with the epoch's
    final weights: the running averages kept during training lag behind
    weights that still move quickly, which makes eval-mode accuracy after a
    few epochs of training jump around. The model is left in eval mode.

    Examples
    --------
    >>> train, test = load_digits(size=16)
    >>> model = SmallResNet(width=8)
    >>> history = train_classifier(model, train, test, epochs=1, progress=False)
    >>> len(history.loss), history.test_accuracy[0] > 0.5
    (1, True)
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    loader = DataLoader(train.dataset(), batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History([], [], [])
    for _ in tqdm(range(epochs), desc="training", unit="epoch", disable=not progress):
        model.train()
        total, count = 0.0, 0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if transform is not None:
                x, y = transform(x, y)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        history.loss.append(total / count)
        _recompute_batchnorm_statistics(model, loader, transform, device)
        history.train_accuracy.append(accuracy(model, train, transform=transform))
        if test is not None:
            history.test_accuracy.append(accuracy(model, test, transform=transform))
    model.eval()
    return history


def _recompute_batchnorm_statistics(
    model: nn.Module,
    loader: DataLoader,
    transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None,
    device: torch.device,
) -> None:
    """Replace BatchNorm running statistics by exact averages over ``loader``."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if transform is not None:
                x, y = transform(x, y)
            model(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def load_torchvision_classifier(
    arch: str, weights: str | None = "DEFAULT"
) -> tuple[nn.Module, list[str]]:
    """A torchvision classification network by name, in eval mode, and its class names.

    Parameters
    ----------
    arch
        A name from ``torchvision.models.list_models(module=torchvision.models)``,
        e.g. ``"resnet18"``.
    weights
        ``"DEFAULT"`` (or another name of the architecture's weights enum) for
        torchvision's pretrained weights, downloaded on first use; ``None``
        for random weights.

    Returns
    -------
    model, categories
        The network, and the class names of its weights (``"class 0"``, ...
        for random weights).

    Raises
    ------
    ValueError
        Unknown architecture (the message lists close matches) or weights name.
    WeightsUnavailableError
        The pretrained weights could not be downloaded or read.

    Examples
    --------
    >>> model, categories = load_torchvision_classifier("resnet18", weights=None)
    >>> len(categories), model.training
    (1000, False)
    """
    import difflib

    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown torchvision classification architecture {arch!r}{hint}")
    if weights is None:
        model = torchvision.models.get_model(arch, weights=None)
        categories = [f"class {i}" for i in range(_num_outputs(model))]
    else:
        enum = torchvision.models.get_model_weights(arch)
        try:
            chosen = enum[weights] if weights == "DEFAULT" else enum[weights.split(".")[-1]]
        except KeyError:
            names = ", ".join(enum.__members__)
            raise ValueError(f"{arch} has no weights {weights!r}; choose one of {names}") from None
        try:
            model = torchvision.models.get_model(arch, weights=chosen)
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise WeightsUnavailableError(
                f"torchvision's {chosen} weights for {arch} could not be loaded ({error}); "
                "connect to the internet once, or use a state dict of your own"
            ) from error
        categories = list(chosen.meta["categories"])
    return model.eval(), categories


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels
