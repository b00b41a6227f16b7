"""Occlusion equals an explicit loop over windows and captum's Occlusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import SmallCNN, assert_unchanged, get_model, snapshot
from netlens._plan import channels_last_possible
from netlens.attribution import METHODS
from netlens.testing import check_attribution

Occlusion = METHODS["occlusion"]


def _small() -> nn.Module:
    """A small CNN with 5 classes: many forward passes stay quick."""
    torch.manual_seed(0)
    return SmallCNN().eval()


def _images(n: int = 2, side: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _explicit(model, x, target, window, stride, baseline=0.0):
    """Mean logit drop per pixel, one forward pass per window, windows placed by hand."""
    n, _, height, width = x.shape

    def starts(side, size, step):
        found, start = [0], 0
        while start + size < side:  # until a window reaches the border
            start += step
            found.append(start)
        return found

    with torch.no_grad():
        clean = model(x)[torch.arange(n), target]
        total = torch.zeros(n, height, width)
        count = torch.zeros(height, width)
        for top in starts(height, window[0], stride[0]):
            for left in starts(width, window[1], stride[1]):
                rows = slice(top, top + window[0])
                cols = slice(left, left + window[1])
                occluded = x.clone()
                fill = torch.as_tensor(baseline, dtype=x.dtype).expand(x.shape[1:])
                occluded[:, :, rows, cols] = fill[:, rows, cols]
                drop = clean - model(occluded)[torch.arange(n), target]
                total[:, rows, cols] += drop[:, None, None]
                count[rows, cols] += 1
    return total / count


@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [
        ((8, 8), (4, 4), 0.0),
        ((8, 8), (5, 5), 0.5),  # 5 does not tile: the last window is cut off at the border
        ((10, 6), (7, 3), "mean"),  # per-channel baseline (C, 1, 1)
    ],
)
def test_occlusion_equals_an_explicit_loop_over_windows(window, stride, baseline):
    model = _small()
    x = _images()
    if baseline == "mean":
        baseline = x.mean(dim=(0, 2, 3)).view(3, 1, 1)
    targets = torch.tensor([3, 1])
    before = snapshot(model)
    ours = Occlusion(model, window=window, stride=stride, baseline=baseline)(x, targets)
    assert_unchanged(model, before)
    expected = _explicit(model, x, targets, window, stride, baseline)
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("name", "window", "stride"),
    [
        ("resnet18", (8, 8), (8, 8)),
        ("small", (8, 8), (3, 3)),  # 3 does not tile 32 - 8
        ("small", (12, 5), (7, 5)),
        ("small", (32, 6), (1, 4)),  # the window spans the height
    ],
)
def test_occlusion_equals_captum(name, window, stride):
    captum = pytest.importorskip("captum.attr")
    model = get_model(name) if name != "small" else _small()
    x = _images()
    targets = [4, 2]
    ours = Occlusion(model, window=window, stride=stride)(x, targets)
    theirs = captum.Occlusion(model).attribute(
        x,
        sliding_window_shapes=(3, *window),
        strides=(3, *stride),
        baselines=0.0,
        target=targets,
        perturbations_per_eval=32,
    )
    assert torch.equal(theirs[:, 0], theirs[:, 2])  # the window spans the channels
    scale = float(theirs.abs().max())
    assert torch.allclose(ours, theirs[:, 0], rtol=1e-5, atol=1e-5 * scale)


def test_a_linear_model_with_one_pixel_windows_gives_input_times_weight():
    # Occluding one pixel (all channels) with 0 removes exactly its term of the logit:
    # the drop is sum_c x_c w_c, negative where the pixel works against the class.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4)).eval()
    x = torch.randn(2, 3, 6, 6)
    maps = Occlusion(model, window=1, stride=1)(x, [1, 3])
    weights = model[1].weight.detach().view(4, 3, 6, 6)
    expected = torch.stack([(x[0] * weights[1]).sum(0), (x[1] * weights[3]).sum(0)])
    assert torch.allclose(maps, expected, atol=1e-5)
    assert (maps < 0).any() and (maps > 0).any()  # signed
    absolute = Occlusion(model, window=1, stride=1, abs=True)(x, [1, 3])
    assert torch.allclose(absolute, expected.abs(), atol=1e-5)
    summed = Occlusion(model, window=1, stride=1, channel_reduce="sum")(x, [1, 3])
    assert torch.allclose(summed, 3 * expected, atol=1e-5)
    assert torch.equal(Occlusion(model, window=1, stride=1, channel_reduce="max")(x, [1, 3]), maps)


def test_many_targets_equal_one_call_per_column_and_cost_no_extra_passes():
    model = _small()
    x = _images()
    method = Occlusion(model, window=8, stride=8)
    targets = torch.tensor([[1, 4, 3], [0, 4, 2]])
    method(x[:1], 0)  # the first call of an image size plans its layout (one more image)
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(len(args[0])))
    try:
        many = method(x, targets)
        many_calls = len(calls)
        columns = [method(x, targets[:, k]) for k in range(3)]
    finally:
        handle.remove()
    assert many.shape == (2, 3, 32, 32)
    for k, column in enumerate(columns):
        assert torch.allclose(many[:, k], column, atol=1e-6)
    assert many_calls == len(calls) // 4  # each column alone costs what all three cost


def test_batch_size_does_not_change_the_maps():
    model = _small()
    x = _images()
    one = Occlusion(model, window=8, stride=4, batch_size=7)(x, [1, 2])
    other = Occlusion(model, window=8, stride=4, batch_size=64)(x, [1, 2])
    assert torch.allclose(one, other, rtol=1e-5, atol=1e-6 * float(other.abs().max()))


@pytest.mark.parametrize(("n", "batch_size"), [(1, 64), (2, 64), (2, 5), (3, 50)])
def test_forward_passes_are_each_images_batches_and_nothing_more(n, batch_size):
    model = _small()
    x = _images(n)
    method = Occlusion(model, window=8, stride=4, batch_size=batch_size)
    windows = ((32 - 8) // 4 + 1) ** 2  # 7 x 7 positions
    assert len(method.windows(32, 32)) == windows
    sizes = []
    handle = model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        top = method(x)
        again = len(sizes)
        method(x)
    finally:
        handle.remove()
    # Per image: the image itself and its occluded copies, batch_size at a time;
    # the top classes come from the image's own row, with no pass of its own.
    per_image = [min(batch_size, windows + 1 - s) for s in range(0, windows + 1, batch_size)]
    # The first call of an image size runs its first image once more, to plan the
    # batches' layout (netlens._plan), where another layout is possible.
    planned = [1] if channels_last_possible(model, x) else []
    assert sizes[:again] == planned + per_image * n
    assert sizes[again:] == per_image * n
    with torch.no_grad():
        best = model(x).argmax(1)
    assert torch.equal(top, method(x, best))


def test_an_images_map_does_not_depend_on_the_rest_of_the_batch():
    model = _small()
    x = _images(3)
    method = Occlusion(model, window=8, stride=8, batch_size=7)
    batched = method(x, [1, 2, 3])
    assert torch.equal(batched[1:2], method(x[1:2], 2))


def test_default_windows_are_a_quarter_of_the_image_with_half_overlap():
    method = Occlusion(_small())
    for height, width in [(224, 224), (64, 64), (32, 28), (299, 13), (1, 1), (7, 100), (5, 9)]:
        boxes = method.windows(height, width)
        h, w = math.ceil(height / 4), math.ceil(width / 4)
        assert boxes[0] == (0, h, 0, w)
        assert len(boxes) == 1 or boxes[1][2] == (math.ceil(w / 2) if w < width else 0)
        assert len(boxes) <= 7 * 7
        covered = torch.zeros(height, width, dtype=torch.long)
        for top, bottom, left, right in boxes:
            assert bottom - top <= h and right - left <= w
            covered[top:bottom, left:right] += 1
        assert (covered > 0).all()  # no pixel without a window: no 0 / 0
    assert method.windows(224, 224)[:2] == [(0, 56, 0, 56), (0, 56, 28, 84)]
    assert len(method.windows(224, 224)) == 49
    for side in range(1, 300):
        assert len(method.windows(side, side)) <= 49


def test_every_pixel_is_covered_for_any_stride_up_to_the_window():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 11 * 9, 2)).eval()
    x = torch.randn(1, 3, 11, 9)
    for size in range(1, 10):
        for step in range(1, size + 1):
            maps = Occlusion(model, window=size, stride=step)(x, 0)
            assert torch.isfinite(maps).all()


def test_progress_bar(capsys):
    model = _small()
    Occlusion(model, window=16, stride=8, progress=True)(_images(1))
    assert "Occlusion" in capsys.readouterr().err
    Occlusion(model, window=16, stride=8)(_images(1))
    assert "Occlusion" not in capsys.readouterr().err


def test_the_targets_are_chosen_on_the_image_as_given():
    model = _small()
    x = _images()
    with torch.no_grad():
        top1 = model(x).argmax(1)
    method = Occlusion(model, window=16, stride=16)
    assert torch.equal(method(x), method(x, top1))


def test_bad_arguments_are_refused():
    model = _small()
    x = _images(1)
    with pytest.raises(ValueError, match="no window covers"):
        Occlusion(model, window=4, stride=5)(x)
    with pytest.raises(ValueError, match="larger than the image"):
        Occlusion(model, window=(40, 4))(x)
    with pytest.raises(ValueError, match="does not broadcast"):
        Occlusion(model, window=8, baseline=torch.zeros(2, 1, 1))(x)
    with pytest.raises(TypeError, match="window"):
        Occlusion(model, window=(4, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        Occlusion(model, stride=0)
    with pytest.raises(TypeError, match="baseline"):
        Occlusion(model, baseline="grey")
    with pytest.raises(ValueError, match="finite"):
        Occlusion(model, baseline=float("nan"))
    with pytest.raises(ValueError, match="channel_reduce"):
        Occlusion(model, channel_reduce="min")
    with pytest.raises(ValueError, match="batch_size"):
        Occlusion(model, batch_size=0)


def test_occlusion_keeps_the_contract():
    check_attribution(Occlusion)  # default windows: 8 x 7 pixels, 7 x 7 of them
    check_attribution(Occlusion, window=(6, 5), stride=(5, 4), baseline=torch.full((3, 1, 1), 0.2))
