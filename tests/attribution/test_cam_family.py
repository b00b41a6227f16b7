"""Grad-CAM++, XGrad-CAM, HiResCAM and Eigen-CAM against their definitions in plain autograd."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from conftest import get_model
from netlens.attribution import CAM, METHODS, GradCAM
from netlens.errors import NetlensError
from netlens.testing import check_attribution

NAMES = ["gradcampp", "xgradcam", "hirescam", "eigencam"]


@functools.cache
def _resnet18_float64() -> nn.Module:
    # Sums of terms of both signs cancel: float64 keeps the comparisons far from rounding.
    return copy.deepcopy(get_model("resnet18")).double().eval()


def _close(ours: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> bool:
    scale = float(expected.abs().max())
    return scale > 0 and float((ours.double() - expected.double()).abs().max()) <= rtol * scale


def _activation_and_gradients(model, layer, x, classes):
    """The layer's output and the gradient of each column of ``classes`` (N, K) with plain hooks."""
    captured = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, args, out: captured.setdefault("a", out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    activation = captured["a"]
    gradients = [
        torch.autograd.grad(
            logits.gather(1, classes[:, k : k + 1]).sum(), activation, retain_graph=True
        )[0]
        for k in range(classes.shape[1])
    ]
    return activation.detach().double(), [g.double() for g in gradients]


def _gradcampp(a, g):
    # The paper's closed form (equation 19), alpha = 0 where the gradient is 0.
    total = a.sum((2, 3), keepdim=True)
    alpha = torch.where(g != 0, g**2 / (2 * g**2 + total * g**3), torch.zeros_like(g))
    weights = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    return torch.relu((weights * a).sum(1))


def _xgradcam(a, g):
    keep = (a != 0).flatten(2).any(2)  # a channel of zeros adds nothing, whatever its weight
    a, g = a * keep[..., None, None], g * keep[..., None, None]
    total = torch.where(keep[..., None, None], a.sum((2, 3), keepdim=True), 1)
    weights = (a / total * g).sum((2, 3), keepdim=True)
    return torch.relu((weights * a).sum(1))


def _hirescam(a, g):
    return torch.relu((g * a).sum(1))


def _eigencam(a, g=None):
    maps = []
    for sample in a:
        matrix = sample.flatten(1).T  # (hw, K)
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vh[0]
        if projection.sum() < 0:  # netlens' sign rule: positive spatial sum
            projection = -projection
        maps.append(torch.relu(projection).view(sample.shape[1:]))
    return torch.stack(maps)


REFERENCES = {"gradcampp": _gradcampp, "xgradcam": _xgradcam, "hirescam": _hirescam}


# layer3: a post-ReLU block output (4 x 4 at 64 px), in float32 as the model comes;
# layer3.1.conv2: a convolution's output, with values of both signs (and nothing
# modifies it in place), in float64.
@pytest.mark.parametrize(
    ("layer", "dtype"),
    [("layer3", torch.float32), ("layer3.1.conv2", torch.float64)],
    ids=["layer3-float32", "conv-float64"],
)
@pytest.mark.parametrize("name", NAMES)
def test_equals_the_definition_in_plain_autograd(name, layer, dtype):
    model = get_model("resnet18") if dtype == torch.float32 else _resnet18_float64()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3), dtype=dtype)
    classes = torch.tensor([[5], [912]])
    a, (g,) = _activation_and_gradients(model, layer, x, classes)
    expected = REFERENCES[name](a, g) if name in REFERENCES else _eigencam(a)
    ours = METHODS[name](model, layer)(x, classes[:, 0], size=None)
    assert ours.shape == (2, *a.shape[2:])
    assert _close(ours, expected, 1e-5 if dtype == torch.float32 else 1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_many_targets_equal_one_call_per_column(name):
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[3, 7, 1], [0, 977, 9]])
    method = METHODS[name](model, "layer3")
    many = method(x, targets, size=None)
    assert many.shape == (2, 3, 2, 2)
    for k in range(3):
        assert torch.allclose(many[:, k], method(x, targets[:, k], size=None), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_keeps_the_attribution_contract(name):
    report = check_attribution(METHODS[name])
    assert "many targets" in report.rules


def test_hirescam_is_the_rectified_cam_over_hw_for_a_gap_linear_head():
    # y = sum_k w_k mean_ij A_kij + b, so dy / dA_kij = w_k / hw at every position.
    model = _resnet18_float64()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    targets = torch.tensor([[4, 600, 17, 250], [1, 2, 3, 999]])
    cam = CAM(model)
    maps = cam(x, targets, size=None)
    h, w = maps.shape[-2:]
    hirescam = METHODS["hirescam"](model, cam.layer_name)(x, targets, size=None)
    assert (hirescam > 0).sum() >= 4
    assert _close(hirescam, torch.relu(maps) / (h * w), 1e-10)


def test_xgradcam_is_gradcam_for_a_gap_linear_head():
    # With a constant gradient per channel, XGrad-CAM's activation-weighted mean is that constant.
    model = get_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    xgradcam = METHODS["xgradcam"](model, "layer4")(x, [8, 2], size=None)
    assert _close(xgradcam, GradCAM(model, "layer4")(x, [8, 2], size=None))


class Probe(nn.Module):
    """The image itself is the feature map: ``feature`` (identity), global mean, linear."""

    def __init__(self, channels: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.feature = nn.Identity()
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.feature(x).mean((2, 3)))


def _probe() -> Probe:
    torch.manual_seed(0)
    return Probe().eval()


def test_xgradcam_gives_an_all_zero_channel_weight_zero():
    model = _probe()
    x = torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0)) + 0.1
    x[:, 1] = 0
    ours = METHODS["xgradcam"](model, "feature")(x, [0, 3], size=None)
    assert torch.isfinite(ours).all()
    # Channels 0 and 2 only: the gradient is w_k / hw, so their weight is w_k / hw.
    weights = model.fc.weight.detach()[[0, 3]][:, [0, 2]] / 30
    expected = torch.relu(torch.einsum("nk,nkhw->nhw", weights, x[:, [0, 2]]))
    assert _close(ours, expected)


def test_xgradcam_refuses_a_channel_whose_activations_cancel():
    model = _probe()
    x = torch.rand(1, 3, 2, 2) + 0.1
    x[0, 2] = torch.tensor([[1.0, -1.0], [0.5, -0.5]])
    with pytest.raises(NetlensError, match="channel 2 .* sum to 0"):
        METHODS["xgradcam"](model, "feature")(x, 1)


def test_gradcampp_refuses_a_vanishing_denominator():
    # Gradient w / hw = 0.125 on channel 0 and activation sum -16: 2 + sum * g = 0.
    model = _probe()
    with torch.no_grad():
        model.fc.weight.fill_(0.5)
    x = torch.rand(1, 3, 2, 2) + 0.1
    x[0, 0] = -4.0
    with pytest.raises(NetlensError, match="channel 0"):
        METHODS["gradcampp"](model, "feature")(x, 2)


def test_eigencam_sign_rule_is_lapack_independent():
    # A rank-one feature map u v^T: the projection is +-|v| u, and the rule keeps the
    # sign with a positive spatial sum, for x and for -x alike.
    u = torch.tensor([[2.0, -1.0, 0.5], [1.5, -0.25, 3.0]], dtype=torch.float64)
    v = torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    x = torch.einsum("ij,k->kij", u, v).unsqueeze(0)
    method = METHODS["eigencam"](_probe().double(), "feature")
    expected = torch.relu(u) * v.norm()
    assert _close(method(x, size=None)[0], expected, 1e-12)
    assert _close(method(-x, size=None)[0], expected, 1e-12)


def test_eigencam_projection_of_a_post_relu_layer_is_non_negative():
    # Perron-Frobenius: the rule picks the non-negative singular vector, so the
    # ReLU removes nothing.
    model = get_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    a, _ = _activation_and_gradients(model, "layer3", x, torch.zeros(2, 0, dtype=torch.long))
    projection = METHODS["eigencam"](model, "layer3").projection(a)
    assert float(projection.min()) >= -1e-12 * float(projection.max())


def test_eigencam_refuses_tied_singular_values():
    # Two orthogonal spatial patterns of equal norm on two channels: sigma_1 = sigma_2.
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    x[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    with pytest.raises(NetlensError, match="tie"):
        METHODS["eigencam"](_probe(), "feature")(x)


def test_eigencam_does_not_depend_on_the_target_and_keeps_a_nan_sample_apart():
    model = _probe()
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    method = METHODS["eigencam"](model, "feature")
    assert torch.equal(method(x, 0, size=None), method(x, [3, 1], size=None))
    x[1, 0, 0, 0] = torch.nan
    maps = method(x, size=None)
    assert torch.isfinite(maps[0]).all() and torch.isnan(maps[1]).all()
    with pytest.raises(IndexError, match="out of range"):
        method(x, 4)


@pytest.mark.parametrize("layer", ["layer4", "layer3"])
def test_pytorch_grad_cams_gradcampp_is_the_papers_apart_from_its_constant(layer):
    # Its raw map, once with its inputs as they are and once with gradients scaled
    # up and activations down by 1e6 (the paper's map is unchanged, its 1e-6 in the
    # denominator becomes negligible): only the second equals netlens.
    pytest.importorskip("pytorch_grad_cam")
    from agreement import grad_cam_raw
    from peers_cam_family import grad_cam_plus_plus_rescaled
    from pytorch_grad_cam import GradCAMPlusPlus

    model = get_model("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    targets = torch.tensor([3, 977])
    ours = METHODS["gradcampp"](model, layer)(x, targets, size=None)
    plain = grad_cam_raw(GradCAMPlusPlus, model, layer, x, targets)
    rescaled = grad_cam_plus_plus_rescaled(model, layer, x, targets)
    model.eval()
    assert _close(ours, rescaled)
    assert not _close(ours, plain, 1e-3)


def test_xgradcam_batched_equals_one_at_a_time_after_a_relu():
    # On DenseNet's `features` (values of both signs) XGrad-CAM's channel sums nearly
    # cancel and a batched convolution's rounding moves the map by up to 1e-2; after a
    # ReLU the normalisation is well conditioned and the batch changes nothing.
    model = get_model("densenet121")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    targets = torch.tensor([[7, 1, 5, 9], [2, 4, 6, 8], [999, 500, 300, 100]])
    method = METHODS["xgradcam"](model, "features.denseblock4.denselayer16.relu2")
    batched = method(x, targets, size=None)
    single = torch.cat([method(x[i : i + 1], targets[i : i + 1], size=None) for i in range(3)])
    assert (single > 0).sum() >= 12
    assert _close(batched, single, 1e-5)
