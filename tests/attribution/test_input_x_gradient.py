"""Input x Gradient equals the input times its autograd gradient, and captum's."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import SmallCNN, assert_unchanged, get_model, snapshot
from netlens.attribution import METHODS
from netlens.testing import check_attribution

InputXGradient = METHODS["inputxgradient"]


def _images(n: int = 2, side: int = 32, seed: int = 6) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_input_times_its_autograd_gradient():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    x, targets = _images(side=12), [1, 4]
    inputs = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs)[[0, 1], targets].sum(), inputs)
    product = x * gradient
    for reduce, expected in [
        ("mean", product.abs().mean(1)),
        ("sum", product.abs().sum(1)),
        ("max", product.abs().amax(1)),
    ]:
        got = InputXGradient(model, channel_reduce=reduce)(x, targets)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    signed = InputXGradient(model, abs=False, channel_reduce="sum")(x, targets)
    assert torch.allclose(signed, product.sum(1), rtol=1e-5, atol=1e-7)


def test_equals_captum():
    captum = pytest.importorskip("captum.attr")
    model = get_model("resnet18")
    x = _images()
    before = snapshot(model)
    signed = InputXGradient(model, abs=False, channel_reduce="sum")(x, [3, 977])
    default = InputXGradient(model)(x, [3, 977])
    assert_unchanged(model, before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum.InputXGradient(model).attribute(x, target=[3, 977]).detach()
    scale = float(theirs.abs().max())
    assert torch.allclose(signed, theirs.sum(1), rtol=1e-5, atol=1e-5 * scale)
    assert torch.allclose(default, theirs.abs().amax(1), rtol=1e-5, atol=1e-5 * scale)


def test_options_are_checked():
    with pytest.raises(ValueError, match="channel_reduce"):
        InputXGradient(SmallCNN(), channel_reduce="median")
    with pytest.raises(TypeError, match="abs"):
        InputXGradient(SmallCNN(), abs=1)


def test_contract():
    report = check_attribution(InputXGradient)
    assert "many targets" in report.rules
