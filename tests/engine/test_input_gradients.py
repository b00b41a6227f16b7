"""input_gradients_only: the same input gradients, far fewer saved activations."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from netlens.hooks import hook_count, input_gradients_only


def _eval_batchnorm(norm: nn.Module) -> nn.Module:
    """A BatchNorm layer in eval mode with running statistics other than 0 and 1."""
    generator = torch.Generator().manual_seed(3)
    if norm.running_mean is not None:
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
    if norm.weight is not None:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(norm.num_features, generator=generator))
            norm.bias.copy_(torch.randn(norm.num_features, generator=generator))
    return norm.eval()


class ReluOnHalf(nn.Module):
    """An in-place ReLU on a view: left to autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        self.relu(y[:, :2])
        return y


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {
        "conv-bn-relu 2d": (
            nn.Sequential(
                nn.Conv2d(4, 8, 3, stride=2, padding=1),
                _eval_batchnorm(nn.BatchNorm2d(8)),
                nn.ReLU(inplace=True),
                nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4, bias=False),
                _eval_batchnorm(nn.BatchNorm2d(8)),
                nn.ReLU(),
            ),
            (3, 4, 13, 11),
        ),
        "conv-bn-relu 1d": (
            nn.Sequential(
                nn.Conv1d(4, 6, 5, stride=3), _eval_batchnorm(nn.BatchNorm1d(6)), nn.ReLU()
            ),
            (2, 4, 31),
        ),
        "conv-bn-relu 3d": (
            nn.Sequential(
                nn.Conv3d(4, 6, 3, padding=(0, 1, 1)),
                _eval_batchnorm(nn.BatchNorm3d(6)),
                nn.ReLU(inplace=True),
            ),
            (2, 4, 5, 6, 7),
        ),
        "batchnorm on features": (
            nn.Sequential(nn.Linear(5, 6), _eval_batchnorm(nn.BatchNorm1d(6)), nn.ReLU()),
            (4, 5),
        ),
        "batchnorm without affine": (
            nn.Sequential(nn.Conv2d(4, 6, 1), _eval_batchnorm(nn.BatchNorm2d(6, affine=False))),
            (2, 4, 5, 5),
        ),
        "batchnorm without running statistics (autograd's)": (
            nn.Sequential(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6, track_running_stats=False).eval()),
            (2, 4, 5, 5),
        ),
        "padding 'same' and reflect (autograd's)": (
            nn.Sequential(
                nn.Conv2d(4, 6, 3, padding="same"),
                nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect"),
            ),
            (2, 4, 9, 9),
        ),
        "in-place ReLU on a view (autograd's)": (ReluOnHalf(), (2, 4, 6, 6)),
    }


MODELS = _models()


def _input_gradient(
    model: nn.Module, x: torch.Tensor, inside: bool, layout: torch.memory_format | None = None
) -> torch.Tensor:
    inputs = x.clone().requires_grad_(True)
    with input_gradients_only(model, backward_layout=layout) if inside else nullcontext():
        y = model(inputs)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    return torch.autograd.grad(y, inputs, weights)[0]


@pytest.mark.parametrize("backward_layout", [None, torch.channels_last])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", list(MODELS))
def test_input_gradients_equal_autograds(name, channels_last, backward_layout):
    model, shape = MODELS[name]
    if channels_last and len(shape) != 4:
        pytest.skip("channels_last is a 4-d layout")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    hooks, grad_mode = hook_count(model), torch.is_grad_enabled()
    expected = _input_gradient(model, x, inside=False)
    got = _input_gradient(model, x, inside=True, layout=backward_layout)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert hook_count(model) == hooks and torch.is_grad_enabled() == grad_mode


def test_convolutions_batchnorm_and_relu_keep_only_masks():
    model, shape = MODELS["conv-bn-relu 2d"]
    x = torch.randn(shape)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(inside: bool) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            _input_gradient(model, x, inside)
        return sum(seen.values())

    # Autograd keeps every convolution and BatchNorm input (float32); inside the
    # block only the two ReLU masks (one byte per element) and per-channel scales.
    mask_bytes = x.shape[0] * 8 * 7 * 6 * 2
    assert saved_bytes(inside=True) <= mask_bytes + 2 * 8 * 4
    assert saved_bytes(inside=False) > 4 * mask_bytes


def test_hooks_go_and_grad_mode_returns_when_a_layer_raises():
    model, shape = MODELS["conv-bn-relu 2d"]
    hooks = hook_count(model)
    wrong = torch.randn(shape[0], 5, *shape[2:], requires_grad=True)  # 5 channels, not 4
    with pytest.raises(RuntimeError), input_gradients_only(model):
        model(wrong)  # raises inside the first convolution, while autograd is off
    assert torch.is_grad_enabled()
    assert hook_count(model) == hooks


def test_relu_gradient_at_zero_and_nan_equals_autograds():
    # Blocked at and below zero, passed at NaN: as autograd's own ReLU does.
    relu = nn.Sequential(nn.ReLU())
    x = torch.tensor([[-1.5, -0.0, 0.0, 1e-30, 2.0, float("nan")]])
    expected = _input_gradient(relu, x, inside=False)
    got = _input_gradient(relu, x, inside=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert got[0, :3].eq(0).all() and got[0, 3:].ne(0).all()


def test_backward_layout_sets_the_layout_of_convolution_input_gradients():
    model, shape = MODELS["conv-bn-relu 2d"]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))  # default layout
    got = _input_gradient(model, x, inside=True, layout=torch.channels_last)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    expected = _input_gradient(model, x, inside=False)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
