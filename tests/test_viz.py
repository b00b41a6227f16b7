import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from netlens import viz  # noqa: E402
from netlens.data import SmallResNet, Split, load_digits, train_classifier  # noqa: E402
from netlens.dissect import units_for_region  # noqa: E402
from netlens.viz import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _save(fig, figure_dir, name):
    fig.canvas.draw()
    if figure_dir:
        fig.savefig(os.path.join(figure_dir, name), dpi=100)


def _normalize_imagenet(photo: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def test_to_image_accepts_tensor_array_and_pil_alike():
    photo = skimage.data.chelsea()[:40, :60]
    expected = photo / 255.0
    tensor = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    for img in (
        photo,
        tensor,
        tensor[None],
        Image.fromarray(photo),
        photo.astype(np.float32) / 255,
    ):
        out = viz.to_image(img)
        assert out.shape == (40, 60, 3)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_to_image_makes_grayscale_rgb():
    out = viz.to_image(torch.rand(1, 5, 7))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    ("img", "error", "match"),
    [
        (torch.rand(3, 5, 3), ValueError, "cannot tell"),
        (torch.rand(2, 3, 4, 4), ValueError, "batch of 2"),
        (torch.randn(3, 8, 8) * 3, ValueError, "mean= and std="),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_to_image_explains_bad_input(img, error, match):
    with pytest.raises(error, match=match):
        viz.to_image(img)


def test_normalize_constant_map_gives_zeros_not_nan():
    for value in (torch.full((4, 4), 3.0), np.full((4, 4), 3.0)):
        out = viz.normalize(value)
        assert not np.isnan(np.asarray(out)).any() and float(out.max()) == 0.0
    out = viz.normalize(torch.tensor([[-2.0, 0.0], [2.0, 6.0]]))
    assert out.min() == 0 and out.max() == 1


def test_blend_with_alpha_zero_reproduces_the_uint8_photo():
    photo = skimage.data.chelsea()
    x = _normalize_imagenet(photo)
    heat = torch.rand(7, 7)
    picture = viz.to_image(x, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = viz.blend(picture, heat, alpha=0.0)
    restored = np.round(out * 255).astype(int)
    assert np.abs(restored - photo.astype(int)).max() <= 1


def test_blend_colours_the_hot_corner():
    heat = torch.zeros(2, 2)
    heat[0, 0] = 1.0
    out = viz.blend(torch.zeros(3, 16, 16), heat, alpha=1.0, cmap="gray")
    assert out.shape == (16, 16, 3)
    assert out[0, 0].min() == pytest.approx(1.0) and out[-1, -1].max() == pytest.approx(0.0)


def test_overlay_on_chelsea(figure_dir):
    photo = skimage.data.chelsea()
    x = _normalize_imagenet(photo)
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


def test_reduce_channels_methods():
    features = torch.rand(2, 6, 4, 5)
    assert torch.equal(viz.reduce_channels(features, "mean"), features.mean(1))
    assert torch.equal(viz.reduce_channels(features, "max"), features.amax(1))
    rgb = viz.reduce_channels(features, "pca")
    assert rgb.shape == (2, 4, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.equal(rgb, viz.reduce_channels(features.clone(), "pca"))
    with pytest.raises(ValueError, match="pca"):
        viz.reduce_channels(features, "tsne")


def test_pca_first_component_follows_the_dominant_direction():
    torch.manual_seed(0)
    signal = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4)
    direction = torch.tensor([3.0, -1.0, 2.0, 0.5]).reshape(1, 4, 1, 1)
    features = signal * direction + 0.001 * torch.randn(1, 4, 4, 4)
    red = viz.reduce_channels(features, "pca")[0, ..., 0]
    assert torch.corrcoef(torch.stack([red.flatten(), signal.flatten()]))[0, 1] > 0.99


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
    x = torch.stack([_normalize_imagenet(photo), _normalize_imagenet(photo[:, ::-1])])
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
