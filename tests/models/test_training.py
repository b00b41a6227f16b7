import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from netlens.datasets import Split, load_digits, rotate_batch
from netlens.models import History, SmallResNet, accuracy, train_classifier


@pytest.fixture(scope="module")
def digits() -> tuple[Split, Split]:
    train, val = load_digits(size=16)
    return Split(train.images[:300], train.labels[:300]), Split(val.images[:200], val.labels[:200])


def _model(seed: int = 0) -> SmallResNet:
    torch.manual_seed(seed)
    return SmallResNet(width=4)


@pytest.fixture(scope="module")
def trained(digits) -> tuple[SmallResNet, History]:
    train, val = digits
    model = _model()
    return model, train_classifier(model, train, val, epochs=3, progress=False)


def _mean_cross_entropy(model: nn.Module, split: Split) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(split.images), split.labels))


def test_history_has_one_entry_per_epoch_of_every_curve(trained):
    _, history = trained
    curves = [history.train_loss, history.train_accuracy, history.val_loss, history.val_accuracy]
    assert [len(curve) for curve in curves] == [3, 3, 3, 3]
    assert all(0.0 <= a <= 1.0 for a in history.train_accuracy + history.val_accuracy)
    assert all(math.isfinite(v) and v > 0 for v in history.train_loss + history.val_loss)
    assert history.train_loss[-1] < history.train_loss[0]


def test_last_epoch_of_history_is_the_returned_models_measurement(digits, trained):
    train, val = digits
    model, history = trained
    assert history.val_accuracy[-1] == accuracy(model, val)
    assert history.train_accuracy[-1] == accuracy(model, train)
    assert history.val_loss[-1] == pytest.approx(_mean_cross_entropy(model, val), rel=1e-5)
    assert not model.training


def test_best_epoch_has_the_highest_validation_accuracy_then_lowest_loss(trained):
    _, history = trained
    best = history.best_epoch
    scores = list(zip(history.val_accuracy, (-v for v in history.val_loss), strict=True))
    assert scores[best] == max(scores)
    assert best == scores.index(max(scores))


def test_restore_best_returns_the_best_epochs_weights(digits):
    train, _ = digits
    # Labels shifted by one: fitting the training labels makes this split worse
    # every epoch, so the first epoch is the best one.
    wrong = Split(train.images, (train.labels + 1) % 10)
    model = _model()
    history = train_classifier(model, train, wrong, epochs=3, progress=False, restore_best=True)
    assert history.best_epoch == 0 and history.val_loss[0] < history.val_loss[-1]
    assert accuracy(model, wrong) == history.val_accuracy[0]
    assert _mean_cross_entropy(model, wrong) == pytest.approx(history.val_loss[0], rel=1e-5)
    first_epoch_only = _model()
    train_classifier(first_epoch_only, train, epochs=1, progress=False)
    for name, value in first_epoch_only.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_without_validation_split_there_is_no_best_epoch(digits):
    train, _ = digits
    history = train_classifier(_model(), train, epochs=1, progress=False)
    assert history.val_loss == [] and history.val_accuracy == [] and history.best_epoch is None
    with pytest.raises(ValueError, match="validation split"):
        train_classifier(_model(), train, epochs=1, progress=False, restore_best=True)


def test_old_names_read_the_same_curves():
    history = History(train_loss=[1.0], train_accuracy=[0.5], val_loss=[0.9], val_accuracy=[0.6])
    assert history.loss is history.train_loss
    assert history.test_accuracy is history.val_accuracy


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def _mixed_flags(model: nn.Module) -> list[bool]:
    model.train()
    model.features[1].eval()  # a submodule kept in eval mode by its owner
    return [m.training for m in model.modules()]


def test_accuracy_leaves_every_training_flag_as_found(digits):
    _, val = digits
    model = _Raises()
    model.forward = lambda x: model.features(x)
    before = _mixed_flags(model)
    accuracy(model, val)
    assert [m.training for m in model.modules()] == before


def test_accuracy_restores_every_training_flag_when_the_forward_raises(digits):
    _, val = digits
    model = _Raises()
    before = _mixed_flags(model)
    with pytest.raises(RuntimeError, match="boom"):
        accuracy(model, val)
    assert [m.training for m in model.modules()] == before
    assert torch.is_grad_enabled()


def test_accuracy_of_an_empty_split_is_refused():
    empty = Split(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        accuracy(_model(), empty)


@pytest.mark.slow
def test_rotate_batch_drives_train_classifier_on_the_pretext_task(digits):
    train, _ = digits
    subset = Split(train.images[:200], train.labels[:200])
    torch.manual_seed(0)
    net = SmallResNet(num_classes=4, width=4)
    history = train_classifier(
        net, subset, epochs=3, lr=3e-3, progress=False, transform=lambda x, y: rotate_batch(x)
    )
    # Measured: 0.93, 0.65, 0.49 per epoch; a network that cannot tell rotations apart
    # stays at the chance loss ln 4 = 1.39.
    assert history.train_loss[-1] < 0.9 < np.log(4)
    assert history.train_loss[-1] < history.train_loss[0]
