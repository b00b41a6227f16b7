"""LayerCAM equals torchcam's and the definition computed with plain autograd."""

from __future__ import annotations

import pytest
import torch

from conftest import get_model
from netlens.attribution import METHODS


@pytest.mark.parametrize("layer", ["layer2", "layer3", "layer4.0.conv1"])
def test_layercam_equals_torchcam(layer):
    torchcam = pytest.importorskip("torchcam.methods")
    model = get_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    ours = METHODS["layercam"](model, layer)(x, [3, 7], size=None)
    with torchcam.LayerCAM(model, layer) as extractor:
        theirs = extractor([3, 7], model(x), normalized=False)[0]
    scale = float(theirs.abs().max())
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6 * scale)


def test_layercam_is_the_positive_gradient_times_the_activation():
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    captured = {}
    handle = model.layer3.register_forward_hook(lambda m, a, out: captured.setdefault("a", out))
    try:
        logits = model(x)
        (gradient,) = torch.autograd.grad(logits[:, 5].sum(), captured["a"])
    finally:
        handle.remove()
    expected = torch.relu((gradient.clamp(min=0) * captured["a"]).sum(1)).detach()
    ours = METHODS["layercam"](model, "layer3")(x, 5, size=None)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-7)
