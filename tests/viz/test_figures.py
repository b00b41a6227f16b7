"""Every kind of picture: what it draws, and the one ax= / fig= convention they share."""

import inspect
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import FigureBase  # noqa: E402
from torch import nn  # noqa: E402

from netlens import viz  # noqa: E402
from netlens.datasets import Split, load_digits  # noqa: E402
from netlens.dissect import units_for_region  # noqa: E402
from netlens.models import SmallResNet, train_classifier  # noqa: E402
from netlens.viz import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _save(fig, figure_dir, name):
    fig.canvas.draw()
    if figure_dir:
        fig.savefig(os.path.join(figure_dir, name), dpi=100)


def test_overlay_on_chelsea(figure_dir):
    photo = skimage.data.chelsea()
    x = TF.normalize(TF.to_tensor(photo), IMAGENET_MEAN, IMAGENET_STD)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 14), torch.linspace(-1, 1, 14), indexing="ij")
    heat = torch.exp(-((yy + 0.2) ** 2 + (xx - 0.1) ** 2) / 0.1)  # a blob over the cat's face
    ax = viz.overlay(x, heat, mean=IMAGENET_MEAN, std=IMAGENET_STD, title="heat over chelsea")
    _save(ax.figure, figure_dir, "overlay_chelsea.png")
    drawn = ax.images[0].get_array()
    assert drawn.shape == (*photo.shape[:2], 3)
    assert 0 <= drawn.min() and drawn.max() <= 1
    assert ax.get_title() == "heat over chelsea"


@pytest.fixture(scope="module")
def digits_net() -> nn.Module:
    train, _ = load_digits(size=16)
    subset = Split(train.images[:300], train.labels[:300])  # keeps the test to a few seconds
    net = SmallResNet(width=8)
    train_classifier(net, subset, epochs=2, progress=False)
    return net


@pytest.mark.slow
def test_filter_grid_of_trained_digits_cnn(digits_net, figure_dir):
    fig, axes = plt.subplots(1, 2, figsize=(9, 5), layout="constrained")
    viz.filter_grid(digits_net.conv1, ax=axes[0])
    viz.filter_grid(digits_net.layer1.conv1, scale="filter", ax=axes[1])
    _save(fig, figure_dir, "filter_grid_digits.png")
    first = axes[0].images[0].get_array()
    # 8 filters of 3x3 in a 3x3 grid with 1-pixel white gaps
    assert first.shape == (11, 11, 3)
    assert axes[0].images[0].get_interpolation() == "nearest"
    assert first.min() == 0 and first.max() == 1
    assert "8 filters 3x3" in axes[0].get_title()
    assert "mean of 8 input channels" in axes[1].get_title()


def test_filter_grid_rgb_and_scales():
    conv = nn.Conv2d(3, 4, 5)
    with torch.no_grad():
        conv.weight[0] *= 0.01  # a weak filter
    by_layer = viz.filter_grid(conv, ncols=4).images[0].get_array()
    by_filter = viz.filter_grid(conv.weight, scale="filter", ncols=4).images[0].get_array()
    assert by_layer.shape == by_filter.shape == (5, 23, 3)
    weak_layer, weak_filter = by_layer[:, :5], by_filter[:, :5]
    assert np.ptp(weak_layer) < 0.1 and np.ptp(weak_filter) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scale"):
        viz.filter_grid(conv, scale="global")
    with pytest.raises(ValueError, match="out_channels"):
        viz.filter_grid(torch.rand(3, 3))


def test_activation_grid_panels_are_normalised_and_titled():
    features = torch.randn(3, 10, 6, 6) * 5
    fig = viz.activation_grid(features, channels=4, images=2)
    fig.canvas.draw()
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["ch 0", "ch 1", "ch 2", "ch 3"]
    assert fig.axes[4].get_ylabel() == "image 1"
    for ax in fig.axes:
        panel = ax.images[0].get_array()
        assert panel.shape == (6, 6) and panel.min() == 0 and panel.max() == 1
    with pytest.raises(IndexError, match="channels"):
        viz.activation_grid(features, channels=[12])


def test_topk_bars_draws_k_named_bars_best_on_top():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 0.5, 1.0])
    names = ["a", "b", "c", "d", "e", "f"]
    ax = viz.topk_bars(logits, names, k=3)
    ax.figure.canvas.draw()
    assert len(ax.patches) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "f"]
    assert [p.get_width() for p in ax.patches] == pytest.approx([3.0, 2.0, 1.0])
    assert ax.get_ylim()[0] > ax.get_ylim()[1], "best class is drawn on top"
    with pytest.raises(ValueError, match="class names"):
        viz.topk_bars(logits, names[:2])


def test_ablation_comparison_shows_before_and_after():
    before = torch.tensor([[4.0, 1.0, 3.0, 0.0]])
    after = torch.tensor([[0.5, 1.0, 3.0, 2.0]])
    fig = viz.ablation_comparison(before, after, ["cat", "dog", "car", "sky"], k=2)
    fig.canvas.draw()
    left, right = fig.axes
    assert [t.get_text() for t in left.get_yticklabels()] == ["cat", "car"]
    assert [t.get_text() for t in right.get_yticklabels()] == ["car", "sky"]
    assert left.get_xlim() == right.get_xlim()
    assert "before" in left.get_title() and "after" in right.get_title()


def test_attribution_grid_layout(figure_dir):
    photo = skimage.data.chelsea()[::4, ::4]
    pair = torch.stack([TF.to_tensor(photo), TF.to_tensor(photo[:, ::-1].copy())])
    x = TF.normalize(pair, IMAGENET_MEAN, IMAGENET_STD)
    maps = {
        "CAM": torch.rand(2, 7, 7),
        "Grad-CAM": torch.rand(2, 7, 7),
        "Saliency": torch.rand(2, 75, 113),
    }
    fig = viz.attribution_grid(
        x, maps, titles=["cat", "flipped cat"], mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    _save(fig, figure_dir, "attribution_grid.png")
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:4]] == ["cat", "CAM", "Grad-CAM", "Saliency"]
    assert fig.axes[4].get_title() == "flipped cat"
    for ax in fig.axes:
        assert ax.images[0].get_array().shape == (*photo.shape[:2], 3)
    with pytest.raises(ValueError, match="one map per image"):
        viz.attribution_grid(x, {"CAM": torch.rand(3, 7, 7)}, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def test_region_units_figure(figure_dir):
    photo = skimage.data.astronaut()[::4, ::4]
    mask = np.zeros(photo.shape[:2], dtype=bool)
    mask[:, 96:] = True
    features = torch.rand(1, 6, 16, 16)
    features[0, 4, :, 12:] += 2.0
    found = units_for_region(features, mask, top=3)
    fig = viz.region_units(photo, found, mask=mask)
    _save(fig, figure_dir, "region_units.png")
    assert len(fig.axes) == 4
    unit, iou = fig.axes[1].get_title().split("IoU")
    assert unit.strip() == "unit 4" and float(iou) > 0.9
    assert fig.axes[1].images[0].get_array().shape == (*photo.shape[:2], 3)


# one convention: keyword-only ax= (returns the Axes) or fig= (returns the figure) ----


def _region_units(**where):
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    found = units_for_region(torch.rand(4, 4, 4), mask, top=2)
    return viz.region_units(torch.rand(3, 8, 8), found, mask=mask, **where)


def _unit_images(**where):
    from netlens.dissect import dissect

    images = torch.rand(4, 3, 8, 8)
    masks = {"bright": images.mean(1) > 0.5}
    found = dissect(
        nn.Sequential(nn.Conv2d(3, 2, 1)), "0", images, masks, quantile=0.1, progress=False
    )
    return viz.unit_images(found, images, masks, count=1, examples=2, **where)


BANK = torch.rand(4, 1, 8, 8)
DRAW = {
    "unit_images": _unit_images,
    "filter_grid": lambda **where: viz.filter_grid(nn.Conv2d(3, 4, 3), **where),
    "overlay": lambda **where: viz.overlay(torch.rand(3, 8, 8), torch.rand(2, 2), **where),
    "topk_bars": lambda **where: viz.topk_bars(torch.rand(4), k=2, **where),
    "tsne_scatter": lambda **where: viz.tsne_scatter(torch.rand(6, 2), [0, 1] * 3, **where),
    "activation_grid": lambda **where: viz.activation_grid(torch.rand(2, 3, 4, 4), **where),
    "ablation_comparison": lambda **where: viz.ablation_comparison(
        torch.rand(4), torch.rand(4), k=2, **where
    ),
    "attribution_grid": lambda **where: viz.attribution_grid(
        torch.rand(2, 3, 8, 8), {"A": torch.rand(2, 2, 2)}, **where
    ),
    "region_units": _region_units,
    "neighbour_grid": lambda **where: viz.neighbour_grid(BANK[:1], BANK, [[1, 2]], **where),
    "compare_tsne": lambda **where: viz.compare_tsne(torch.rand(6, 2), torch.rand(6, 2), **where),
}
NOT_PICTURES = {"to_image", "normalize", "blend", "reduce_channels", "save_figures"}
FUNCTIONS = sorted(name for name in viz.__all__ if inspect.isfunction(getattr(viz, name)))


def test_every_function_of_viz_is_a_picture_or_a_conversion():
    assert set(FUNCTIONS) == set(DRAW) | NOT_PICTURES


@pytest.mark.parametrize("name", sorted(DRAW))
def test_ax_and_fig_are_keyword_only_and_come_back(name):
    signature = inspect.signature(getattr(viz, name), eval_str=True)
    where = {"ax", "fig"} & set(signature.parameters)
    assert len(where) == 1, f"{name} takes {sorted(where)}"
    (key,) = where
    parameter = signature.parameters[key]
    kind = Axes if key == "ax" else FigureBase
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is None and parameter.annotation == kind | None
    assert signature.return_annotation is kind


@pytest.mark.parametrize("name", sorted(DRAW))
def test_a_picture_draws_where_it_is_told_and_returns_it(name):
    draw = DRAW[name]
    if "ax" in inspect.signature(getattr(viz, name)).parameters:
        _, ax = plt.subplots()
        assert draw(ax=ax) is ax
        assert ax.images or ax.collections or ax.patches
        made = draw()
        assert isinstance(made, Axes) and made is not ax
    else:
        figure = plt.figure()
        left, right = figure.subfigures(1, 2)
        assert draw(fig=right) is right
        assert right.axes and not left.axes
        assert draw(fig=right) is right, "a figure given twice is cleared, not stacked"
        assert len(right.axes) == len(draw().axes)
