"""Guided Backprop and Guided Grad-CAM against guided ReLUs written here, captum, and errors."""

from __future__ import annotations

import contextlib
import copy
import threading
import types
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from conftest import SmallCNN, assert_unchanged, get_model, snapshot
from netlens._input_gradients import LAYER_TYPES
from netlens.attribution import METHODS
from netlens.attribution.base import Targets
from netlens.attribution.guided_backprop import GuidedRuleError
from netlens.errors import NetlensError
from netlens.hooks import hook_count, input_gradients_only
from netlens.testing import check_attribution

GuidedBackprop = METHODS["guidedbackprop"]
GuidedGradCAM = METHODS["guidedgradcam"]
Saliency = METHODS["saliency"]
GradCAM = METHODS["gradcam"]


class ReferenceGuidedReLU(torch.autograd.Function):
    """The paper's rule, written independently: pass dL/dy where both x > 0 and dL/dy > 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.where((x > 0) & (grad > 0), grad, torch.zeros_like(grad))


class ReferenceReLU(nn.Module):
    def forward(self, x):
        return ReferenceGuidedReLU.apply(x)


def guided_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.ReLU`` modules are :class:`ReferenceReLU` modules."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, ReferenceReLU())
    return model


def reference_gradient(model: nn.Module, x: torch.Tensor, targets) -> torch.Tensor:
    """d logit / d input with plain autograd (for a model made of reference ReLUs)."""
    inputs = x.clone().requires_grad_(True)
    logits = model(inputs)
    rows = torch.arange(x.shape[0])
    (gradient,) = torch.autograd.grad(logits[rows, torch.as_tensor(targets)].sum(), inputs)
    return gradient


def _random_batchnorm(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(
                    0.2 * torch.randn(module.num_features, generator=generator)
                )
                module.running_var.copy_(0.5 + torch.rand(module.num_features, generator=generator))
    return model.eval()


class EveryReLU(nn.Module):
    """ReLUs of every kind: a shared in-place module called twice, functional ones, a view."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(16, 5)
        self.reference = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = ReferenceGuidedReLU.apply if self.reference else None
        h = self.relu(self.bn(self.conv1(x)))
        h = self.relu(self.conv2(h) + h)
        g = self.conv3(h)
        if relu is None:
            F.relu(g[:, :4], inplace=True)  # in place on a view
            a, b = torch.relu(g), (g - 0.1).relu()
            pooled = torch.cat([a.mean((2, 3)), F.relu(b).amax((2, 3))], 1)
        else:
            g = torch.cat([relu(g[:, :4]), g[:, 4:]], 1)
            a, b = relu(g), relu(g - 0.1)
            pooled = torch.cat([a.mean((2, 3)), relu(b).amax((2, 3))], 1)
        return self.fc(pooled)


def _every_relu() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = _random_batchnorm(EveryReLU())
    reference = guided_copy(model)
    reference.reference = True
    return model, reference


def _images(n: int = 2, side: int = 16, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-5) -> bool:
    return torch.allclose(ours, theirs, rtol=rtol, atol=rtol * float(theirs.abs().max()))


def _captum(name: str):
    return getattr(pytest.importorskip("captum.attr"), name)


# --- the rule on every kind of ReLU ------------------------------------------------


def test_guided_gradient_equals_a_network_of_reference_guided_relus():
    model, reference = _every_relu()
    x, targets = _images(), [1, 4]
    before = snapshot(model)
    guided = GuidedBackprop(model)
    gradient = guided.input_gradients(x, Targets.parse(targets, 2))[0]
    assert_unchanged(model, before)
    expected = reference_gradient(reference, x, targets)
    assert _close(gradient, expected)
    assert not _close(gradient, reference_gradient(model, x, targets), rtol=1e-2)  # not plain
    signed = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, targets)
    assert _close(signed, expected.sum(1))
    assert _close(guided(x, targets), expected.abs().amax(1))


def test_input_gradients_only_guided_keeps_masks_and_leaves_nothing():
    model, reference = _every_relu()
    x = _images()
    hooks, grad_mode = hook_count(model), torch.is_grad_enabled()
    inputs = x.clone().requires_grad_(True)
    with input_gradients_only(model, guided=True):
        logits = model(inputs)
    assert hook_count(model) == hooks and torch.is_grad_enabled() == grad_mode
    assert not torch._C._is_torch_function_mode_enabled()
    (gradient,) = torch.autograd.grad(logits[:, 2].sum(), inputs)
    assert _close(gradient, reference_gradient(reference, x, [2, 2]))
    # After the block, every ReLU has its ordinary gradient again.
    plain = model.eval()
    inputs = x.clone().requires_grad_(True)
    (after,) = torch.autograd.grad(plain(inputs)[:, 2].sum(), inputs)
    assert _close(after, reference_gradient(model, x, [2, 2]))


def test_guided_without_rules_hooks_only_the_relus_and_gives_the_same_gradient():
    model, reference = _every_relu()
    x = _images()
    seen = [
        module.register_forward_pre_hook(lambda module, args: None)
        for name, module in model.named_modules()
        if name
    ]
    grads = []
    for rules in (True, False):
        inputs = x.clone().requires_grad_(True)
        with input_gradients_only(model, guided=True, rules=rules):
            pre_hooks = {
                name: len(module._forward_pre_hooks) for name, module in model.named_modules()
            }
            logits = model(inputs)
        grads.append(torch.autograd.grad(logits[:, 2].sum(), inputs)[0])
        relus = {n for n, m in model.named_modules() if isinstance(m, nn.ReLU)}
        others = {n for n, m in model.named_modules() if type(m) in LAYER_TYPES} - relus
        assert others, "the test network has convolutions and BatchNorm layers"
        # One pre-hook of the test's own on every module; the rules add one on the others.
        assert all(pre_hooks[n] == (2 if rules else 1) for n in others), rules
        assert all(pre_hooks[n] == 2 for n in relus)  # the guided check's
    for handle in seen:
        handle.remove()
    assert _close(grads[0], grads[1])
    assert _close(grads[1], reference_gradient(reference, x, [2, 2]))


def test_guided_relus_save_only_boolean_masks():
    torch.manual_seed(0)
    model = _random_batchnorm(SmallCNN())
    x = _images(side=12)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, tuple[torch.dtype, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = (t.dtype, t.numel())
        return t

    inputs = x.clone().requires_grad_(True)
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        input_gradients_only(model, guided=True),
    ):
        logits = model(inputs)
    torch.autograd.grad(logits[:, 0].sum(), inputs)
    # Beside the masks: per-channel BatchNorm scales and the head's (2, 8) input.
    large = [dtype for dtype, numel in saved.values() if numel > 16]
    assert large and all(dtype == torch.bool for dtype in large)


def _saved_bytes(model: nn.Module, x: torch.Tensor, block) -> int:
    """Bytes of the distinct storages (parameters aside) autograd keeps for one backward pass."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    inputs = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), block(model):
        logits = model(inputs)
    torch.autograd.grad(logits[:, 0].sum(), inputs)
    return sum(saved.values())


def test_guided_relus_left_to_autograds_layers_keep_their_output_not_a_mask_on_top():
    # Where the layers after the ReLUs run on autograd (no rules, or inputs below
    # min_elements) they keep the ReLUs' outputs for their weight gradients; the guided
    # rule keeps those same outputs, so it costs no memory beyond autograd's.
    torch.manual_seed(0)
    model = _random_batchnorm(SmallCNN())
    x = _images(side=12)
    plain = _saved_bytes(model, x, lambda m: contextlib.nullcontext())
    no_rules = _saved_bytes(model, x, lambda m: input_gradients_only(m, guided=True, rules=False))
    small = _saved_bytes(
        model, x, lambda m: input_gradients_only(m, guided=True, min_elements=x.numel() * 100)
    )
    masks = _saved_bytes(model, x, lambda m: input_gradients_only(m, guided=True))
    assert no_rules == plain and small == plain
    assert masks < plain / 2  # the rules: masks instead of the layers' inputs
    inputs = x.clone().requires_grad_(True)
    with input_gradients_only(model, guided=True, rules=False):
        logits = model(inputs)
    (gradient,) = torch.autograd.grad(logits[:, 0].sum(), inputs)
    assert _close(gradient, reference_gradient(guided_copy(model), x, [0, 0]))


def test_the_rule_acts_only_on_the_calling_thread():
    model, _ = _every_relu()
    x = _images()

    def plain_gradient() -> torch.Tensor:
        inputs = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(inputs)[:, 3].sum(), inputs)[0]

    expected = plain_gradient()
    seen = []
    with input_gradients_only(model, guided=True):
        thread = threading.Thread(target=lambda: seen.append(plain_gradient()))
        thread.start()
        thread.join()
    assert len(seen) == 1 and torch.equal(seen[0], expected)


def test_backward_hooks_on_a_relu_see_and_change_the_guided_gradient():
    torch.manual_seed(0)
    model = _random_batchnorm(SmallCNN())
    reference = guided_copy(model)
    x, targets = _images(side=12), [0, 3]
    seen: dict[str, list[torch.Tensor]] = {"ours": [], "reference": []}

    def hook(key):
        def double(module, grad_input, grad_output):
            seen[key].append(grad_input[0])
            return (2 * grad_input[0],)

        return double

    handles = [
        model.features[2].register_full_backward_hook(hook("ours")),
        reference.features[2].register_full_backward_hook(hook("reference")),
    ]
    try:
        ours = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, targets)
        expected = reference_gradient(reference, x, targets).sum(1)
    finally:
        for handle in handles:
            handle.remove()
    assert _close(ours, expected)
    assert len(seen["ours"]) == 1 and _close(seen["ours"][0], seen["reference"][0])
    assert (seen["ours"][0] >= 0).all()


def test_global_backward_hooks_see_and_change_the_guided_gradient():
    torch.manual_seed(0)
    model = _random_batchnorm(SmallCNN())
    reference = guided_copy(model)
    x, targets = _images(side=12), [0, 3]

    def halve(module, grad_input, grad_output):
        if isinstance(module, (nn.ReLU, ReferenceReLU)):
            return (0.5 * grad_input[0],)
        return None

    handle = torch.nn.modules.module.register_module_full_backward_hook(halve)
    try:
        ours = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, targets)
        expected = reference_gradient(reference, x, targets).sum(1)
    finally:
        handle.remove()
    assert _close(ours, expected)
    assert not _close(ours, GuidedBackprop(model, abs=False, channel_reduce="sum")(x, targets))


def test_an_in_place_relu_on_the_input_is_autograds_error_as_for_saliency():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 3))
    for method in (GuidedBackprop, Saliency):
        with pytest.raises(RuntimeError, match="leaf Variable"):
            method(model.eval())(_images(side=5))


def test_a_network_without_relus_gets_its_plain_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.GELU(), nn.Conv2d(6, 6, 3), nn.SiLU(), nn.Flatten(), nn.LazyLinear(4)
    )
    x = _images(side=10)
    model(x)  # materialise the lazy layer
    model.eval()
    guided = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, [1, 2])
    assert torch.equal(guided, Saliency(model, abs=False, channel_reduce="sum")(x, [1, 2]))


# --- where the rule cannot apply: errors naming the ReLU ---------------------------


class Checkpointed(SmallCNN):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.reentrant = reentrant

    def forward(self, x):
        h = checkpoint(self.features, x, use_reentrant=self.reentrant)
        return self.fc(h.mean((2, 3)))


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_relu_inside_a_checkpoint_is_refused_by_name(reentrant):
    torch.manual_seed(0)
    model = Checkpointed(reentrant).eval()
    x = _images(side=12).requires_grad_(reentrant)  # a reentrant checkpoint needs it
    before = snapshot(model)
    with pytest.raises(GuidedRuleError, match="ReLU 'features.2'.*checkpoint"):
        GuidedBackprop(model)(x)
    assert_unchanged(model, before)
    assert issubclass(GuidedRuleError, NetlensError)


def test_a_functional_relu_inside_a_checkpoint_is_refused_with_its_place():
    class Functional(SmallCNN):
        def forward(self, x):
            h = checkpoint(lambda t: F.relu(self.features[0](t)), x, use_reentrant=False)
            return self.fc(self.features[3](h).mean((2, 3)))

    with pytest.raises(GuidedRuleError, match=r"test_guided.py:\d+.*checkpoint"):
        GuidedBackprop(Functional().eval())(_images(side=12))


def test_a_relu_module_that_computes_no_relu_is_refused():
    class Clamped(nn.ReLU):
        def forward(self, x):
            return x.clamp(min=0)

    model = SmallCNN().eval()
    model.features[4] = Clamped()
    with pytest.raises(GuidedRuleError, match="ReLU 'features.4' \\(Clamped\\)"):
        GuidedBackprop(model)(_images(side=12))
    model.features[4] = nn.ReLU()


def test_a_torchscript_module_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(net.eval(), torch.randn(1, 3, 10, 10))
    with pytest.raises(GuidedRuleError, match="TorchScript"):
        GuidedBackprop(nn.Sequential(scripted))(_images(side=10))


def test_a_relu_under_the_models_own_no_grad_passes_no_gradient_and_is_allowed():
    class Masked(SmallCNN):
        def forward(self, x):
            h = self.features(x)
            with torch.no_grad():
                gate = F.relu(h).gt(0).float()
            return self.fc((h * gate).mean((2, 3)))

    torch.manual_seed(0)
    model = _random_batchnorm(Masked())
    reference = guided_copy(model)
    x = _images(side=12)
    ours = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, [0, 1])
    assert _close(ours, reference_gradient(reference, x, [0, 1]).sum(1))


# --- peers --------------------------------------------------------------------------


def test_equals_captum_on_a_resnet_with_its_shared_in_place_relu():
    model = get_model("resnet18")
    x = _images(side=32)
    ours = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, [3, 977])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _captum("GuidedBackprop")(model).attribute(x, target=[3, 977]).detach()
    assert _close(ours, theirs.sum(1))
    assert _close(GuidedBackprop(model)(x, [3, 977]), theirs.abs().amax(1))


def test_densenets_functional_relu_gets_the_rule_that_captum_misses(monkeypatch):
    import torchvision.models.densenet as densenet

    model = get_model("densenet121")
    x = _images(n=1, side=32)
    ours = GuidedBackprop(model, abs=False, channel_reduce="sum")(x, 7)
    # The reference: nn.ReLU modules and DenseNet's F.relu(features) both guided.
    reference = guided_copy(model)
    functional = types.SimpleNamespace(**vars(F))
    functional.relu = lambda t, inplace=False: ReferenceGuidedReLU.apply(t)
    monkeypatch.setattr(densenet, "F", functional)
    expected = reference_gradient(reference, x, [7]).sum(1)
    monkeypatch.undo()
    assert _close(ours, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _captum("GuidedBackprop")(model).attribute(x, target=7).detach().sum(1)
    assert not _close(ours, theirs, rtol=1e-2)


# --- Guided Grad-CAM ----------------------------------------------------------------


def test_guided_gradcam_is_the_guided_gradient_times_the_upsampled_gradcam_map():
    torch.manual_seed(0)
    model = _random_batchnorm(SmallCNN())
    reference = guided_copy(model)
    x, targets = _images(side=12), [2, 4]
    guided = reference_gradient(reference, x, targets)
    # Grad-CAM with plain autograd at features.3 (8 x 8 for a 12 x 12 input).
    inputs = x.clone().requires_grad_(True)
    found = {}
    handle = model.features[3].register_forward_hook(lambda m, a, out: found.setdefault("a", out))
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits[[0, 1], targets].sum(), found["a"])
    cam = F.relu((grad.mean((2, 3), keepdim=True) * found["a"]).sum(1, keepdim=True)).detach()
    for upsample in ("bilinear", "nearest"):
        up = F.interpolate(cam, size=(12, 12), mode=upsample)
        method = GuidedGradCAM(
            model, "features.3", abs=False, channel_reduce="sum", upsample=upsample
        )
        assert _close(method(x, targets), (guided * up).sum(1))
        default = GuidedGradCAM(model, "features.3", upsample=upsample)(x, targets)
        assert _close(default, (guided * up).abs().amax(1))


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
def test_guided_gradcam_equals_captums(upsample):
    model = get_model("resnet18")
    x = _images(side=64)
    ours = GuidedGradCAM(model, "layer3", abs=False, channel_reduce="sum", upsample=upsample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = (
            _captum("GuidedGradCam")(model, model.layer3)
            .attribute(x, target=[3, 977], interpolate_mode=upsample)
            .detach()
        )
    assert _close(ours(x, [3, 977]), theirs.sum(1))
    assert ours(x, [3, 977], size=None).shape == (2, 64, 64)  # the input's resolution


def test_guided_gradcam_options_are_checked():
    model = SmallCNN().eval()
    with pytest.raises(ValueError, match="upsample"):
        GuidedGradCAM(model, upsample="bicubic")
    with pytest.raises(ValueError, match="channel_reduce"):
        GuidedGradCAM(model, channel_reduce="min")
    method = GuidedGradCAM(model)
    assert method.layer_name is None
    method(_images(side=12))
    assert method.layer_name == "features"


@pytest.mark.parametrize("name", ["guidedbackprop", "guidedgradcam"])
def test_contract(name):
    report = check_attribution(METHODS[name])
    assert "no hooks left" in report.rules
