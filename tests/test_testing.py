"""netlens.testing: the contract holds for every built-in method and catches broken ones."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import get_model, quick_methods
from netlens.attribution import METHODS, Saliency
from netlens.hooks import eval_mode, hook_count
from netlens.testing import (
    RULES,
    ContractError,
    ContractReport,
    assert_unchanged,
    check_attribution,
    snapshot,
    tiny_cnn,
)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_keeps_the_contract_on_the_default_model(name):
    report = check_attribution(quick_methods()[name])
    assert isinstance(report, ContractReport)
    assert report.rules == tuple(RULES)
    assert report.skipped == ()
    assert report.method == METHODS[name].title


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_keeps_the_contract_on_resnet18(name):
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    check_attribution(quick_methods()[name], model, inputs=x)
    assert_unchanged(model, before)


def test_many_targets_failure_names_the_rule():
    class OneTargetOnly(Saliency):
        def __call__(self, x, target=None, *, size="input"):
            if isinstance(target, torch.Tensor) and target.dim() == 2:
                raise ValueError("one target per sample only")
            return super().__call__(x, target, size=size)

    with pytest.raises(ContractError, match=r"rule 'many targets': .*\(N, K\)") as caught:
        check_attribution(OneTargetOnly)
    assert caught.value.rule == "many targets"
    assert "ValueError: one target per sample only" in str(caught.value)


class LeavesHook(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        self.model.register_forward_hook(lambda module, args, output: None)
        return super().__call__(x, target, size=size)


class WrongShape(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        return super().__call__(x, target, size=size)[..., 1:, :]


class ChangesTraining(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        maps = super().__call__(x, target, size=size)
        self.model.train()
        return maps


class ZeroesGrads(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        self.model.zero_grad()
        return super().__call__(x, target, size=size)


class NormalisedOverBatch(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        maps = super().__call__(x, target, size=size)
        return maps / maps.amax()


class SwallowsErrors(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        try:
            return super().__call__(x, target, size=size)
        except RuntimeError:
            return torch.zeros(x.shape[0], *x.shape[-2:])


class AlwaysFloat64(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        return super().__call__(x, target, size=size).double()


class ForwardFirst(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        if isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point():
            with torch.no_grad(), eval_mode(self.model):
                self.model(x)
        return super().__call__(x, target, size=size)


class IgnoresTarget(Saliency):
    def __call__(self, x, target=None, *, size="input"):
        return super().__call__(x, None if isinstance(target, int) else target, size=size)


@pytest.mark.parametrize(
    ("broken", "rule"),
    [
        (LeavesHook, "no hooks left"),
        (WrongShape, "output shape"),
        (ChangesTraining, "training flags"),
        (ZeroesGrads, "parameter grads"),
        (NormalisedOverBatch, "batched equals one at a time"),
        (SwallowsErrors, "errors propagate"),
        (AlwaysFloat64, "output dtype and device"),
        (ForwardFirst, "errors before work"),
        (IgnoresTarget, "int target"),
    ],
)
def test_broken_method_fails_naming_the_rule(broken, rule):
    with pytest.raises(ContractError, match=f"^rule '{rule}': ") as caught:
        check_attribution(broken)
    assert caught.value.rule == rule
    assert isinstance(caught.value, AssertionError)


def test_hook_left_message_says_how_many_and_where():
    with pytest.raises(ContractError) as caught:
        check_attribution(LeavesHook)
    message = str(caught.value)
    assert "1 hook left on the model (the model: 1 forward)" in message
    assert "after a successful call" in message
    assert pickle.loads(pickle.dumps(caught.value)).rule == "no hooks left"


def test_model_restored_after_a_broken_rule():
    model = tiny_cnn()
    before = snapshot(model)
    for broken in (LeavesHook, ChangesTraining, ZeroesGrads):
        with pytest.raises(ContractError):
            check_attribution(broken, model)
        assert_unchanged(model, before)
    assert hook_count(model) == 0


def test_caller_random_state_left_as_found():
    state = torch.get_rng_state()
    check_attribution(Saliency)
    assert torch.equal(torch.get_rng_state(), state)


def test_constructor_kwargs_reach_the_method():
    report = check_attribution(METHODS["gradcam"], layer="features.3", skip=["finite output"])
    assert "finite output" in report.skipped
    assert check_attribution(Saliency, skip="finite output").skipped == ("finite output",)
    with pytest.raises(ValueError, match="channel_reduce"):
        check_attribution(Saliency, channel_reduce="median")


def test_unknown_rule_and_non_method_refused():
    with pytest.raises(ValueError, match="unknown rules"):
        check_attribution(Saliency, skip=["no such rule"])
    with pytest.raises(TypeError, match="not a subclass"):
        check_attribution(nn.Module)
    with pytest.raises(ValueError, match="N >= 2"):
        check_attribution(Saliency, inputs=torch.randn(1, 3, 16, 16))


def test_tiny_cnn_is_seeded_and_detects_train_mode():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = tiny_cnn(), tiny_cnn()
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), a.train()(x))


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda m: m[0].register_forward_pre_hook(lambda module, args: None), "no hooks left"),
        (lambda m: m[1].register_full_backward_hook(lambda *a: None), "no hooks left"),
        (lambda m: m[1].train(), "training flags"),
        (lambda m: m[1].running_mean.add_(1), "parameters and buffers"),
        (lambda m: m[0].weight.requires_grad_(False), "requires_grad flags"),
        (lambda m: setattr(m[0].weight, "grad", torch.ones_like(m[0].weight)), "parameter grads"),
        (lambda m: torch.set_grad_enabled(False), "grad mode"),
    ],
)
def test_assert_unchanged_names_what_changed(change, rule):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    grad_mode = torch.is_grad_enabled()
    before = snapshot(model)
    try:
        change(model)
        with pytest.raises(ContractError, match=f"^rule '{rule}': ") as caught:
            assert_unchanged(model, before)
        assert caught.value.rule == rule
    finally:
        torch.set_grad_enabled(grad_mode)


def test_snapshot_is_a_copy():
    model = nn.Sequential(nn.Linear(2, 2))
    before = snapshot(model)
    with torch.no_grad():
        model[0].weight.add_(1)
    assert not torch.equal(before.values["0.weight"], model[0].weight)


def test_import_is_light():
    code = (
        "import sys, netlens.testing; "
        "print(sorted(m for m in ('matplotlib', 'pytest') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
