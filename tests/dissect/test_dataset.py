import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.ops import Permute

import netlens.dissect.dataset as dataset_module
from netlens.datasets import scenes
from netlens.dissect import Dissection, dissect
from netlens.hooks import hook_count
from netlens.testing import assert_unchanged, snapshot

matplotlib.use("Agg")


def indicator_net() -> nn.Sequential:
    """Unit 0 copies input channel 0; units 1-3 mix all channels at random."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight[0] = 0.0
        conv.weight[0, 0] = 1.0
        conv.bias[0] = 0.0
    return nn.Sequential(conv).eval()


def indicator_data(n: int = 12, size: int = 16):
    """Channel 0 of the images is the mask "square"; "band" and "corner" never meet it."""
    g = torch.Generator().manual_seed(1)
    square = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        top, left = torch.randint(2, size // 2, (2,), generator=g).tolist()
        square[i, top : top + 5, left : left + 5] = True
    band = torch.zeros_like(square)
    band[:, :2] = True
    corner = torch.zeros_like(square)
    corner[:, -2:, -2:] = True
    x = torch.rand(n, 3, size, size, generator=g)
    x[:, 0] = square.float()
    return x, {"square": square, "band": band, "corner": corner}


def test_indicator_unit_matches_its_mask_exactly():
    model = indicator_net()
    x, masks = indicator_data()
    frequency = float(masks["square"].float().mean())
    found = dissect(model, "0", x, masks, quantile=frequency, batch_size=5, progress=False)
    square, band, corner = (found.concepts.index(c) for c in ("square", "band", "corner"))
    assert float(found.iou[0, square]) == pytest.approx(1.0)
    assert float(found.iou[0, band]) == 0.0 and float(found.iou[0, corner]) == 0.0
    assert found.label(0) == ("square", pytest.approx(1.0))
    assert found.top("square", 1) == [(0, pytest.approx(1.0))]
    # the threshold is numpy's quantile of the same activations, for every unit
    with torch.no_grad():
        acts = model(x).transpose(0, 1).reshape(4, -1).double().numpy()
    expected = np.quantile(acts, 1 - frequency, axis=1)
    np.testing.assert_allclose(found.thresholds.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert float(found.unit_fraction[0]) == pytest.approx(frequency)
    assert float(found.ceiling[0, square]) == pytest.approx(1.0)


def brute_force(model, layer_output, x, masks, quantile):
    """Every activation kept: numpy quantiles, bilinear upsampling, IoU over all pixels."""
    with torch.no_grad():
        maps = layer_output(model, x)
    units = maps.shape[1]
    values = maps.transpose(0, 1).reshape(units, -1).double().numpy()
    thresholds = np.quantile(values, 1 - quantile, 1)
    size = next(iter(masks.values())).shape[1:]
    up = F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False).double()
    above = (up > torch.from_numpy(thresholds).view(1, -1, 1, 1)).numpy()
    iou = np.zeros((units, len(masks)))
    for k, mask in enumerate(masks.values()):
        m = mask.numpy()[:, None]
        iou[:, k] = (above & m).sum((0, 2, 3)) / np.maximum((above | m).sum((0, 2, 3)), 1)
    return thresholds, iou


def small_cnn() -> nn.Sequential:
    torch.manual_seed(2)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 4),
    ).eval()


def upto(index):
    return lambda model, x: model[: index + 1](x)


@pytest.mark.parametrize("quantile", [0.005, 0.2, 0.8])
def test_matches_a_brute_force_dissection(quantile):
    data = scenes(14, size=32, seed=4)
    model = small_cnn()
    found = dissect(
        model, "3", data.images, data.masks, quantile=quantile, batch_size=4, progress=False
    )
    thresholds, iou = brute_force(model, upto(3), data.images, data.masks, quantile)
    np.testing.assert_allclose(found.thresholds.numpy(), thresholds, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(found.iou.numpy(), iou, atol=1e-12)
    assert found.iou.shape == (6, len(data.masks)) and found.images == 14
    assert found.layer == "3" and found.quantile == quantile


def test_loader_and_tensor_give_the_same_result():
    data = scenes(10, size=32, seed=6)
    model = small_cnn()
    from_tensor = dissect(
        model, "1", data.images, data.masks, quantile=0.1, batch_size=3, progress=False
    )
    loader = DataLoader(TensorDataset(data.images, data.labels), batch_size=4)
    from_loader = dissect(model, "1", loader, data.masks, quantile=0.1, progress=False)
    batches = [data.images[:7], data.images[7:]]
    from_list = dissect(model, "1", batches, data.masks, quantile=0.1, progress=False)
    # convolutions round differently for other batch sizes: equal up to that
    for other in (from_loader, from_list):
        assert torch.allclose(other.thresholds, from_tensor.thresholds, rtol=1e-5, atol=1e-7)
        assert torch.allclose(other.iou, from_tensor.iou, atol=1e-3)
        assert torch.equal(other.top_images, from_tensor.top_images)


def test_numpy_and_integer_masks_are_read_like_bool_tensors():
    data = scenes(6, size=32, seed=6)
    model = small_cnn()
    reference = dissect(model, "1", data.images, data.masks, quantile=0.1, progress=False)
    as_numpy = {c: m.numpy() for c, m in data.masks.items()}
    as_uint8 = {c: m.to(torch.uint8) for c, m in data.masks.items()}
    for masks in (as_numpy, as_uint8):
        found = dissect(model, "1", data.images, masks, quantile=0.1, progress=False)
        assert torch.equal(found.iou, reference.iou)


def test_channels_last_layer_is_read_along_its_channels():
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, stride=2, padding=1), Permute([0, 2, 3, 1]), nn.Linear(5, 4)
    ).eval()
    data = scenes(6, size=32, seed=2)
    found = dissect(model, "2", data.images, data.masks, quantile=0.1, progress=False)
    thresholds, iou = brute_force(
        model, lambda m, x: m(x).permute(0, 3, 1, 2), data.images, data.masks, 0.1
    )
    assert found.iou.shape == (4, len(data.masks))
    np.testing.assert_allclose(found.thresholds.numpy(), thresholds, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(found.iou.numpy(), iou, atol=1e-12)


def test_top_images_are_where_each_unit_peaks():
    data = scenes(20, size=32, seed=8)
    model = small_cnn()
    found = dissect(model, "3", data.images, data.masks, examples=3, batch_size=6, progress=False)
    with torch.no_grad():
        maps = model[:4](data.images)
    peaks = maps.flatten(2).amax(2)  # (N, units)
    expected = torch.sort(peaks.T, dim=1, descending=True, stable=True).indices[:, :3]
    assert torch.equal(found.top_images, expected)
    assert torch.allclose(found.top_maps[2, 0], maps[int(expected[2, 0]), 2])
    regions = found.regions(2, (32, 32))
    up = F.interpolate(
        maps[expected[2]][:, 2:3], size=(32, 32), mode="bilinear", align_corners=False
    )[:, 0]
    assert torch.equal(regions, up.double() > found.thresholds[2])


def test_model_is_left_as_found():
    model = small_cnn().train()
    model[0].eval()
    data = scenes(6, size=32)
    before = snapshot(model)
    dissect(model, "3", data.images, data.masks, progress=False)
    assert_unchanged(model, before)
    assert hook_count(model) == 0
    assert model.training and not model[0].training


def test_rows_table_and_detectors():
    model = indicator_net()
    x, masks = indicator_data()
    found = dissect(
        model, "0", x, masks, quantile=float(masks["square"].float().mean()), progress=False
    )
    rows = found.rows()
    assert [r["unit"] for r in rows][0] == 0 and len(rows) == 4
    assert all(rows[i]["iou"] >= rows[i + 1]["iou"] for i in range(3))
    assert [r["unit"] for r in found.rows(min_iou=0.99)] == [0]
    text = found.table(2)
    assert text.splitlines()[1].split()[:3] == ["0", "square", "1.000"]
    assert len(text.splitlines()) == 3


def test_ceiling_bounds_every_iou():
    data = scenes(12, size=32, seed=9)
    found = dissect(small_cnn(), "1", data.images, data.masks, quantile=0.3, progress=False)
    assert bool((found.iou <= found.ceiling + 1e-12).all())
    shares = torch.tensor(list(data.fractions().values()), dtype=torch.float64)
    assert torch.allclose(found.concept_fraction, shares)


def test_dead_unit_has_no_region_and_iou_zero():
    model = indicator_net()
    with torch.no_grad():
        model[0].weight[1] = 0.0
        model[0].bias[1] = -1.0  # constant
    x, masks = indicator_data()
    found = dissect(model, "0", x, masks, quantile=0.1, progress=False)
    assert float(found.unit_fraction[1]) == 0.0
    assert float(found.iou[1].max()) == 0.0
    assert found.label(1)[1] == 0.0


def test_plot_draws_each_unit_row():
    x, masks = indicator_data()
    found = dissect(indicator_net(), "0", x, masks, quantile=0.1, examples=4, progress=False)
    fig = found.plot(x, masks, units=[0, 2], examples=3)
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title().startswith("unit 0: square")
    fig = found.plot(x, masks, concept="band", count=2)
    assert len(fig.axes) == 8 and "band" in fig.axes[0].get_title()
    with pytest.raises(IndexError):
        found.plot(x, masks, units=[9])
    with pytest.raises(KeyError):
        found.plot(x, masks, concept="sky")
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda x, m: (iter([x]), m), TypeError, "read only once"),
        (lambda x, m: (x[:5], m), ValueError, "masks for"),
        (lambda x, m: ([x[:5]], m), ValueError, "holds 5 images"),
        (lambda x, m: ([x, x], m), ValueError, "more images"),
        (lambda x, m: (x, {k: v.float() for k, v in m.items()}), TypeError, "bool"),
        (lambda x, m: (x, {"a": m["square"].long() * 2}), ValueError, "other than 0 and 1"),
        (lambda x, m: (x, {"a": m["square"], "b": m["band"][:, :4]}), ValueError, "shape"),
        (lambda x, m: (x, {}), ValueError, "empty"),
        (lambda x, m: (x, m["square"]), TypeError, "mapping"),
        (lambda x, m: (x, {"a": m["square"][0]}), ValueError, "(N, H, W)"),
    ],
)
def test_bad_inputs_are_refused(change, error, words):
    x, masks = indicator_data()
    images, masks = change(x, masks)
    with pytest.raises(error, match=words if words != "(N, H, W)" else r"\(N, H, W\)"):
        dissect(indicator_net(), "0", images, masks, progress=False)


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.1, True])
def test_bad_quantiles(quantile):
    x, masks = indicator_data()
    with pytest.raises((ValueError, TypeError)):
        dissect(indicator_net(), "0", x, masks, quantile=quantile, progress=False)


def test_layer_without_maps_is_refused():
    data = scenes(4, size=32)
    with pytest.raises(ValueError, match="spatial maps"):
        dissect(small_cnn(), "6", data.images, data.masks, progress=False)


def test_too_many_kept_values_are_refused(monkeypatch):
    monkeypatch.setattr(dataset_module, "MAX_KEPT_VALUES", 100)
    x, masks = indicator_data()
    with pytest.raises(ValueError, match="exact thresholds would hold"):
        dissect(indicator_net(), "0", x, masks, quantile=0.3, progress=False)


def test_result_lookups_refuse_what_is_not_there():
    x, masks = indicator_data()
    masks["never"] = torch.zeros_like(masks["square"])
    found = dissect(indicator_net(), "0", x, masks, quantile=0.1, progress=False)
    assert isinstance(found, Dissection) and found.units == 4
    with pytest.raises(ValueError, match="covers no pixel"):
        found.top("never")
    with pytest.raises(KeyError, match="no concept"):
        found.top("sky")
    with pytest.raises(IndexError):
        found.label(4)
    with pytest.raises(TypeError):
        found.label(1.0)
