"""A session acts only on the passes its own call runs: threads, failed passes, re-entry."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from conftest import assert_unchanged, get_model, snapshot
from netlens import FeatureExtractor, GradCAM, Saliency, UnitAblator
from netlens.errors import LayerNotReachedError, RepeatedCallError


def _in_threads(jobs, repeats: int = 6):
    """Run each job ``repeats`` times in its own thread, started together; return results."""
    barrier = threading.Barrier(len(jobs))
    results: list[list[object]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(repeats):
                results[i].append(jobs[i]())
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def net_and_x():
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    return model, x


def test_a_plain_forward_in_another_thread_is_untouched_by_an_ablation(net_and_x):
    model, x = net_and_x
    with torch.no_grad():
        plain = model(x)
    ablator = UnitAblator(model, "layer4", list(range(0, 512, 2)))
    ablated = ablator(x)
    assert not torch.allclose(plain, ablated)

    def forward():
        with torch.no_grad():
            return model(x)

    ablations, forwards = _in_threads([lambda: ablator(x), forward], repeats=10)
    for logits in forwards:
        assert not logits.requires_grad
        assert torch.equal(logits, plain)
    for logits in ablations:
        assert torch.equal(logits, ablated)


def test_a_with_block_in_one_thread_does_not_act_on_another_threads_forward(net_and_x):
    model, x = net_and_x
    with torch.no_grad():
        plain = model(x)
    started, done = threading.Event(), threading.Event()
    seen: list[torch.Tensor] = []

    def other() -> None:
        started.wait()
        with torch.no_grad():
            seen.append(model(x))
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with UnitAblator(model, "layer4", list(range(256))), torch.no_grad():
        started.set()
        done.wait()
        inside = model(x)
    thread.join()
    assert torch.equal(seen[0], plain)
    assert not torch.allclose(inside, plain)


@pytest.mark.parametrize(
    "method",
    [
        lambda m, x: GradCAM(m, "layer3")(x, [1, 2], size=None),
        lambda m, x: Saliency(m)(x, [1, 2]),
        lambda m, x: FeatureExtractor(m, ["layer2", "layer4"])(x)["layer4"],
        lambda m, x: UnitAblator(m, "layer3", [0, 1, 2])(x),
    ],
    ids=["GradCAM", "Saliency", "FeatureExtractor", "UnitAblator"],
)
def test_two_threads_on_one_model_give_their_single_thread_results(net_and_x, method):
    model, x = net_and_x
    other_x = x.flip(0) + 0.5
    before = snapshot(model)
    expected = method(model, x), method(model, other_x)
    first, second = _in_threads([lambda: method(model, x), lambda: method(model, other_x)])
    for got in first:
        assert torch.allclose(got, expected[0], rtol=1e-5, atol=1e-6)
    for got in second:
        assert torch.allclose(got, expected[1], rtol=1e-5, atol=1e-6)
    assert_unchanged(model, before)


def test_methods_in_threads_on_a_train_mode_model_restore_it_once():
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    model.train()
    try:
        before = snapshot(model)
        _in_threads(
            [lambda: GradCAM(model)(x), lambda: Saliency(model)(x), lambda: GradCAM(model)(x)],
            repeats=3,
        )
        assert_unchanged(model, before)
    finally:
        model.eval()


def test_a_forward_that_raises_inside_a_with_block_does_not_poison_later_passes(net_and_x):
    model, x = net_and_x
    fx = FeatureExtractor(model, ["layer3"])
    expected = fx(x)["layer3"]
    with fx:
        with pytest.raises(RuntimeError):
            model(x[:, :2])  # two channels: conv1 raises after the root's pre-hook ran
        model(x)
        model(x)
    assert torch.equal(fx.features["layer3"], expected)


def test_an_ablation_block_survives_a_failed_pass(net_and_x):
    model, x = net_and_x
    ablator = UnitAblator(model, "layer3", [0, 4])
    expected = ablator(x)
    with ablator, torch.no_grad():
        with pytest.raises(RuntimeError):
            model(x[:, :1])
        got = model(x)
    assert torch.equal(got, expected)


def test_a_method_called_from_a_users_hook_does_not_disturb_an_outer_extractor(net_and_x):
    model, x = net_and_x
    expected = FeatureExtractor(model, "layer4")(x)["layer4"]
    expected_map = GradCAM(model, "layer4")(x[:1], 0, size=None)
    inner: list[torch.Tensor] = []
    calls: list[int] = []

    def hook(module, args, output):
        if not calls:  # the inner call's own forward pass runs this hook too
            calls.append(1)
            inner.append(GradCAM(model, "layer4")(x[:1], 0, size=None))

    handle = model.layer2.register_forward_hook(hook)
    try:
        fx = FeatureExtractor(model, "layer4")
        with fx, torch.no_grad():
            model(x)
    finally:
        handle.remove()
    assert torch.equal(fx.features["layer4"], expected)
    assert torch.allclose(inner[0], expected_map, rtol=1e-5, atol=1e-7)


class LeNet(nn.Module):
    """A tutorial LeNet: one pooling module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


class LeNetTwoPools(LeNet):
    """The same network with the two pooling calls as two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.pool2 = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


@pytest.fixture
def lenets():
    torch.manual_seed(0)
    shared = LeNet().eval()
    split = LeNetTwoPools().eval()
    split.load_state_dict(shared.state_dict(), strict=False)
    return shared, split, torch.randn(3, 1, 16, 16)


def test_a_module_called_twice_is_addressed_one_call_at_a_time(lenets):
    shared, split, x = lenets
    feats = FeatureExtractor(shared, ["pool:0", "pool:1"])(x)
    reference = FeatureExtractor(split, ["pool", "pool2"])(x)
    assert torch.equal(feats["pool:0"], reference["pool"])
    assert torch.equal(feats["pool:1"], reference["pool2"])
    assert torch.equal(
        UnitAblator(shared, "pool:1", [1, 3])(x), UnitAblator(split, "pool2", [1, 3])(x)
    )
    assert torch.allclose(
        GradCAM(shared, "pool:1")(x, 2, size=None), GradCAM(split, "pool2")(x, 2, size=None)
    )
    assert torch.allclose(
        GradCAM(shared, "pool:0")(x, 2, size=None), GradCAM(split, "pool")(x, 2, size=None)
    )


def test_the_bare_name_of_a_reused_module_is_refused_with_the_call_syntax(lenets):
    shared, _, x = lenets
    before = snapshot(shared)
    with pytest.raises(RepeatedCallError, match="'pool:0', 'pool:1'"):
        FeatureExtractor(shared, "pool")(x)
    with pytest.raises(RepeatedCallError, match="pool:1"):
        GradCAM(shared, "pool")(x)
    assert_unchanged(shared, before)


def test_a_call_that_does_not_happen_is_not_reached(lenets):
    shared, _, x = lenets
    with pytest.raises(LayerNotReachedError, match="ran 2 time"):
        FeatureExtractor(shared, "pool:2")(x)


def test_layer_names_with_an_example_list_the_calls(lenets):
    from netlens.layers import layer_names

    shared, _, x = lenets
    names = layer_names(shared, x)
    assert names.count("pool:0") == 1 and names.count("pool:1") == 1
    assert "pool" not in names and "conv1" in names


def test_finding_the_default_layers_costs_one_forward_pass_per_model():
    import torchvision

    from netlens import CAM

    model = torchvision.models.resnet18(num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    passes = []
    handle = model.register_forward_pre_hook(lambda m, a: passes.append(1))
    try:
        CAM(model)(x)
        assert len(passes) == 2  # one to find the layers, one to explain
        for method in (CAM, GradCAM, CAM):  # made afresh: the layers are known
            passes.clear()
            method(model)(x)
            assert len(passes) == 1, method
        model.fc = torch.nn.Linear(512, 5)  # another module: found again
        passes.clear()
        assert CAM(model).fc_name is None
        CAM(model)(x)
        assert len(passes) == 2
    finally:
        handle.remove()
