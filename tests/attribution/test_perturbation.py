"""The perturbation bases: batched forwards equal one forward per perturbation."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_unchanged, get_model, snapshot
from netlens import UnitAblator
from netlens.attribution import LayerPerturbation, PerturbationAttribution


class _Layer(LayerPerturbation):
    pass


class _Input(PerturbationAttribution):
    pass


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("resnet18", "layer4"),  # the part above runs on the batch of replacements
        ("densenet121", "features.denseblock2.denselayer3.conv2"),  # concatenation: whole batch
        ("mobilenet_v2", "features.10"),
    ],
)
def test_layer_scores_equal_one_ablation_at_a_time(name, layer):
    model = get_model(name)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    before = snapshot(model)
    probe = _Layer(model, layer, batch_size=3)
    activation, logits = probe.activation(x)
    units = [0, 3, 7, 8, 11]
    replacements = activation.expand(len(units), *activation.shape[1:]).clone()
    for row, unit in enumerate(units):
        replacements[row, unit] = 0
    scores = probe.layer_scores(x, replacements)
    expected = torch.cat([UnitAblator(model, layer, [unit])(x) for unit in units])
    assert torch.allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert_unchanged(model, before)


def test_input_scores_equal_one_forward_per_image():
    model = get_model("resnet18")
    images = torch.randn(5, 3, 32, 32)
    scores = _Input(model, batch_size=2).scores(5, lambda part: images[part])
    with torch.no_grad():
        assert torch.allclose(scores, model(images), atol=1e-5)


def test_batch_size_must_be_a_positive_int():
    with pytest.raises(ValueError, match="batch_size"):
        _Input(get_model("resnet18"), batch_size=0)
