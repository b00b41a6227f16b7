"""What a course assignment asks for: saliency of the loss, per-example losses, short results."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from netlens import EmbeddingProbe, Saliency, fewest_units_to_flip, units_for_region
from netlens.datasets import load_digits
from netlens.models import History, SmallResNet, per_sample_loss


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_saliency_of_the_loss_is_the_gradient_of_each_images_cross_entropy(model, reduce):
    x = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([1, 4, 9])
    got = Saliency(model, objective="loss", abs=False, channel_reduce=reduce)(x, target)
    inputs = x.clone().requires_grad_()
    loss = F.cross_entropy(model(inputs), target, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    expected = gradient.sum(1) if reduce == "sum" else gradient.amax(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    # It differs from the saliency of the logit: the other classes' logits compete.
    logit = Saliency(model, abs=False, channel_reduce=reduce)(x, target)
    assert not torch.allclose(got, logit, rtol=1e-2) and not torch.allclose(got, -logit, rtol=1e-2)


def test_saliency_objective_is_checked(model):
    with pytest.raises(ValueError, match="'logit' or 'loss'"):
        Saliency(model, objective="probability")


def test_per_sample_loss_is_each_examples_cross_entropy():
    _, test = load_digits(size=16)
    torch.manual_seed(0)
    net = SmallResNet(width=4).train()
    loss = per_sample_loss(net, test, batch_size=100)
    assert net.training  # left as found
    net.eval()
    with torch.no_grad():
        expected = F.cross_entropy(net(test.images).double(), test.labels, reduction="none")
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-9)
    assert loss.dtype == torch.float64 and loss.shape == (len(test),)
    with pytest.raises(ValueError, match="batch_size"):
        per_sample_loss(net, test, batch_size=0)


def test_result_reprs_are_short(model):
    search = fewest_units_to_flip(model, torch.randn(1, 3, 64, 64), "layer4")
    text = repr(search)
    assert len(text) < 300 and "shape=(10,)" in text and f"count={search.count}" in text
    train, _ = load_digits(size=16)
    assert repr(train) == (
        f"Split(images=tensor(shape={tuple(train.images.shape)}, dtype=float32), "
        f"labels=tensor(shape=({len(train)},), dtype=int64))"
    )
    features = torch.rand(1, 16, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    assert len(repr(units_for_region(features, mask))) < 400
    history = History([0.6899667898747509], [0.9599999785423279], [], [], 0)
    assert repr(history) == (
        "History(train_loss=[0.69], train_accuracy=[0.96], val_loss=[], val_accuracy=[], "
        "best_epoch=0)"
    )


def test_accuracies_are_exact_fractions():
    images = torch.rand(25, 1, 16, 16)
    labels = torch.arange(25) % 3
    probe = EmbeddingProbe(SmallResNet(width=4)).fit(images, labels, progress=False)
    accuracy = probe.knn_accuracy(k=3)
    assert accuracy * 25 == round(accuracy * 25)  # a count over 25, in float64
    assert str(accuracy) == str(round(accuracy * 25) / 25)
