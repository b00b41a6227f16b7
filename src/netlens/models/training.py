"""Training a classifier in a few lines, with learning curves to look at.

:func:`train_classifier` runs Adam on cross-entropy and returns a
:class:`History` of per-epoch losses and accuracies on the training and
validation splits; :func:`accuracy` measures one split and
:func:`per_sample_loss` the loss of each of its examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from netlens._checks import model_device
from netlens._repr import ShortRepr
from netlens.datasets.digits import Split
from netlens.hooks import eval_mode

Transform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass(repr=False)
class History(ShortRepr):
    """Learning curves of :func:`train_classifier`, one entry per epoch.

    Attributes
    ----------
    train_loss : list[float]
        Mean cross-entropy over the epoch's training batches, as the optimiser
        met them (training mode, weights changing within the epoch).
    train_accuracy : list[float]
        ``accuracy(model, train)`` after the epoch, in eval mode.
    val_loss : list[float]
        Mean cross-entropy on the validation split after the epoch, in eval
        mode; empty when no validation split was given.
    val_accuracy : list[float]
        ``accuracy(model, val)`` after the epoch; empty when no validation
        split was given.
    best_epoch : int or None
        Index into the lists of the epoch with the highest validation
        accuracy (ties go to the lower validation loss, then to the earlier
        epoch); ``None`` without a validation split.

    Examples
    --------
    >>> history = History(train_loss=[0.9, 0.4], train_accuracy=[0.7, 0.9],
    ...                   val_loss=[0.8, 0.5], val_accuracy=[0.75, 0.85], best_epoch=1)
    >>> history.val_accuracy[history.best_epoch]
    0.85
    """

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int | None = None

    @property
    def loss(self) -> list[float]:
        """:attr:`train_loss` under its netlens 0.1 name."""
        return self.train_loss

    @property
    def test_accuracy(self) -> list[float]:
        """:attr:`val_accuracy` under its netlens 0.1 name."""
        return self.val_accuracy


def accuracy(
    model: nn.Module,
    split: Split,
    batch_size: int = 256,
    *,
    transform: Transform | None = None,
) -> float:
    """Top-1 accuracy of ``model`` on ``split``.

    Measured in eval mode without gradients; every submodule's ``training``
    flag is restored afterwards, also when the forward pass raises.
    ``transform(images, labels)``, if given, maps each batch first, as in
    :func:`train_classifier`: with :func:`~netlens.datasets.rotate_batch`
    this is the accuracy of the rotation pretext task.

    Examples
    --------
    >>> from netlens.datasets import load_digits, rotate_batch
    >>> _, test = load_digits(size=16)
    >>> always_upright = nn.Sequential(nn.Flatten(), nn.Linear(256, 4))
    >>> with torch.no_grad():
    ...     _ = always_upright[1].weight.zero_(), always_upright[1].bias.copy_(
    ...         torch.tensor([1.0, 0, 0, 0]))
    >>> accuracy(always_upright, test, transform=rotate_batch)
    0.25
    """
    return _evaluate(model, split, batch_size, transform, with_loss=False)[1]


def per_sample_loss(
    model: nn.Module,
    split: Split,
    *,
    batch_size: int = 256,
    transform: Transform | None = None,
) -> Tensor:
    """Cross-entropy of every example of ``split``, ``(N,)`` float64, in the split's order.

    Measured like :func:`accuracy` (eval mode, no gradients, every
    ``training`` flag restored). Sort it to find the examples the model finds
    hardest and easiest: ``loss.argsort(descending=True)[:k]``.

    Examples
    --------
    >>> from netlens.datasets import load_digits
    >>> from netlens.models import SmallResNet
    >>> _, test = load_digits(size=16)
    >>> loss = per_sample_loss(SmallResNet(width=4), test)
    >>> loss.shape == (len(test),), loss.dtype
    (True, torch.float64)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, not {batch_size!r}")
    if len(split) == 0:
        raise ValueError("the split is empty; there is nothing to measure")
    device = model_device(model)
    losses = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size].to(device)
            y = split.labels[start : start + batch_size].to(device)
            if transform is not None:
                x, y = transform(x, y)
            logits = model(x).double()
            losses.append(F.cross_entropy(logits, y, reduction="none").cpu())
    return torch.cat(losses)


def _evaluate(
    model: nn.Module,
    split: Split,
    batch_size: int,
    transform: Transform | None,
    *,
    with_loss: bool,
) -> tuple[float, float]:
    """Mean cross-entropy (NaN unless ``with_loss``) and top-1 accuracy on ``split``."""
    if len(split) == 0:
        raise ValueError("the split is empty; there is nothing to measure")
    device = model_device(model)
    loss, correct, total = 0.0, 0, 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size].to(device)
            y = split.labels[start : start + batch_size].to(device)
            if transform is not None:
                x, y = transform(x, y)
            logits = model(x)
            correct += int((logits.argmax(1) == y).sum())
            if with_loss:
                loss += float(F.cross_entropy(logits.double(), y, reduction="sum"))
            total += len(y)
    return (loss / total if with_loss else math.nan), correct / total


def train_classifier(
    model: nn.Module,
    train: Split,
    val: Split | None = None,
    *,
    epochs: int = 4,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    transform: Transform | None = None,
    restore_best: bool = False,
) -> History:
    """Train ``model`` with Adam and cross-entropy; return the learning curves.

    ``transform(images, labels)``, if given, maps each batch before the step
    (e.g. a rotation pretext task); the losses and accuracies in the returned
    history are measured on batches mapped the same way. After each epoch the
    BatchNorm running statistics are recomputed over the whole training set
    with the epoch's final weights: the running averages kept during training
    lag behind weights that still move quickly, which makes eval-mode accuracy
    after a few epochs of training jump around. The model is left in eval mode.

    Parameters
    ----------
    model
        Any classifier returning logits ``(N, classes)``; trained in place.
    train, val
        The training split and an optional validation split, measured after
        every epoch (``val_loss``, ``val_accuracy``, ``best_epoch``).
    epochs, lr, batch_size, seed
        Length of training, Adam's learning rate, batch size, and the seed of
        the shuffling and of ``torch.manual_seed``.
    progress
        Show a progress bar over the epochs.
    transform
        ``transform(images, labels) -> (images, labels)`` applied to every batch.
    restore_best
        Load the weights (and BatchNorm statistics) of ``history.best_epoch``
        at the end instead of keeping the last epoch's; needs ``val``.

    Returns
    -------
    History
        Without ``restore_best``, ``history.val_accuracy[-1]`` is
        ``accuracy(model, val)`` of the returned model; with it,
        ``history.val_accuracy[history.best_epoch]`` is.

    Examples
    --------
    >>> from netlens.datasets import load_digits
    >>> from netlens.models import SmallResNet
    >>> train, val = load_digits(size=16)
    >>> model = SmallResNet(width=8)
    >>> history = train_classifier(model, train, val, epochs=1, progress=False)
    >>> len(history.train_loss), history.val_accuracy[0] > 0.5, history.best_epoch
    (1, True, 0)
    """
    if restore_best and val is None:
        raise ValueError("restore_best=True needs a validation split to choose the best epoch")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = model_device(model)
    loader = DataLoader(train.dataset(), batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = History()
    best_state: dict[str, Tensor] | None = None
    for epoch in tqdm(range(epochs), desc="training", unit="epoch", disable=not progress):
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
        history.train_loss.append(total / count)
        _recompute_batchnorm_statistics(model, loader, transform, device)
        history.train_accuracy.append(accuracy(model, train, transform=transform))
        if val is not None:
            val_loss, val_accuracy = _evaluate(model, val, 256, transform, with_loss=True)
            history.val_loss.append(val_loss)
            history.val_accuracy.append(val_accuracy)
            if _improves(history, epoch):
                history.best_epoch = epoch
                if restore_best:
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def _improves(history: History, epoch: int) -> bool:
    """Whether ``epoch`` beats ``history.best_epoch``: higher accuracy, then lower loss."""
    best = history.best_epoch
    if best is None:
        return True
    now = (history.val_accuracy[epoch], -history.val_loss[epoch])
    return now > (history.val_accuracy[best], -history.val_loss[best])


def _recompute_batchnorm_statistics(
    model: nn.Module,
    loader: DataLoader,
    transform: Transform | None,
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
