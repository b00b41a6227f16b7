"""Integrated Gradients: completeness, captum's rules, batching, baselines and targets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SmallCNN, assert_unchanged, get_model, snapshot
from netlens.attribution import METHODS
from netlens.attribution.integrated_gradients import QUADRATURES, quadrature
from netlens.testing import check_attribution

IntegratedGradients = METHODS["integratedgradients"]
InputXGradient = METHODS["inputxgradient"]


def _smooth(dtype: torch.dtype = torch.float64) -> nn.Module:
    """A small network with smooth activations (tanh, softplus): F' is smooth along the path."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.Softplus(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    return net.to(dtype).eval()


def _images(n: int = 2, side: int = 16, seed: int = 1, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _gaps(net: nn.Module, x: torch.Tensor, targets: list[int], method: str, steps: int):
    """|sum of the signed map - (f(x) - f(0))| / |f(x) - f(0)|, per image."""
    ig = IntegratedGradients(net, steps=steps, method=method, abs=False, channel_reduce="sum")
    total = ig(x, targets).sum((1, 2))
    rows = torch.arange(len(targets))
    with torch.no_grad():
        change = net(x)[rows, targets] - net(torch.zeros_like(x))[rows, targets]
    return ((total - change).abs() / change.abs()).max().item()


# --- the quadrature rules ----------------------------------------------------


@pytest.mark.parametrize("method", QUADRATURES)
def test_every_rule_integrates_polynomials_as_its_order_says(method):
    n = 6
    alphas, weights = quadrature(method, n)
    assert alphas.shape == weights.shape == (n,)
    assert (alphas >= 0).all() and (alphas <= 1).all()
    assert np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-14)
    exact = {  # the highest degree integrated exactly
        "gausslegendre": 2 * n - 1,
        "riemann_middle": 1,
        "riemann_trapezoid": 1,
        "riemann_left": 0,
        "riemann_right": 0,
    }[method]
    for degree in range(exact + 1):
        assert np.isclose((weights * alphas**degree).sum(), 1 / (degree + 1), atol=1e-13)
    beyond = (weights * alphas ** (exact + 1)).sum()
    assert abs(beyond - 1 / (exact + 2)) > 1e-10


def test_bad_rules_steps_and_baselines_are_refused():
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="gausslegendre"):
        IntegratedGradients(model, method="simpson")
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(model, steps=0)
    with pytest.raises(ValueError, match=">= 2"):
        IntegratedGradients(model, steps=1, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="batch_size"):
        IntegratedGradients(model, batch_size=0)
    with pytest.raises(TypeError, match="baseline"):
        IntegratedGradients(model, baseline="black")
    with pytest.raises(ValueError, match="does not broadcast"):
        IntegratedGradients(model, baseline=torch.zeros(3, 5, 1))(torch.randn(2, 3, 12, 12))


# --- completeness: the map sums to f(x) - f(baseline) up to the rule's error ----


def test_gauss_legendre_completeness_on_a_smooth_network():
    net, x = _smooth(), _images().double()
    assert _gaps(net, x, [1, 3], "gausslegendre", 64) < 1e-10
    assert _gaps(net, x, [1, 3], "gausslegendre", 4) > 1e-4  # the error is the rule's


@pytest.mark.parametrize(
    ("method", "order"),
    [("riemann_left", 1), ("riemann_right", 1), ("riemann_middle", 2), ("riemann_trapezoid", 2)],
)
def test_riemann_gaps_fall_with_the_rules_order(method, order):
    # Doubling the steps divides the gap by 2 (first order) or 4 (second order).
    net, x = _smooth(), _images().double()
    coarse, fine = _gaps(net, x, [1, 3], method, 32), _gaps(net, x, [1, 3], method, 64)
    assert 0.9 * 2**order < coarse / fine < 1.1 * 2**order
    assert fine < (0.1 if order == 1 else 1e-3)


def test_one_right_riemann_step_from_zero_is_input_times_gradient():
    model = get_model("resnet18")
    x = _images(side=32, scale=1.0)
    ig = IntegratedGradients(
        model, steps=1, method="riemann_right", abs=False, channel_reduce="sum"
    )
    expected = InputXGradient(model, abs=False, channel_reduce="sum")(x, [4, 9])
    assert torch.allclose(ig(x, [4, 9]), expected, rtol=1e-5, atol=1e-6 * expected.abs().max())


# --- equal to captum, batch sizes, baselines, targets --------------------------


def _captum_ig(model, x, targets, steps, method, baseline=0.0):
    captum = pytest.importorskip("captum.attr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (
            captum.IntegratedGradients(model)
            .attribute(x, baselines=baseline, target=targets, n_steps=steps, method=method)
            .detach()
        )


@pytest.mark.parametrize("method", QUADRATURES)
def test_every_rule_equals_captums(method):
    model = get_model("resnet18")
    x, targets, steps = _images(side=32, scale=1.0), [4, 9], 6
    before = snapshot(model)
    ours = IntegratedGradients(
        model, steps=steps, method=method, abs=False, channel_reduce="sum", batch_size=5
    )(x, targets)
    assert_unchanged(model, before)
    theirs = _captum_ig(model, x, targets, steps, method).sum(1)
    if method == "riemann_trapezoid":
        # captum's trapezoid weights are 1/n, halved at both ends: they sum to (n - 1) / n.
        assert not torch.allclose(ours, theirs, rtol=1e-3, atol=0)
        ours = ours * (steps - 1) / steps
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max())


def test_default_map_is_captums_absolute_maximum_over_channels():
    model = get_model("resnet18")
    x = _images(side=32, scale=1.0)
    ours = IntegratedGradients(model, steps=5)(x, [4, 9])
    theirs = _captum_ig(model, x, [4, 9], 5, "gausslegendre").abs().amax(1)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max())


def test_batch_size_does_not_change_the_map():
    model = get_model("resnet18")
    x = _images(n=3, side=32, scale=1.0)
    maps = [
        IntegratedGradients(model, steps=5, batch_size=size, abs=False)(x, [4, 9, 1])
        for size in (1, 4, 15, 100)
    ]
    for other in maps[1:]:
        assert torch.allclose(other, maps[0], rtol=1e-5, atol=1e-6 * maps[0].abs().max())


def test_a_baseline_tensor_broadcasts_and_equals_captums():
    model = get_model("resnet18")
    x = _images(side=32, scale=1.0)
    baseline = torch.tensor([0.5, -0.25, 1.0]).view(3, 1, 1)
    ours = IntegratedGradients(model, steps=6, baseline=baseline, abs=False, channel_reduce="sum")
    theirs = _captum_ig(model, x, [4, 9], 6, "gausslegendre", baseline.expand_as(x)).sum(1)
    got = ours(x, [4, 9])
    assert torch.allclose(got, theirs, rtol=1e-5, atol=1e-5 * theirs.abs().max())
    # A constant tensor is the float baseline; x itself as the baseline is a zero-length path.
    constant = IntegratedGradients(model, steps=6, baseline=torch.full((1, 3, 1, 1), 0.5))
    assert torch.allclose(constant(x, 4), IntegratedGradients(model, steps=6, baseline=0.5)(x, 4))
    assert torch.count_nonzero(IntegratedGradients(model, steps=2, baseline=x)(x, 4)) == 0


def test_targets_are_resolved_on_the_inputs_own_logits():
    model = get_model("resnet18")
    x = _images(side=32, scale=1.0)
    seen = []

    def lowest(logits):
        seen.append(logits)
        return logits.argmin(1)

    ig = IntegratedGradients(model, steps=4, batch_size=3)
    maps = ig(x, lowest)
    with torch.no_grad():
        logits = model(x)
    assert len(seen) == 1 and torch.allclose(seen[0], logits, rtol=1e-4, atol=1e-5)
    assert torch.equal(maps, ig(x, logits.argmin(1)))
    assert torch.equal(ig(x), ig(x, logits.argmax(1)))


def test_given_classes_are_resolved_once_per_call(monkeypatch):
    from netlens.attribution.base import Targets

    resolved = []
    original = Targets.resolve

    def counted(self, logits):
        resolved.append(logits.shape)
        return original(self, logits)

    monkeypatch.setattr(Targets, "resolve", counted)
    model = SmallCNN().eval()
    IntegratedGradients(model, steps=4, batch_size=3)(_images(side=12), [1, 2])
    assert len(resolved) == 1, resolved  # on the first batch's logits, of 3 batches


def test_many_targets_equal_one_column_at_a_time():
    model = SmallCNN().eval()
    x = _images(side=12)
    ig = IntegratedGradients(model, steps=4, batch_size=3, abs=False)
    table = torch.tensor([[0, 4, 2], [3, 3, 1]])
    maps = ig(x, table)
    assert maps.shape == (2, 3, 12, 12)
    for k in range(3):
        assert torch.allclose(maps[:, k], ig(x, table[:, k]), rtol=1e-5, atol=1e-7)


def test_progress_bar_reports_the_batches(capsys):
    model = SmallCNN().eval()
    IntegratedGradients(model, steps=4, batch_size=3, progress=True)(_images(side=12))
    assert "3/3" in capsys.readouterr().err


def test_contract():
    report = check_attribution(IntegratedGradients, steps=4, batch_size=5)
    assert "batched equals one at a time" in report.rules
