"""One generated invariant: every public call leaves the model exactly as found.

Parameters, buffers (BatchNorm running statistics), every submodule's
``training`` flag, ``requires_grad`` flags, ``.grad``, grad mode and hooks are
compared before and after each entry point, on the model matrix, in train and
eval mode, when the call succeeds and when the forward pass raises inside it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import GAP_LINEAR, MODEL_NAMES, assert_unchanged, get_model, snapshot
from netlens import (
    CAM,
    EmbeddingProbe,
    FeatureExtractor,
    GradCAM,
    Saliency,
    UnitAblator,
    fewest_units_to_flip,
    receptive_field,
)
from netlens.layers import find_feature_layer

CAM_MODELS = set(GAP_LINEAR)


def _with_block(fx: FeatureExtractor, model: nn.Module, x: torch.Tensor) -> None:
    with fx:
        model(x)


ENTRY_POINTS: dict[str, Callable[[nn.Module, str, torch.Tensor], object]] = {
    "FeatureExtractor()": lambda m, layer, x: FeatureExtractor(m, layer)(x),
    "FeatureExtractor(stop_early)": lambda m, layer, x: FeatureExtractor(m, layer, stop_early=True)(
        x
    ),
    "FeatureExtractor(detach=False)": lambda m, layer, x: FeatureExtractor(m, layer, detach=False)(
        x
    ),
    "with FeatureExtractor": lambda m, layer, x: _with_block(FeatureExtractor(m, layer), m, x),
    "FeatureExtractor.extract": lambda m, layer, x: FeatureExtractor(m, layer).extract(
        DataLoader(TensorDataset(x), batch_size=1), reduce="mean", progress=False
    ),
    "UnitAblator()": lambda m, layer, x: UnitAblator(m, layer, [0, 1])(x),
    "fewest_units_to_flip": lambda m, layer, x: fewest_units_to_flip(
        m, x[:1], layer, ranking=[0, 1, 2], batch_size=2
    ),
    "CAM": lambda m, layer, x: CAM(m, layer)(x),
    "GradCAM": lambda m, layer, x: GradCAM(m, layer)(x),
    "Saliency": lambda m, layer, x: Saliency(m)(x),
    "EmbeddingProbe.fit": lambda m, layer, x: EmbeddingProbe(m, layer).fit(x, progress=False),
    "receptive_field": lambda m, layer, x: receptive_field(m, layer, tuple(x.shape[1:])),
}


class Boom(Exception):
    pass


def _bomb(model: nn.Module) -> torch.utils.hooks.RemovableHandle:
    """Make the model's last module raise during the forward pass."""
    last = [m for m in model.modules() if not list(m.children())][-1]

    def explode(module: nn.Module, args: object, output: object) -> None:
        raise Boom

    return last.register_forward_hook(explode)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_public_calls_leave_the_model_as_found(name, entry, mode):
    if entry == "CAM" and name not in CAM_MODELS:
        pytest.skip("CAM does not apply to this head (tested in test_attribution)")
    if entry == "with FeatureExtractor" and mode == "train":
        pytest.skip("inside the block the caller's own train-mode forward updates BatchNorm")
    model = get_model(name)
    x = torch.randn(2, 3, 64, 64)
    layer = find_feature_layer(model, x)
    model.train(mode == "train")
    try:
        model.zero_grad(set_to_none=True)
        before = snapshot(model)
        ENTRY_POINTS[entry](model, layer, x)
        assert_unchanged(model, before)
    finally:
        model.eval()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", ["resnet18", "densenet121", "mobilenet_v3_small"])
def test_public_calls_leave_the_model_as_found_when_the_forward_raises(name, entry):
    if entry == "CAM" and name not in CAM_MODELS:
        pytest.skip("CAM does not apply to this head")
    model = get_model(name)
    x = torch.randn(2, 3, 64, 64)
    layer = find_feature_layer(model, x)
    # In the `with` form the caller's own forward would update BatchNorm in train mode.
    model.train(entry != "with FeatureExtractor")
    bomb = _bomb(model)
    try:
        before = snapshot(model)
        if entry in ("FeatureExtractor(stop_early)", "EmbeddingProbe.fit", "receptive_field"):
            ENTRY_POINTS[entry](model, layer, x)  # stops before the bomb / runs on a copy
        else:
            with pytest.raises(Boom):
                ENTRY_POINTS[entry](model, layer, x)
        assert_unchanged(model, before)
    finally:
        bomb.remove()
        model.eval()
