"""Property-based input tests: any batch, size, dtype, memory format and target form."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlens import CAM, FeatureExtractor, GradCAM, Saliency
from netlens.data import SmallResNet

METHODS = {"CAM": CAM, "GradCAM": GradCAM, "Saliency": Saliency}
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
# Error against the same weights run in float64: largest deviation relative to
# the map's peak for float32 / float64; for bfloat16 (8 significant bits) the
# relative L2 error of the whole map. Measured over 600 bfloat16 inputs:
# GradCAM median 0.005, max 0.033; Saliency median 0.014, p99 0.16, max 0.32
# (a ReLU gate that flips under rounding reroutes the whole input gradient).
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
BFLOAT16_TOLERANCE = {"CAM": 0.05, "GradCAM": 0.1, "Saliency": 0.5}


@functools.cache
def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    reference = SmallResNet(num_classes=5, in_channels=3, width=4).eval()
    return reference.to(dtype)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(sorted(METHODS)),
    batch=st.integers(1, 3),
    side=st.integers(1, 20),
    dtype=st.sampled_from(sorted(DTYPES)),
    channels_last=st.booleans(),
    target_form=st.sampled_from(["none", "int", "list", "tensor"]),
    seed=st.integers(0, 2**16),
)
def test_maps_match_a_float64_reference(
    method, batch, side, dtype, channels_last, target_form, seed
):
    dtype = DTYPES[dtype]
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, side, side, generator=generator).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = _model(dtype)
    with torch.no_grad():
        top1 = model(x).argmax(1)
    targets = {
        "none": None,
        "int": int(top1[0]),
        "list": top1.tolist(),
        "tensor": top1,
    }[target_form]
    explainer = METHODS[method](model)
    maps = explainer(x, targets)
    reference_model = copy.deepcopy(model).double()
    reference = METHODS[method](reference_model)(x.double(), top1 if targets is None else targets)
    assert maps.shape == (batch, side, side) and maps.dtype == dtype
    assert torch.isfinite(maps).all()
    difference = maps.double() - reference
    if dtype == torch.bfloat16:
        error = float(difference.norm() / reference.norm().clamp_min(1e-6))
    else:
        error = float(difference.abs().max() / reference.abs().max().clamp_min(1e-6))
    bound = BFLOAT16_TOLERANCE[method] if dtype == torch.bfloat16 else TOLERANCE[dtype]
    assert error <= bound, f"{method} {dtype}: error {error:.2e}"


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 4),
    side=st.integers(1, 24),
    channels_last=st.booleans(),
)
def test_features_do_not_depend_on_memory_format_or_batching(batch, side, channels_last):
    model = _model(torch.float32)
    x = torch.rand(batch, 3, side, side)
    fx = FeatureExtractor(model, ["layer2", "layer4"])
    xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    together = fx(xs)
    for i in range(batch):
        single = fx(x[i : i + 1])
        for name in together:
            assert torch.allclose(together[name][i : i + 1], single[name], atol=1e-5)


@pytest.mark.parametrize(
    "form", [[0, 1, 2], torch.tensor([[0], [1], [2]]), [0.5, 1.0], "cat", True, []]
)
def test_malformed_targets_are_refused(form):
    model = _model(torch.float32)
    with pytest.raises((ValueError, TypeError)):
        GradCAM(model)(torch.rand(2, 3, 8, 8), form)
