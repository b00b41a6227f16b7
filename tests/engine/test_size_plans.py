"""Size plans: channels-last where convolutions read more than their weights, rules if they pay."""

from __future__ import annotations

import threading

import pytest
import torch
import torchvision
from torch import nn

from netlens import GradCAM, Saliency
from netlens._input_gradients import WORTH_A_RULE
from netlens._plan import Plan, channels_last_possible, forced_layout, size_plan
from netlens.attribution import IntegratedGradients, Occlusion, ScoreCAM
from netlens.testing import assert_unchanged, snapshot


class Wide(nn.Module):
    """Few weights, large activations: channels-last by the rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


class Deep(Wide):
    """Many weights, small activations: the input's layout by the rule."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 256, 3, padding=1)
        self.conv2 = nn.Conv2d(256, 8, 3, padding=1)


def _reads_and_weights(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """Elements read by and weights of every convolution call, counted independently."""
    counts = [0, 0]

    def count(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        counts[0] += args[0].numel()
        counts[1] += module.weight.numel()

    handles = [m.register_forward_pre_hook(count) for m in model.modules() if type(m) is nn.Conv2d]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return counts[0], counts[1]


def _layouts_seen(model: nn.Module, run) -> list[bool]:
    seen: list[bool] = []
    handle = model.conv2.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        run()
    finally:
        handle.remove()
    return seen


def _passes_seen(model: nn.Module, run) -> list[tuple[int, bool]]:
    """(batch, channels-last) of each pass through ``model.conv2`` while ``run()`` runs."""
    seen: list[tuple[int, bool]] = []

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append((len(args[0]), args[0].is_contiguous(memory_format=torch.channels_last)))

    handle = model.conv2.register_forward_pre_hook(record)
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize(("cls", "size", "expected"), [(Wide, 24, True), (Deep, 4, False)])
def test_the_first_call_measures_one_image_and_every_call_follows_the_rule(cls, size, expected):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(2, 3, size, size)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    reads, weights = _reads_and_weights(model, x)
    assert (reads >= weights) is expected
    assert (reads // 2 >= weights) is expected  # one image: the same side of the rule
    before = snapshot(model)
    method = GradCAM(model, "conv2")
    first = _passes_seen(model, lambda: method(x, 1, size=None))
    later = _passes_seen(model, lambda: method(x, 1, size=None))
    # One image, without gradients, in the input's layout; then the call, by the rule.
    assert first == [(1, False), (2, expected)] and later == [(2, expected)]
    assert_unchanged(model, before)
    # Another batch of that size follows from the same measurement; another size is measured.
    assert _passes_seen(model, lambda: method(x[:1], 1, size=None)) == [(1, expected)]
    wider = torch.randn(2, 3, size + 4, size + 4)
    assert _passes_seen(model, lambda: method(wider, 1, size=None))[0] == (1, False)


class Wider(Wide):
    """Channels-last by the rule, with enough channels that the two layouts round differently."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 5)


@pytest.mark.parametrize("name", ["gradcam", "cam", "saliency", "inputxgradient", "ig"])
def test_every_call_of_a_size_does_the_same_arithmetic_the_first_included(name):
    from netlens import CAM
    from netlens.attribution import InputXGradient

    torch.manual_seed(0)
    model = Wider().eval()
    x = torch.randn(2, 3, 24, 24)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    make = {
        "gradcam": lambda: GradCAM(model, "conv2"),
        "cam": lambda: CAM(model, "conv2"),
        "saliency": lambda: Saliency(model),
        "inputxgradient": lambda: InputXGradient(model),
        "ig": lambda: IntegratedGradients(model, steps=4),
    }[name]
    maps = []
    seen = _passes_seen(model, lambda: maps.extend(make()(x, [1, 3], size=None) for _ in range(2)))
    assert seen[0] == (1, False) and all(last for _, last in seen[1:])
    assert torch.equal(maps[0], maps[1])
    # The layouts do round differently here: equal bits are not a matter of course.
    with forced_layout(channels_last=False):
        given = make()(x, [1, 3], size=None)
    assert not torch.equal(maps[0], given)
    assert torch.allclose(maps[0], given, rtol=1e-5, atol=1e-6)


def test_the_rule_runs_resnet18_at_batch_1_as_given_and_at_batch_16_channels_last():
    model = torchvision.models.resnet18().eval()
    small, large = torch.randn(1, 3, 224, 224), torch.randn(16, 3, 224, 224)
    if not channels_last_possible(model, small):
        pytest.skip("no oneDNN on this CPU")
    for x, expected in [(small, False), (large, True)]:
        reads, weights = _reads_and_weights(model, x)
        assert (reads >= weights) is expected
    passes = []
    handle = model.conv1.register_forward_pre_hook(lambda m, args: passes.append(len(args[0])))
    try:
        with size_plan(model, large) as plan:
            assert plan == Plan(channels_last=True, rules=True)
        with size_plan(model, small) as plan:
            assert plan == Plan(channels_last=False, rules=False)
    finally:
        handle.remove()
    assert passes == [1]  # one image measured the size, for both batches


def test_the_rules_hooks_are_skipped_only_where_no_layer_input_reaches_their_size():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    largest = []
    handles = [
        m.register_forward_pre_hook(lambda m, args: largest.append(args[0].numel()))
        for m in model.modules()
        if type(m) in (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)
    ]
    with torch.no_grad():
        model(x)
        model(x[:, :, :160, :160].repeat(4, 1, 1, 1))
    for handle in handles:
        handle.remove()
    half = len(largest) // 2
    assert max(largest[:half]) < WORTH_A_RULE <= max(largest[half:])
    method = Saliency(model)
    hooks = []
    spy = model.layer1[0].conv1.register_forward_pre_hook(
        lambda m, args: hooks.append(len(m._forward_pre_hooks))
    )
    try:
        for batch in [x, x, x[:, :, :160, :160].repeat(4, 1, 1, 1)] * 2:
            method(batch, 1)
    finally:
        spy.remove()
    # Each new size is measured first, with the counting hooks; then batch 1 runs
    # without the rules' hooks, batch 4 at 160 px with them, from its first call on.
    measured, b1, b4 = True, False, True
    assert [n > 1 for n in hooks] == [measured, b1, b1, measured, b4, b1, b1, b4]


class NotOneImage(Wide):
    """Raises on a batch of one image: the measuring pass fails."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) == 1:
            raise RuntimeError("one image")
        return super().forward(x)


def test_where_the_measuring_pass_fails_the_call_counts_and_keeps_its_layout():
    model = NotOneImage().eval()
    x = torch.randn(2, 3, 24, 24)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    # A block that raises decides nothing: the next one measures again.
    with pytest.raises(RuntimeError, match="boom"), size_plan(model, x) as plan:
        assert plan == Plan()
        raise RuntimeError("boom")
    assert model.conv1._forward_pre_hooks == {} and model.conv2._forward_pre_hooks == {}
    with size_plan(model, x) as plan:
        assert plan == Plan()  # the safe plan, counting
        with torch.no_grad():
            model(x)
    # Wide is channels-last by the rule, but the size was counted in the input's
    # layout: it stays in it, so that every call does the same arithmetic.
    with size_plan(model, x) as plan:
        assert plan == Plan(channels_last=False, rules=False)
    assert model.conv1._forward_pre_hooks == {} and model.conv2._forward_pre_hooks == {}


def test_forced_layouts_give_equal_maps_and_stay_on_their_thread():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(2, 3, 48, 48)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    methods = [GradCAM(model, "layer3"), Saliency(model), IntegratedGradients(model, steps=3)]
    other: list[bool] = []
    with forced_layout(channels_last=True):
        last = [m(x, [1, 4], size=None) for m in methods]
        thread = threading.Thread(
            target=lambda: other.append(
                _layouts_seen(model.layer1[0], lambda: methods[0](x, 1, size=None))
            )
        )
        thread.start()
        thread.join()
    with forced_layout(channels_last=False):
        given = [m(x, [1, 4], size=None) for m in methods]
    # The other thread follows the rule: its measuring pass, then the call, as given.
    assert other == [[False, False]]
    for a, b in zip(last, given, strict=True):
        scale = b.abs().amax().clamp_min(1e-12)
        assert float((a - b).abs().amax() / scale) <= 1e-5


class ViewBelowTheLayer(nn.Module):
    """Merges channels with pixels by ``.view`` between convolutions: refuses channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = h.view(len(h), -1).view(h.shape)
        return self.fc(self.conv2(h).mean((2, 3)))


def test_cam_runs_channels_last_where_the_rule_says_and_equals_the_default_layout():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.randn(4, 3, 48, 48)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    from netlens import CAM

    with forced_layout(channels_last=True):
        seen = _layouts_seen(model.layer2[0], lambda: CAM(model)(x, [1, 2, 3, 4], size=None))
        last = CAM(model)(x, [[1, 2], [3, 4], [5, 6], [0, 1]], size=None)
    with forced_layout(channels_last=False):
        given = CAM(model)(x, [[1, 2], [3, 4], [5, 6], [0, 1]], size=None)
    # The pass that finds the default layers (one image, as given), then the call's.
    assert seen == [False, True]
    scale = given.abs().amax()
    assert float((last - given).abs().amax() / scale) <= 1e-5


def test_a_model_that_refuses_channels_last_runs_as_given_from_then_on():
    model = ViewBelowTheLayer().eval()
    x = torch.randn(2, 3, 64, 64)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        model.conv1(x.contiguous(memory_format=torch.channels_last)).view(2, -1)
    method = GradCAM(model, "conv2")
    passes = []
    handle = model.conv1.register_forward_pre_hook(lambda m, args: passes.append(1))
    try:
        maps = [method(x, 1, size=None) for _ in range(3)]
    finally:
        handle.remove()
    # One image measured; channels-last refused, then as given; as given at once, twice.
    assert len(passes) == 1 + 2 + 1 + 1
    with size_plan(model, x) as plan:
        assert not plan.channels_last
    assert torch.equal(maps[0], maps[1]) and torch.equal(maps[0], maps[2])


def _seeded(cls: type[nn.Module], shape: tuple[int, ...]) -> tuple[nn.Module, torch.Tensor]:
    """A model of ``cls`` in eval mode and images of ``shape``; skips without oneDNN."""
    torch.manual_seed(0)
    model, x = cls().eval(), torch.randn(shape)
    if not channels_last_possible(model, x):
        pytest.skip("no oneDNN on this CPU")
    return model, x


def _perturbation(name: str, model: nn.Module):
    if name == "occlusion":  # 9 windows and the image: batches of 8 and 2 per image
        return Occlusion(model, window=2, stride=1, batch_size=8)
    return ScoreCAM(model, "conv2", batch_size=12)  # 2 x 8 masked images: 12 and 4


@pytest.mark.parametrize("name", ["occlusion", "scorecam"])
def test_perturbed_batches_follow_the_plan_of_a_full_batch_the_last_one_too(name):
    model, x = _seeded(Deep, (2, 3, 4, 4))
    reads, weights = _reads_and_weights(model, x[:1])
    # A full batch reads more than the weights, the last (smaller) one would not.
    assert 8 * reads >= weights and 4 * reads < weights
    maps = []
    first = _passes_seen(model, lambda: maps.append(_perturbation(name, model)(x, [1, 3])))
    later = _passes_seen(model, lambda: maps.append(_perturbation(name, model)(x, [1, 3])))
    if name == "occlusion":
        # One image to plan, then each image with its occluded copies.
        assert first == [(1, False)] + [(8, True), (2, True)] * 2
        assert later == [(8, True), (2, True)] * 2
    else:
        # The feature map of the batch as given, one image to plan, the masked images.
        assert first == [(2, False), (1, False), (12, True), (4, True)]
        assert later == [(2, False), (12, True), (4, True)]
    assert torch.equal(maps[0], maps[1])
    with forced_layout(channels_last=False):
        given = _perturbation(name, model)(x, [1, 3])
    assert torch.allclose(maps[0], given, rtol=1e-4, atol=1e-6 * float(given.abs().max()))


@pytest.mark.parametrize("name", ["occlusion", "scorecam"])
def test_perturbed_batches_of_a_model_that_refuses_channels_last_run_as_given(name):
    model, x = _seeded(ViewBelowTheLayer, (1, 3, 64, 64))
    make = {
        "occlusion": lambda: Occlusion(model, window=32),
        "scorecam": lambda: ScoreCAM(model, "conv2"),
    }[name]
    with size_plan(model, x, images=64) as plan:
        assert plan.channels_last  # the rule says channels-last for the batches...
    maps = make()(x, 2)
    # ... the model refused it once, and its batches run as given from then on.
    with size_plan(model, x, images=64) as plan:
        assert not plan.channels_last
    seen = _passes_seen(model, lambda: make()(x, 2))
    assert seen and not any(last for _, last in seen)
    with forced_layout(channels_last=False):
        assert torch.equal(maps, make()(x, 2))
