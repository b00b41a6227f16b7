import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from conftest import assert_unchanged, snapshot
from netlens.receptive_field import conv_output_size, receptive_field


def test_three_stacked_3x3_convs_see_7_pixels():
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3) for _ in range(3)])
    rf = receptive_field(net, "2", 32)
    assert rf.size == (7, 7) and not rf.clipped


def test_two_stacked_4x4_stride_2_convs_see_10_pixels():
    net = nn.Sequential(nn.Conv2d(3, 4, 4, 2), nn.Conv2d(4, 4, 4, 2))
    assert receptive_field(net, "1", 32).size == (10, 10)


def test_box_matches_unit_position():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, stride=2))
    rf = receptive_field(net, "1", 16, unit=(2, 3))
    assert rf.box == (4, 6, 9, 11)
    assert rf.size == (rf.box[2] - rf.box[0], rf.box[3] - rf.box[1])


class _Residual(nn.Module):
    """A 1x1 shortcut next to two 3x3 convolutions: the longer path sets the field."""

    def __init__(self) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(2, 2, 1)
        self.path = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.path(x)


def test_residual_block_gets_the_largest_field_over_paths():
    net = nn.Sequential(_Residual())
    assert receptive_field(net, "0", 17).size == (5, 5)
    assert receptive_field(net, "0.shortcut", 17).size == (1, 1)


def test_resnet18_layer1_field_equals_hand_count():
    # conv1 7x7/2 -> 7, maxpool 3x3/2 -> 7 + 2*2 = 11 (jump 4), four 3x3 convs -> 11 + 4*2*4 = 43
    model = torchvision.models.resnet18(weights=None).eval()
    before = snapshot(model)
    assert receptive_field(model, "layer1", 128).size == (43, 43)
    assert receptive_field(model, "maxpool", 128).size == (11, 11)
    assert_unchanged(model, before)


@pytest.mark.slow
def test_vgg16_conv5_3_and_pool5_fields():
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    before = snapshot(model)
    conv5_3 = receptive_field(model, "features.28", 224)
    pool5 = receptive_field(model, "features.30", 224)
    assert conv5_3.size == (196, 196) and not conv5_3.clipped
    assert pool5.size == (212, 212) and not pool5.clipped
    assert_unchanged(model, before)


def _naive_support(net: nn.Module, size: int) -> int:
    x = torch.rand(1, 1, size, size, requires_grad=True)
    out = net(x)
    out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
    return int((x.grad != 0).sum())


def test_max_pooling_does_not_shrink_the_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 1, 3)).eval()
    rf = receptive_field(net, "1", 16)
    assert rf.size == (6, 6)
    # The real max pool passes the gradient to one pixel per 2x2 window: 9 of 36.
    assert _naive_support(net, 16) == 9


def test_dead_relus_do_not_shrink_the_field():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.Conv2d(1, 1, 3)).eval()
    with torch.no_grad():
        net[0].bias.fill_(-100.0)  # every ReLU is off
    before = snapshot(net)
    assert _naive_support(net, 16) == 0
    net.zero_grad(set_to_none=True)
    before = snapshot(net)
    assert receptive_field(net, "2", 16).size == (5, 5)
    assert_unchanged(net, before)


def test_field_larger_than_input_is_clipped_and_flagged():
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(6)])
    rf = receptive_field(net, "5", 8)
    assert rf.size == (8, 8) and rf.clipped


def test_bad_unit_and_non_spatial_layer_raise():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(IndexError, match="outside"):
        receptive_field(net, "0", 8, unit=(6, 0))
    with pytest.raises(ValueError, match="spatial output"):
        receptive_field(net, "2", 8)


@pytest.mark.parametrize(
    ("n", "kernel", "stride", "padding", "dilation"),
    [
        params
        for params in itertools.product([5, 8, 13], [1, 3, 4], [1, 2, 3], [0, 1, 2], [1, 2])
        if params[0] + 2 * params[3] >= params[4] * (params[1] - 1) + 1
    ],
)
def test_conv_output_size_matches_conv2d(n, kernel, stride, padding, dilation):
    conv = nn.Conv2d(1, 1, kernel, stride, padding, dilation)
    expected = conv(torch.zeros(1, 1, n, n)).shape[-1]
    assert conv_output_size(n, kernel, stride, padding, dilation) == expected


def test_conv_output_size_rejects_kernel_larger_than_input():
    with pytest.raises(ValueError, match="does not fit"):
        conv_output_size(3, kernel=5)


def _chain_field(layers: list[tuple[int, int]]) -> int:
    """Field of a chain of (kernel, stride) layers: r = 1 + sum (k_l - 1) prod_{i<l} s_i."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


class _Between(nn.Module):
    """Convolutions of kernel 3 with a function of the model's own between each pair."""

    def __init__(self, between, convs: int = 3) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(2 if i else 1, 2, 3) for i in range(convs))
        self.between = between

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x if i == 0 else self.between(x))
        return x


class _PoolBetween(nn.Module):
    """conv -> pool -> conv -> conv, the pool a function called in ``forward``."""

    def __init__(self, pool) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.pool(self.a(x))))


def test_chain_field_matches_the_hand_counts():
    assert _chain_field([(3, 1)] * 3) == 7
    assert _chain_field([(4, 2), (4, 2)]) == 10
    assert _chain_field([(7, 2), (3, 2)]) == 11


@pytest.mark.parametrize(
    ("pool", "window"),
    [
        (lambda x: F.max_pool2d(x, 2), (2, 2)),
        (lambda x: torch.max_pool2d(x, 2), (2, 2)),
        (lambda x: F.max_pool2d(x, 3, stride=2, padding=1), (3, 2)),
        (lambda x: F.max_pool2d(x, 2, ceil_mode=True), (2, 2)),
        (lambda x: F.max_pool2d(x, 2, return_indices=True)[0], (2, 2)),
        (lambda x: F.max_pool2d_with_indices(x, 2)[0], (2, 2)),
        (lambda x: F.adaptive_max_pool2d(x, x.shape[-1] // 4), (4, 4)),
        (lambda x: F.adaptive_max_pool2d(x, x.shape[-1] // 4, return_indices=True)[0], (4, 4)),
    ],
    ids=[
        "F.max_pool2d",
        "torch.max_pool2d",
        "padded-stride-2",
        "ceil_mode",
        "return_indices",
        "with_indices",
        "adaptive",
        "adaptive-indices",
    ],
)
def test_functional_max_pooling_does_not_shrink_the_field(pool, window):
    # conv 3 -> max pool -> conv 3 -> conv 3, the pool called in forward, not a module
    net = _PoolBetween(pool)
    expected = _chain_field([(3, 1), window, (3, 1), (3, 1)])
    rf = receptive_field(net, "c", 34)
    assert rf.size == (expected, expected) and not rf.clipped


def test_functional_and_module_max_pooling_give_the_same_field():
    functional = receptive_field(_PoolBetween(lambda x: F.max_pool2d(x, 2)), "c", 32)
    assert functional == receptive_field(_PoolBetween(nn.MaxPool2d(2)), "c", 32)
    assert functional.size == (12, 12)  # 3 -> 4 (jump 2) -> 8 -> 12


def test_dilated_functional_max_pool_is_refused_not_mismeasured():
    net = _Between(lambda x: F.max_pool2d(x, 2, dilation=2), convs=2)
    with pytest.raises(ValueError, match="dilation"):
        receptive_field(net, "convs.1", 16)


@pytest.mark.parametrize("convs", [2, 3, 4])
@pytest.mark.parametrize(
    "between",
    [
        F.relu,
        torch.relu,
        lambda x: x.relu(),
        lambda x: F.relu(x - 2.0),  # off everywhere on the probe's activations (about 1)
        lambda x: torch.relu_(x - 2.0),
        lambda x: F.relu(x - 2.0, inplace=True),
        lambda x: F.hardtanh(x, 0.0, 0.5),  # saturated: zero gradient
        lambda x: F.threshold(x, 2.0, 0.0),
        lambda x: F.dropout(x, 0.9, training=True),
        lambda x: torch.sigmoid(x) * x,
    ],
    ids=[
        "F.relu",
        "torch.relu",
        "Tensor.relu",
        "off-relu",
        "off-relu_",
        "off-relu-inplace",
        "saturated-hardtanh",
        "threshold",
        "dropout",
        "sigmoid-gate",
    ],
)
def test_functional_activations_do_not_shrink_the_field(between, convs):
    torch.manual_seed(0)
    net = _Between(between, convs=convs)
    expected = 2 * convs + 1  # k convs of kernel 3, stride 1
    rf = receptive_field(net, f"convs.{convs - 1}", 24)
    assert rf.size == (expected, expected) and not rf.clipped


@pytest.mark.parametrize(
    "activation",
    [nn.Hardtanh(0.0, 0.5), nn.Threshold(2.0, 0.0), nn.ReLU6(), nn.PReLU(), nn.GELU(), nn.Tanh()],
    ids=lambda m: type(m).__name__,
)
def test_activation_modules_do_not_shrink_the_field(activation):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), activation, nn.Conv2d(2, 2, 3), activation)
    before = snapshot(net)
    rf = receptive_field(net, "2", 16)
    assert rf.size == (5, 5)
    assert_unchanged(net, before)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode], ids=lambda c: c.__name__)
def test_field_under_a_callers_no_grad_equals_the_field_without(context):
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3)).eval()
    expected = receptive_field(net, "2", 16)
    with context():
        assert receptive_field(net, "2", 16) == expected
        assert not torch.is_grad_enabled()
        if context is torch.inference_mode:
            assert torch.is_inference_mode_enabled()
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
