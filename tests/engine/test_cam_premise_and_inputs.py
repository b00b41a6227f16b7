"""CAM's premise at every precision, NaN inputs, autocast, and clear errors for bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_unchanged, get_model, quick_methods, snapshot
from netlens import CAM, GradCAM, Saliency, fewest_units_to_flip, rank_units
from netlens.errors import CAMNotApplicableError

QUICK = quick_methods()


class GapLinear(nn.Module):
    """conv -> ReLU -> global average (times ``scale``) -> linear."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1) * self.scale)


def _close(maps: torch.Tensor, reference: torch.Tensor) -> bool:
    """Equal up to the rounding of a low-precision computation."""
    scale = float(reference.abs().max())
    return torch.allclose(maps.float(), reference, rtol=0.05, atol=0.02 * scale)


def _pair(scale: float, dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = GapLinear(scale).eval().to(dtype)
    return model, torch.rand(4, 3, 16, 16).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cam_accepts_a_true_gap_linear_model_at_its_precision(dtype):
    model, x = _pair(1.0, dtype)
    maps = CAM(model, "features")(x, size=None)
    reference = CAM(model.float(), "features")(x.float(), size=None)
    assert maps.dtype == dtype
    assert torch.allclose(
        maps.float(), reference, rtol=0.05, atol=0.02 * float(reference.abs().max())
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", [1.05, 1.2, 0.95])
def test_cam_refuses_a_head_that_is_not_the_plain_average(dtype, scale):
    model, x = _pair(scale, dtype)
    before = snapshot(model)
    with pytest.raises(CAMNotApplicableError):
        CAM(model, "features")(x)
    assert_unchanged(model, before)


def test_cam_under_bfloat16_autocast():
    model, x = _pair(1.0, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = CAM(model, "features")(x, size=None)
    reference = CAM(model, "features")(x, size=None)
    assert torch.allclose(
        maps.float(), reference, rtol=0.05, atol=0.02 * float(reference.abs().max())
    )
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(CAMNotApplicableError):
        CAM(GapLinear(1.05).eval(), "features")(x)


def test_a_nan_image_does_not_spoil_the_other_maps():
    model = get_model("resnet18")
    x = torch.randn(3, 3, 32, 32)
    clean = CAM(model)(x[[0, 2]], [4, 5])
    spoiled = x.clone()
    spoiled[1, 0, 3, 3] = float("nan")
    maps = CAM(model)(spoiled, [4, 6, 5])
    assert torch.allclose(maps[[0, 2]], clean, rtol=1e-5, atol=1e-6)
    assert torch.isnan(maps[1]).all()
    with pytest.raises(ValueError, match="NaN"):
        CAM(model)(spoiled[1:2])


@pytest.mark.parametrize("method", list(QUICK.values()), ids=list(QUICK))
def test_many_targets_per_sample_equal_one_target_at_a_time(method):
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    targets = torch.tensor([[1, 5, 9], [2, 2, 7]])
    maps = method(model)(x, targets)
    assert maps.shape == (2, 3, 32, 32)
    for k in range(3):
        assert torch.allclose(maps[:, k], method(model)(x, targets[:, k]), rtol=1e-5, atol=1e-7)


def test_a_target_function_of_the_logits():
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    second = GradCAM(model)(x, lambda logits: logits.topk(2).indices[:, 1])
    logits = model(x)
    assert torch.allclose(second, GradCAM(model)(x, logits.topk(2).indices[:, 1]))
    top2 = GradCAM(model)(x, lambda logits: logits.topk(2).indices)
    assert top2.shape == (2, 2, 32, 32)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ([], ValueError, "no targets"),
        ("3", TypeError, "str"),
        (2.5, TypeError, "float|integer"),
        (True, TypeError, "bool"),
        ([1, 2.0], TypeError, "2.0"),
        ([1, 2, 3], ValueError, "3 targets"),
        (np.int64(3), None, None),
    ],
)
def test_targets_are_checked_with_clear_messages(target, error, message):
    model = get_model("resnet18")
    x = torch.randn(2, 3, 32, 32)
    before = snapshot(model)
    if error is None:
        assert GradCAM(model)(x, target).shape == (2, 32, 32)
    else:
        with pytest.raises(error, match=message):
            GradCAM(model)(x, target)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("size", "shape"), [(100, (100, 100)), ((20, 30), (20, 30)), (np.int64(8), (8, 8))]
)
def test_size_takes_an_int_as_a_square(size, shape):
    maps = Saliency(get_model("resnet18"))(torch.randn(1, 3, 32, 32), size=size)
    assert maps.shape[-2:] == shape


@pytest.mark.parametrize("size", [(True, True), (0, 4), "big", (4,), 3.5])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size must be"):
        Saliency(get_model("resnet18"))(torch.randn(1, 3, 32, 32), size=size)


def test_a_float64_input_to_a_float32_model_is_refused_clearly():
    with pytest.raises(TypeError, match=r"x\.to\(torch\.float32\)"):
        GradCAM(get_model("resnet18"))(torch.randn(1, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize("target", ["3", 2.7, True, None])
def test_rank_units_takes_only_an_int(target):
    with pytest.raises(TypeError, match="int"):
        rank_units(get_model("resnet18"), target)


def test_rank_units_reads_the_classifier_that_produces_the_logits():
    class TwoLinears(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.head = nn.Linear(6, 4)
            self.unused = nn.Linear(6, 4)  # defined last, never called

        def forward(self, x):
            return self.head(self.conv(x).mean((2, 3)))

    model = TwoLinears()
    order = rank_units(model, 1)
    assert torch.equal(order, model.head.weight[1].argsort(descending=True))


def test_the_default_ranking_refuses_a_layer_the_head_does_not_read():
    model = get_model("resnet18")
    with pytest.raises(ValueError, match="ranking="):
        fewest_units_to_flip(model, torch.randn(1, 3, 32, 32), "layer3")


@pytest.mark.parametrize("max_units", [-3, 0, 2.5, True])
def test_max_units_must_be_positive(max_units):
    with pytest.raises(ValueError, match="max_units"):
        fewest_units_to_flip(
            get_model("resnet18"), torch.randn(1, 3, 32, 32), "layer4", max_units=max_units
        )


@pytest.mark.parametrize(
    ("units", "error"),
    [([], ValueError), (["3"], TypeError), ([1.5], TypeError), (True, TypeError)],
)
def test_units_are_checked_with_clear_messages(units, error):
    from netlens import UnitAblator

    with pytest.raises(error, match="unit"):
        UnitAblator(get_model("resnet18"), "layer4", units)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: __import__("netlens").FeatureExtractor(m, "layer4")(x),
        lambda m, x: __import__("netlens").UnitAblator(m, "layer4", [0])(x),
        lambda m, x: fewest_units_to_flip(m, x, "layer4", ranking=[0]),
    ],
    ids=["FeatureExtractor", "UnitAblator", "fewest_units_to_flip"],
)
def test_a_float64_input_is_refused_clearly_everywhere(call):
    model = get_model("resnet18")
    before = snapshot(model)
    with pytest.raises(TypeError, match=r"x\.to\(torch\.float32\)"):
        call(model, torch.randn(1, 3, 32, 32, dtype=torch.float64))
    assert_unchanged(model, before)
