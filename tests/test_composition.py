"""Methods compose: attribution inside an ablation sees the ablated network."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import assert_unchanged, get_model, quick_methods, snapshot
from netlens import FeatureExtractor, GradCAM, Saliency, UnitAblator
from netlens.hooks import RepeatedCallError

QUICK = quick_methods()

UNITS = [2, 9, 100, 311]


#: Filters of ``layer1.1.conv2`` (64 of them, no bias), below every layer a method reads.
LOW_UNITS = [2, 9, 33, 60]


def _pruned_copy(model, units):
    """The same network with the chosen filters of layer1.1.conv2 zeroed (it has no bias)."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        pruned.layer1[1].conv2.weight[units] = 0
    return pruned


@pytest.mark.parametrize("method", list(QUICK.values()), ids=list(QUICK))
def test_attribution_inside_an_ablation_sees_the_ablated_network(method, images):
    model = get_model("resnet18")
    before = snapshot(model)
    expected = method(_pruned_copy(model, LOW_UNITS))(images, [1, 2], size=None)
    with UnitAblator(model, "layer1.1.conv2", LOW_UNITS):
        got = method(model)(images, [1, 2], size=None)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    plain = method(model)(images, [1, 2], size=None)
    assert not torch.allclose(plain, expected)
    assert_unchanged(model, before)


def test_gradcam_on_the_ablated_layer_itself(images):
    model = get_model("resnet18")
    ablator = UnitAblator(model, "layer4", UNITS)
    with ablator:
        maps = GradCAM(model, "layer4")(images, 0, size=None)
    feats = FeatureExtractor(model, "layer4")(images)["layer4"]
    feats[:, UNITS] = 0
    head = model.fc.weight[0].detach()
    # GradCAM on a GAP + linear head: weights are w / hw, so the map is ReLU(CAM) / hw.
    expected = torch.relu(torch.einsum("k,nkhw->nhw", head, feats)) / feats[0, 0].numel()
    assert torch.allclose(maps, expected, atol=1e-6)


def test_extractor_inside_an_ablation_records_the_ablated_output(images):
    model = get_model("resnet18")
    with UnitAblator(model, "layer3", [0, 5], value=3.0):
        feats = FeatureExtractor(model, ["layer3"])(images)["layer3"]
    assert torch.equal(feats[:, [0, 5]], torch.full_like(feats[:, [0, 5]], 3.0))


def test_gradcam_on_a_module_called_twice_is_refused(images):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(RepeatedCallError, match="layer4.0.relu"):
        GradCAM(model, "layer4.0.relu")(images)
    assert_unchanged(model, before)


def test_nested_ablators_on_different_layers_combine(images):
    model = get_model("resnet18")
    with (
        UnitAblator(model, "layer4.1.conv2", UNITS[:2]),
        UnitAblator(model, "layer4.1.conv2", UNITS[2:]),
        torch.no_grad(),
    ):
        nested = model(images)
    both = UnitAblator(model, "layer4.1.conv2", UNITS)(images)
    assert torch.allclose(nested, both, atol=1e-6)


def _gradcam_at_layer4_0(model):
    return GradCAM(model, "layer4.0")


@pytest.mark.parametrize(
    ("method", "ablated"),
    [(_gradcam_at_layer4_0, "layer4.1.bn2"), (Saliency, "layer3.1.bn2")],
    ids=["GradCAM", "Saliency"],
)
def test_gradients_respect_an_ablation_of_a_batchnorm_output(method, ablated, images):
    # These methods pass gradients through eval-mode BatchNorm layers by a saved
    # per-channel scale; an ablation hook on the same layer must still cut the
    # gradient of the ablated channels, as zeroing the layer's weight and bias does.
    # Both layers feed a residual sum, so no ReLU would cut that gradient anyway.
    model = get_model("resnet18")
    units = [2, 9, 100]
    pruned = copy.deepcopy(model)
    norm = pruned.get_submodule(ablated)
    with torch.no_grad():
        norm.weight[units] = 0
        norm.bias[units] = 0
    expected = method(pruned)(images, [1, 2], size=None)
    with UnitAblator(model, ablated, units):
        got = method(model)(images, [1, 2], size=None)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert not torch.allclose(method(model)(images, [1, 2], size=None), expected)
