"""Score-CAM and Ablation-CAM: the definitions with plain forward passes, costs, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Permute

from conftest import assert_unchanged, get_model, snapshot
from netlens.attribution import METHODS
from netlens.attribution.ablationcam import AblationCAM, ZeroScoreError
from netlens.attribution.scorecam import ScoreCAM
from netlens.errors import NetlensError
from netlens.layers import resolve_layer
from netlens.testing import check_attribution, tiny_cnn


def _images(n: int = 2, side: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _activation(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    found = {}

    def keep(module, args, out):
        found["a"] = out.clone()  # before any later in-place change; returns None

    handle = resolve_layer(model, layer)[1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return found["a"]


def _scorecam_reference(model, layer, x, classes, channels_last=False):
    """Score-CAM one channel and one image at a time, each masked image its own forward pass."""
    maps = []
    for i in range(len(x)):
        a = _activation(model, layer, x[i : i + 1])[0]
        if channels_last:
            a = a.permute(2, 0, 1)
        probabilities = []
        for k in range(a.shape[0]):
            if a[k].max() == a[k].min():
                mask = torch.zeros(1, 1, *x.shape[-2:])  # highlights nothing
            else:
                up = F.interpolate(
                    a[k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=True
                )
                mask = (up - up.min()) / (up.max() - up.min())
            with torch.no_grad():
                probabilities.append(model(x[i : i + 1] * mask).softmax(1)[0])
        alpha = torch.stack(probabilities)[:, classes[i]].softmax(0)  # over channels
        maps.append(torch.relu(torch.einsum("kt,khw->thw", alpha, a)))
    return torch.stack(maps)


def _ablationcam_reference(model, layer, x, classes, channels_last=False):
    """Ablation-CAM with one forward pass per zeroed channel and image."""
    module = resolve_layer(model, layer)[1]
    maps = []
    for i in range(len(x)):
        a = _activation(model, layer, x[i : i + 1])
        with torch.no_grad():
            y = model(x[i : i + 1])[0, classes[i]]
        weights = []
        for k in range(a.shape[-1] if channels_last else a.shape[1]):

            def zero(m, args, out, k=k):
                out = out.clone()
                if channels_last:
                    out[..., k] = 0
                else:
                    out[:, k] = 0
                return out

            handle = module.register_forward_hook(zero)
            try:
                with torch.no_grad():
                    y_k = model(x[i : i + 1])[0, classes[i]]
            finally:
                handle.remove()
            weights.append((y - y_k) / y)
        a = a[0].permute(2, 0, 1) if channels_last else a[0]
        maps.append(torch.relu(torch.einsum("kt,khw->thw", torch.stack(weights), a)))
    return torch.stack(maps)


class ChannelsLastNet(nn.Module):
    """A linear layer and a ReLU on a channels-last tensor between two convolutions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            Permute([0, 2, 3, 1]),
            nn.Linear(6, 6),
            nn.ReLU(),  # "features.3": (N, H, W, 6)
            Permute([0, 3, 1, 2]),
            nn.Conv2d(6, 5, 3, stride=2),
        )
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class ConcatNet(nn.Module):
    """The part above the layer concatenates a tensor from below it (no broadcasting)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(9, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        below = torch.relu(self.conv1(x))
        both = torch.cat([below, self.conv2(below)], 1)
        return self.fc(both.mean((2, 3)))


def _close(ours, expected, rtol=1e-5):
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(ours, expected, rtol=rtol, atol=rtol * scale)


# --- the definitions -----------------------------------------------------------


@pytest.mark.parametrize("layer", ["layer1", "layer1.0.conv1"])  # rectified, signed
def test_scorecam_is_the_definition_with_one_forward_pass_per_channel(layer):
    model = get_model("resnet18")
    x = _images(side=16)
    classes = torch.tensor([[3, 100], [977, 5]])
    expected = _scorecam_reference(model, layer, x, classes)
    _close(ScoreCAM(model, layer)(x, classes, size=None), expected)


# layer1.1.bn2's output is changed in place by the block's `out += identity`.
@pytest.mark.parametrize("layer", ["layer1", "layer1.1.bn2"])
def test_ablationcam_is_the_definition_with_one_forward_pass_per_channel(layer):
    # In float64: a weight is a small difference of two logits, which float32
    # rounding (another batch size, another pass) moves by about 1e-4.
    model = copy.deepcopy(get_model("resnet18")).double()
    x = _images(side=16).double()
    classes = torch.tensor([[3, 100], [977, 5]])
    expected = _ablationcam_reference(model, layer, x, classes)
    _close(AblationCAM(model, layer)(x, classes, size=None), expected, rtol=1e-9)


def test_ablationcam_above_a_concatenation_equals_the_definition():
    model = ConcatNet().eval()
    x = _images(side=8)
    expected = _ablationcam_reference(model, "conv2", x, torch.tensor([[1], [2]]))
    _close(AblationCAM(model, "conv2", batch_size=2)(x, [1, 2], size=None), expected[:, 0])


@pytest.mark.parametrize("method", [ScoreCAM, AblationCAM])
def test_a_channels_last_layer_is_read_along_its_last_axis(method):
    model = ChannelsLastNet().eval()
    x = _images(side=12)
    classes = torch.tensor([[0], [3]])
    reference = _scorecam_reference if method is ScoreCAM else _ablationcam_reference
    expected = reference(model, "features.3", x, classes, channels_last=True)[:, 0]
    _close(method(model, "features.3")(x, [0, 3], size=None), expected)


def test_scorecam_masks_a_constant_channel_to_black_without_nan():
    model = tiny_cnn(num_classes=4)
    with torch.no_grad():  # channel 0 of features.0 is 0.5 everywhere
        model.features[0].weight[0] = 0
        model.features[0].bias[0] = 0.5
    x = _images(side=16)
    assert (_activation(model, "features.0", x)[:, 0] == 0.5).all()
    maps = ScoreCAM(model, "features.0")(x, [1, 2], size=None)
    assert torch.isfinite(maps).all()
    _close(maps, _scorecam_reference(model, "features.0", x, torch.tensor([[1], [2]]))[:, 0])


def test_scorecam_weights_are_a_softmax_of_probabilities_so_nearly_uniform():
    # Each score lies in [0, 1], so no weight is more than e times another.
    model = tiny_cnn(num_classes=4)
    x = _images(n=1, side=16)
    a = _activation(model, "features", x)[0]
    maps = ScoreCAM(model, "features")(x, 2, size=None)[0]
    k = a.shape[0]
    low = torch.relu(a.sum(0) / (1 + (k - 1) * math.e))
    high = torch.relu(a.sum(0) * math.e / (math.e + k - 1))
    assert (a >= 0).all()  # after a ReLU: the bounds hold pixel by pixel
    assert (maps >= low - 1e-6).all() and (maps <= high + 1e-6).all()


# --- many targets, batch sizes, progress ---------------------------------------


@pytest.mark.parametrize(("method", "layer"), [(ScoreCAM, "layer1"), (AblationCAM, "layer3")])
def test_many_targets_equal_separate_calls(method, layer):
    model = get_model("resnet18")
    x = _images()
    classes = torch.tensor([[3, 100, 7], [977, 5, 5]])
    explainer = method(model, layer)
    together = explainer(x, classes, size=None)
    assert together.shape == (2, 3, 8 if method is ScoreCAM else 2, 8 if method is ScoreCAM else 2)
    for j in range(3):
        _close(together[:, j], explainer(x, classes[:, j], size=None))


def test_batch_size_does_not_change_scorecam():
    model = get_model("resnet18")
    x = _images(side=16)
    reference = ScoreCAM(model, "layer1", batch_size=1000)(x, [3, 977], size=None)
    for batch_size in (1, 7, 64):
        _close(ScoreCAM(model, "layer1", batch_size=batch_size)(x, [3, 977], size=None), reference)


def test_batch_size_does_not_change_ablationcam():
    model = get_model("resnet18")
    x = _images()
    reference = AblationCAM(model, "layer4", batch_size=1000)(x, [3, 977], size=None)
    for batch_size in (7, 512):
        maps = AblationCAM(model, "layer4", batch_size=batch_size)(x, [3, 977], size=None)
        # The head rounds differently for another batch size, and a weight is a
        # small difference of two logits: agreement to 1e-4, not 1e-5.
        _close(maps, reference, rtol=1e-4)


@pytest.mark.parametrize("method", [ScoreCAM, AblationCAM])
def test_progress_bar_only_when_asked(method, capsys):
    model = tiny_cnn()
    x = _images(side=16)
    method(model, batch_size=4)(x)
    assert method.title not in capsys.readouterr().err
    method(model, batch_size=4, progress=True)(x)
    err = capsys.readouterr().err
    assert method.title in err and "batch" in err


# --- forward passes ------------------------------------------------------------


class _Count:
    """Forward passes of the model, and images entering a module below and one above the layer."""

    def __init__(self, model: nn.Module, below: nn.Module, above: nn.Module) -> None:
        self.passes = self.below = self.above = 0

        def count(name):
            def hook(module, args):
                if name == "passes":
                    self.passes += 1
                else:
                    setattr(self, name, getattr(self, name) + args[0].shape[0])

            return hook

        self.handles = [
            model.register_forward_pre_hook(count("passes")),
            below.register_forward_pre_hook(count("below")),
            above.register_forward_pre_hook(count("above")),
        ]

    def __enter__(self) -> _Count:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def test_scorecam_runs_one_pass_plus_n_k_over_batch_size():
    model = get_model("resnet18")
    x = _images(side=16)  # layer1: K = 64 channels
    n, k, batch_size = 2, 64, 48
    with _Count(model, model.conv1, model.fc) as ours:
        ScoreCAM(model, "layer1", batch_size=batch_size)(x, [3, 977])
    assert ours.passes == 1 + math.ceil(n * k / batch_size)
    assert ours.below == ours.above == n + n * k
    method = ScoreCAM(tiny_cnn(), batch_size=3)
    with _Count(method.model, method.model.features[0], method.model.fc) as found:
        method(x)  # the layer is found first, with one more pass
    channels = _activation(method.model, method.layer_name, x).shape[1]
    assert found.passes == 1 + 1 + math.ceil(n * channels / 3)

    grad_cam = pytest.importorskip("pytorch_grad_cam")
    targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    with _Count(model, model.conv1, model.fc) as theirs:
        with grad_cam.ScoreCAM(model=model, target_layers=[model.layer1]) as cam:
            cam(x, targets=[targets.ClassifierOutputSoftmaxTarget(c) for c in (3, 977)])
    assert theirs.passes == 1 + n * math.ceil(k / 16)  # its batches of 16, image by image
    assert ours.passes < theirs.passes
    torchcam = pytest.importorskip("torchcam.methods")
    with _Count(model, model.conv1, model.fc) as theirs:
        with torchcam.ScoreCAM(model, "layer1", batch_size=batch_size) as extractor:
            extractor([3, 977], model(x), normalized=False)
    assert theirs.passes == ours.passes + 1  # its own pass on the unmasked images


def test_ablationcam_runs_the_part_below_the_layer_once_per_batch():
    model = get_model("resnet18")
    x = _images()  # layer4: K = 512 channels
    n, k, batch_size = 2, 512, 200
    with _Count(model, model.conv1, model.fc) as ours:
        AblationCAM(model, "layer4", batch_size=batch_size)(x, [3, 977])
    per_image = math.ceil((k + 1) / batch_size)  # the ablations and the map as it is
    assert ours.passes == n * (1 + per_image)
    assert ours.below == n * (1 + per_image)  # one image per pass below the layer
    assert ours.above == n + n * (k + 1)  # one feature map per ablation above it

    grad_cam = pytest.importorskip("pytorch_grad_cam")
    targets = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    with _Count(model, model.conv1, model.fc) as theirs:
        with grad_cam.AblationCAM(model=model, target_layers=[model.layer4]) as cam:
            cam(x, targets=[targets.ClassifierOutputTarget(c) for c in (3, 977)])
    assert theirs.below == 2 * n + n * k  # the whole network for every ablation
    assert ours.below < theirs.below and ours.passes < theirs.passes


# --- contract and errors -------------------------------------------------------


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_registered_and_keeps_the_contract(name):
    cls = METHODS[name]
    assert not cls.needs_gradients and cls.needs_layer
    report = check_attribution(cls, batch_size=5)
    assert "many targets" in report.rules


@pytest.mark.slow
@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_keeps_the_contract_on_a_resnet(name):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    check_attribution(
        METHODS[name], get_model("resnet18"), inputs=x, layer="layer1", batch_size=256
    )


def _zero_logit_model() -> nn.Module:
    model = tiny_cnn(num_classes=4)
    with torch.no_grad():
        model.fc.weight[2] = 0
        model.fc.bias[2] = 0
    return model


def test_ablationcam_refuses_a_class_score_of_exactly_zero():
    model = _zero_logit_model()
    x = _images(side=16)
    before = snapshot(model)
    with pytest.raises(ZeroScoreError, match="class 2 for sample 1") as info:
        AblationCAM(model)(x, [1, 2])
    assert isinstance(info.value, NetlensError) and isinstance(info.value, ZeroDivisionError)
    assert_unchanged(model, before)
    with pytest.raises(ZeroScoreError, match="class 2 for sample 0"):
        AblationCAM(model)(x, torch.tensor([[1, 2], [0, 3]]))
    assert torch.isfinite(AblationCAM(model)(x, [1, 3])).all()
    assert torch.isfinite(ScoreCAM(model)(x, 2)).all()  # no division by the score


def test_ablationcam_with_a_negative_class_score_flips_the_weights():
    model = tiny_cnn(num_classes=4)
    x = _images(n=1, side=16)
    with torch.no_grad():
        logits = model(x)[0]
    negative = int(logits.argmin())
    assert logits[negative] < 0
    classes = torch.tensor([[negative]])
    maps = AblationCAM(model, "features")(x, negative, size=None)
    assert torch.allclose(maps, _ablationcam_reference(model, "features", x, classes)[:, 0])
    with torch.no_grad():  # the logit becomes -y > 0, every drop y - y_k stays the same
        model.fc.bias[negative] -= 2 * logits[negative]
    flipped = AblationCAM(model, "features")(x, negative, size=None)
    assert torch.allclose(flipped, _ablationcam_reference(model, "features", x, classes)[:, 0])
    # Opposite weights: ReLU(S) before, ReLU(-S) after.
    assert (maps * flipped == 0).all() and (maps + flipped > 0).any()
