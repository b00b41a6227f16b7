import pytest
import torch
from torch import nn

from conftest import assert_unchanged, get_model, snapshot
from netlens import UnitAblator, fewest_units_to_flip, rank_units


def _head(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    return model.fc(torch.flatten(model.avgpool(feats), 1))


@pytest.mark.parametrize("value", [0.0, 2.5])
def test_ablation_equals_editing_the_chopped_network_output(images, value):
    model = get_model("resnet18")
    units = [0, 5, 300, 511]
    chopped = nn.Sequential(*list(model.children())[:-2])
    with torch.no_grad():
        feats = chopped(images)
        feats[:, units] = value
        expected = _head(model, feats)
        original = model(images)
    ablator = UnitAblator(model, "layer4", units, value=value)
    with ablator, torch.no_grad():
        inside = model(images)
    assert torch.allclose(inside, expected, atol=1e-5)
    assert torch.equal(ablator(images), inside)
    with torch.no_grad():
        assert torch.equal(model(images), original)


def test_ablating_a_conv_layer_equals_zeroing_its_filters(images):
    model = get_model("resnet18")
    conv = model.layer3[0].conv1
    units = torch.tensor([1, 7, 40])
    ablated = UnitAblator(model, conv, units)(images)
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight[units] = 0  # this conv has no bias
            expected = model(images)
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
    assert torch.allclose(ablated, expected, atol=1e-5)


def test_unit_out_of_range_is_refused(images):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(IndexError, match="512 channels"):
        UnitAblator(model, "layer4.1.bn2", [3, 512])
    with pytest.raises(IndexError, match=r"\[-1\]"):
        UnitAblator(model, "layer4.1.conv2", -1)
    ablator = UnitAblator(model, "layer4", [600])  # a container: checked when it runs
    with pytest.raises(IndexError, match="600"):
        ablator(images)
    with pytest.raises(TypeError, match="integer"):
        UnitAblator(model, "layer4", [1.5])
    assert_unchanged(model, before)


def test_rank_units_orders_by_classifier_weight():
    model = get_model("resnet18")
    order = rank_units(model, 3)
    weights = model.fc.weight.detach()[3]
    assert torch.equal(weights[order], weights.sort(descending=True).values)
    with pytest.raises(IndexError, match="1000 classes"):
        rank_units(model, 1000)


def _brute_force_fewest(model, x, layer, order, limit):
    original = int(model(x).argmax())
    for k in range(1, limit + 1):
        if int(UnitAblator(model, layer, order[:k])(x).argmax()) != original:
            return k
    return None


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_fewest_units_matches_trying_every_count(batch_size):
    model = get_model("resnet18")
    torch.manual_seed(3)
    x = torch.randn(1, 3, 64, 64)
    before = snapshot(model)
    with torch.no_grad():
        top = int(model(x).argmax())
    order = rank_units(model, top)
    result = fewest_units_to_flip(model, x, "layer4", max_units=60, batch_size=batch_size)
    assert result.count == _brute_force_fewest(model, x, "layer4", order, 60)
    assert result.count is not None, "pick an input whose prediction flips within 60 units"
    assert torch.equal(result.units, order[: result.count])
    assert result.new_class != result.original_class == top
    single = UnitAblator(model, "layer4", result.units)(x)[0]
    assert torch.allclose(result.logits_after, single, atol=1e-5)
    assert_unchanged(model, before)


def test_fewest_units_reports_none_when_nothing_flips():
    model = get_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    result = fewest_units_to_flip(model, x, "layer4", ranking=[0], max_units=1)
    if result.count is None:
        assert result.new_class == result.original_class and result.units.numel() == 0
    with pytest.raises(ValueError, match="one image"):
        fewest_units_to_flip(model, torch.randn(2, 3, 64, 64), "layer4")
