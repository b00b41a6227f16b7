"""Figures laid out like a report: wrapped grids, three-panel mode, class rows, colorbars,
colours chosen by the values, layers side by side, chosen input channels of filters."""

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from netlens import FeatureExtractor, viz  # noqa: E402
from netlens.viz.attribution import NONNEGATIVE_CMAP, SIGNED_CMAP  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _png_size(fig) -> tuple[int, int]:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    buffer.seek(0)
    return Image.open(buffer).size  # (width, height) in pixels


def _map_panels(fig):
    """Axes that show a map (a colormapped image), in drawing order."""
    return [ax for ax in fig.axes if any(im.get_array().ndim == 2 for im in ax.images)]


def _heat(ax):
    (image,) = [im for im in ax.images if im.get_array().ndim == 2]
    return image


def _colorbars(fig):
    return [ax for ax in fig.axes if not ax.images and ax.collections]


# attribution_grid: layout --------------------------------------------------------------


def test_ncols_wraps_ten_images_into_two_rows_of_five():
    x, maps = torch.rand(10, 3, 16, 16), torch.rand(10, 4, 4)
    stacked = viz.attribution_grid(x, {"CAM": maps})
    wrapped = viz.attribution_grid(x, {"CAM": maps}, ncols=5)
    assert len(wrapped.axes) == len(stacked.axes) == 20
    rows = {round(ax.get_position().y0, 3) for ax in wrapped.axes}
    columns = {round(ax.get_position().x0, 3) for ax in wrapped.axes}
    assert len(rows) == 2 and len(columns) == 10
    # blocks run left to right: the first row is image | CAM five times, titled
    assert [ax.get_title() for ax in wrapped.axes[:4]] == ["image", "CAM", "image", "CAM"]
    assert [ax.get_title() for ax in wrapped.axes[10:]] == [""] * 10
    width, height = _png_size(wrapped)
    assert width > 2 * height
    tall_width, tall_height = _png_size(stacked)
    assert tall_height > 3 * tall_width


def test_a_last_short_row_leaves_no_empty_axes():
    fig = viz.attribution_grid(torch.rand(7, 3, 8, 8), torch.rand(7, 8, 8), ncols=3)
    assert len(fig.axes) == 14


@pytest.mark.parametrize("mode", ["overlay", "heatmap", "image-heatmap-overlay"])
def test_every_mode_renders_a_report_like_png(mode):
    fig = viz.attribution_grid(
        torch.rand(10, 3, 12, 12), torch.rand(10, 12, 12), ncols=5, mode=mode
    )
    width, height = _png_size(fig)
    assert width > height
    panels = {"overlay": 2, "heatmap": 2, "image-heatmap-overlay": 3}[mode]
    assert len(fig.axes) == 10 * panels and len(_map_panels(fig)) == 10 * (panels - 1)


def test_figure_follows_the_image_aspect():
    wide = viz.attribution_grid(torch.rand(2, 3, 16, 32), torch.rand(2, 4, 4))
    square = viz.attribution_grid(torch.rand(2, 3, 16, 16), torch.rand(2, 4, 4))
    assert wide.get_size_inches()[0] == pytest.approx(square.get_size_inches()[0])
    assert wide.get_size_inches()[1] < 0.7 * square.get_size_inches()[1]


def test_heatmap_mode_shows_each_map_at_its_own_resolution():
    x = torch.rand(2, 3, 16, 24)
    cam, saliency = torch.rand(2, 4, 6), torch.rand(2, 16, 24)
    fig = viz.attribution_grid(x, {"CAM": cam, "saliency": saliency}, mode="heatmap", clip=None)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "CAM", "saliency"]
    assert fig.axes[0].images[0].get_array().shape == (16, 24, 3)
    for ax, value in zip(fig.axes[1:3], (cam[0], saliency[0]), strict=True):
        (image,) = ax.images
        np.testing.assert_allclose(image.get_array(), value.double().numpy())
        assert image.get_extent() == [-0.5, 23.5, 15.5, -0.5]  # covers the image
        assert image.get_interpolation() == "nearest"


def test_three_panel_mode_is_image_heatmap_overlay_per_method():
    x = torch.rand(2, 3, 16, 16)
    maps = {"A": torch.rand(2, 4, 4), "B": torch.rand(2, 16, 16)}
    fig = viz.attribution_grid(x, maps, mode="image-heatmap-overlay")
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles == ["image", "A heatmap", "A overlay", "B heatmap", "B overlay"]
    assert len(fig.axes) == 10
    heat, over = fig.axes[1], fig.axes[2]
    assert len(heat.images) == 1 and heat.images[0].get_array().shape == (4, 4)
    assert len(over.images) == 2
    assert over.images[0].get_array().shape == (16, 16, 3)
    assert over.images[1].get_array().shape == (16, 16)  # resized to the image
    with pytest.raises(ValueError, match="show_image"):
        viz.attribution_grid(x, maps, mode="image-heatmap-overlay", show_image=False)
    with pytest.raises(ValueError, match="mode"):
        viz.attribution_grid(x, maps, mode="captum")


def test_k_classes_of_one_image_in_one_row_titled_by_class_and_score():
    names = ["cat", "dog", "car", "sky"]
    maps = torch.rand(2, 3, 4, 4)
    targets = torch.tensor([[0, 1, 3], [2, 0, 1]])
    scores = torch.tensor([[0.7, 0.2, 0.05], [0.9, 0.06, 0.01]])
    fig = viz.attribution_grid(
        torch.rand(2, 3, 8, 8),
        {"Grad-CAM": maps},
        targets=targets,
        class_names=names,
        scores=scores,
    )
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes] == [
        "image",
        "Grad-CAM\ncat 0.70",
        "Grad-CAM\ndog 0.20",
        "Grad-CAM\nsky 0.05",
        "",
        "car 0.90",
        "cat 0.06",
        "dog 0.01",
    ]
    rows = {round(ax.get_position().y0, 3) for ax in fig.axes}
    assert len(rows) == 2
    # the same classes for every image, without names
    fig = viz.attribution_grid(torch.rand(2, 3, 8, 8), maps, targets=[5, 6, 7])
    assert [ax.get_title() for ax in fig.axes[1:4]] == ["class 5", "class 6", "class 7"]


def test_bad_targets_scores_and_maps_raise():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="targets"):
        viz.attribution_grid(x, torch.rand(2, 3, 4, 4), targets=[1, 2])
    with pytest.raises(ValueError, match="scores"):
        viz.attribution_grid(x, torch.rand(2, 4, 4), targets=[1, 2], scores=[0.5])
    with pytest.raises(TypeError, match="integer"):
        viz.attribution_grid(x, torch.rand(2, 4, 4), targets=[1.5, 2.0])
    with pytest.raises(ValueError, match="class_names"):
        viz.attribution_grid(x, torch.rand(2, 4, 4), targets=[1, 9], class_names=["a", "b"])
    with pytest.raises(ValueError, match="targets= too"):
        viz.attribution_grid(x, torch.rand(2, 4, 4), class_names=["a", "b"])
    with pytest.raises(ValueError, match="same number K"):
        viz.attribution_grid(x, {"A": torch.rand(2, 4, 4), "B": torch.rand(2, 3, 4, 4)})
    with pytest.raises(ValueError, match="one map per image"):
        viz.attribution_grid(x, torch.rand(3, 4, 4))
    bad = torch.rand(2, 4, 4)
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        viz.attribution_grid(x, {"A": bad})
    with pytest.raises(ValueError, match="ncols"):
        viz.attribution_grid(x, bad.nan_to_num(), ncols=0)


def test_without_the_image_a_grid_of_overlays_titled_by_image():
    fig = viz.attribution_grid(
        torch.rand(4, 3, 8, 8), torch.rand(4, 8, 8), show_image=False, ncols=2, titles="abcd"
    )
    assert len(fig.axes) == 4
    assert all(len(ax.images) == 2 for ax in fig.axes)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]


# colours, opacity and colorbars -------------------------------------------------------


def test_colormap_follows_the_sign_of_each_method_and_cmap_overrides():
    x = torch.rand(2, 3, 8, 8)
    positive = torch.rand(2, 8, 8)
    signed = torch.rand(2, 8, 8)
    signed[1] -= 0.5  # only the second image's map has negative values
    fig = viz.attribution_grid(x, {"pos": positive, "signed": signed}, mode="heatmap")
    names = [_heat(ax).get_cmap().name for ax in _map_panels(fig)]
    assert names == [NONNEGATIVE_CMAP, SIGNED_CMAP] * 2 == ["inferno", "RdBu_r"] * 2
    # a signed map is centred at zero: symmetric limits at the 99th percentile of |m|
    first_signed = _heat(_map_panels(fig)[1])
    low, high = first_signed.norm.vmin, first_signed.norm.vmax
    assert low == -high
    assert high == pytest.approx(np.quantile(signed[0].abs().numpy(), 0.99))
    fig = viz.attribution_grid(x, {"pos": positive, "signed": signed}, cmap="jet")
    assert {_heat(ax).get_cmap().name for ax in _map_panels(fig)} == {"jet"}
    assert _heat(_map_panels(fig)[1]).norm.vmin < 0, "a signed map stays centred at 0"
    with pytest.raises(ValueError, match="colormap"):
        viz.attribution_grid(x, positive, cmap="no-such-map")


def test_overlay_opacity_follows_the_strength_of_the_map():
    heat = torch.linspace(0, 1, 64).reshape(8, 8) ** 3  # at the image's resolution
    ax = viz.overlay(torch.rand(3, 8, 8), heat, alpha=0.9, clip=None)
    layer = ax.images[1]
    low, high = float(heat.min()), float(heat.max())
    expected = 0.9 * (heat.double() - low) / (high - low)
    np.testing.assert_allclose(layer.get_alpha(), expected.numpy(), atol=1e-12)
    clipped = viz.overlay(torch.rand(3, 8, 8), heat, alpha=0.9).images[1]
    top = np.quantile(heat.double().numpy(), 0.99)
    assert clipped.norm.vmax == pytest.approx(top) and clipped.norm.vmin == low
    np.testing.assert_allclose(
        clipped.get_alpha(), 0.9 * np.clip((heat.double().numpy() - low) / (top - low), 0, 1)
    )
    signed = heat - 0.25
    layer = viz.overlay(torch.rand(3, 8, 8), signed, alpha=0.6, clip=None).images[1]
    np.testing.assert_allclose(
        layer.get_alpha(), 0.6 * signed.double().abs().numpy() / float(signed.abs().max())
    )
    flat = viz.overlay(torch.rand(3, 8, 8), heat, alpha_mode="constant").images[1]
    assert flat.get_alpha() == 0.5
    with pytest.raises(ValueError, match="alpha_mode"):
        viz.overlay(torch.rand(3, 8, 8), heat, alpha_mode="linear")
    with pytest.raises(ValueError, match="clip"):
        viz.overlay(torch.rand(3, 8, 8), heat, clip=0)


def test_constant_alpha_with_jet_draws_the_classic_blend():
    torch.manual_seed(0)
    image, heat = torch.rand(3, 20, 30), torch.rand(20, 30)
    fig = Figure(figsize=(3, 2), dpi=10)  # one screen pixel per image pixel
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    viz.overlay(image, heat, ax=ax, cmap="jet", alpha_mode="constant", clip=None)
    fig.canvas.draw()
    drawn = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    expected = viz.blend(image, heat, 0.5, "jet")
    assert np.abs(drawn - expected).max() < 3 / 255  # 8-bit and colormap-table rounding


def test_colorbars_show_the_raw_range_of_their_own_map():
    x = torch.rand(2, 3, 8, 8)
    maps = {"A": torch.rand(2, 8, 8) * 10 + 3, "B": torch.randn(2, 8, 8)}
    fig = viz.attribution_grid(x, maps, colorbar=True, clip=None)
    bars = _colorbars(fig)
    assert len(bars) == 4 and len(_map_panels(fig)) == 4
    fig.canvas.draw()
    expected = []
    for n in range(2):
        a, b = maps["A"][n], maps["B"][n]
        expected += [
            (float(a.min()), float(a.max())),
            (-float(b.abs().max()), float(b.abs().max())),
        ]
    for bar, (low, high) in zip(bars, expected, strict=True):
        assert bar.get_ylim() == pytest.approx((low, high))
    # clipped at a percentile: the bar ends there, with an arrow for the values beyond
    fig = viz.attribution_grid(x[:1], maps["A"][:1], colorbar=True, clip=90)
    (bar,) = _colorbars(fig)
    fig.canvas.draw()
    top = np.quantile(maps["A"][0].double().numpy(), 0.9)
    assert bar.get_ylim() == pytest.approx((float(maps["A"][0].min()), top))
    assert bar._colorbar.extend == "max"
    # three-panel mode: one bar per map, beside its heatmap; it renders with them
    fig = viz.attribution_grid(x, maps, colorbar=True, mode="image-heatmap-overlay", ncols=2)
    width, height = _png_size(fig)
    assert width > height
    bars = _colorbars(fig)
    heatmaps = [ax for ax in _map_panels(fig) if len(ax.images) == 1]
    assert len(bars) == len(heatmaps) == 4
    for bar, heatmap in zip(bars, heatmaps, strict=True):
        assert 0 < bar.get_position().x0 - heatmap.get_position().x1 < 0.05


def test_a_constant_map_says_so_and_has_no_colorbar():
    fig = viz.attribution_grid(torch.rand(1, 3, 8, 8), torch.zeros(1, 4, 4), colorbar=True)
    assert _colorbars(fig) == []
    (panel,) = _map_panels(fig)
    assert [t.get_text() for t in panel.texts] == ["constant 0"]
    assert np.all(np.asarray(panel.images[1].get_alpha()) == 0), "nothing drawn over the image"


# activation_grid: several layers ------------------------------------------------------


class ConvPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.pool2 = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def test_first_five_channels_of_every_conv_and_pool_layer_for_three_images():
    model = ConvPool().eval()
    layers = ["conv1", "pool1", "conv2", "pool2"]
    features = FeatureExtractor(model, layers)(torch.rand(4, 3, 16, 16))
    fig = viz.activation_grid(features, channels=5, images=3)
    assert [block.get_suptitle() for block in fig.subfigs] == [
        f"{name}  {tuple(features[name].shape[1:])}" for name in layers
    ]
    assert len(fig.axes) == 4 * 3 * 5
    for block, name in zip(fig.subfigs, layers, strict=True):
        assert len(block.axes) == 15
        assert [ax.get_title() for ax in block.axes[:5]] == [f"ch {c}" for c in range(5)]
        assert block.axes[5].get_ylabel() == "image 1"
        value = features[name][2, 4].detach()
        expected = (value - value.min()) / (value.max() - value.min())
        np.testing.assert_allclose(block.axes[14].images[0].get_array(), expected, atol=1e-6)
    positions = {(round(b.bbox.x0), round(b.bbox.y0)) for b in fig.subfigs}
    assert len(positions) == 4  # 2 x 2 blocks by default
    width, height = _png_size(fig)
    assert 0.5 < width / height < 4


def test_layer_blocks_choose_channels_per_layer_and_check_them():
    features = {"a": torch.rand(2, 3, 4, 4), "b": torch.rand(2, 10, 2, 2)}
    fig = viz.activation_grid(features, channels={"a": 2, "b": [9, 0]}, images=[1])
    assert [len(block.axes) for block in fig.subfigs] == [2, 2]
    assert [ax.get_title() for ax in fig.subfigs[1].axes] == ["ch 9", "ch 0"]
    assert fig.subfigs[0].axes[0].get_ylabel() == "image 1"
    side = viz.activation_grid(features, channels=3, layers_per_row=2)
    assert round(side.subfigs[0].bbox.y0) == round(side.subfigs[1].bbox.y0)
    with pytest.raises(IndexError, match="channels of 'a'"):
        viz.activation_grid(features, channels=[5])
    with pytest.raises(ValueError, match="missing \\['b'\\]"):
        viz.activation_grid(features, channels={"a": 2})
    with pytest.raises(ValueError, match="same images"):
        viz.activation_grid({"a": torch.rand(2, 3, 4, 4), "b": torch.rand(3, 3, 4, 4)})
    with pytest.raises(TypeError, match="dict of layers"):
        viz.activation_grid(torch.rand(2, 3, 4, 4), channels={"a": 2})
    with pytest.raises(ValueError, match="no layers"):
        viz.activation_grid({})


def test_layer_blocks_fill_a_given_subfigure_and_clear_it():
    figure = plt.figure()
    left, right = figure.subfigures(1, 2)
    features = {"a": torch.rand(2, 3, 4, 4), "b": torch.rand(2, 3, 2, 2)}
    assert viz.activation_grid(features, channels=2, images=2, fig=right) is right
    assert viz.activation_grid(features, channels=2, images=2, fig=right) is right
    assert len(right.subfigs) == 2 and len(figure.axes) == 8 and not left.axes


# filter_grid: chosen input channels ----------------------------------------------------


def test_filter_grid_one_tile_per_filter_and_chosen_input_channel():
    conv = nn.Conv2d(16, 5, 3)
    chosen = [3, 0, 11]
    ax = viz.filter_grid(conv, in_channels=chosen, ncols=2)
    mosaic = ax.images[0].get_array()
    # 3 rows of groups; a group is 3 tiles of 3 px with 1-px gaps (11 px), 3 px between groups
    assert mosaic.shape == (3 * 4 - 1, 2 * 11 + 3, 3)
    shown = conv.weight.detach()[:, chosen]
    scaled = (shown - shown.min()) / (shown.max() - shown.min())
    filter_2 = scaled[2]  # second row, first group
    for j in range(3):
        tile = mosaic[4:7, j * 4 : j * 4 + 3]
        np.testing.assert_allclose(tile[..., 0], filter_2[j], atol=1e-6)
        assert np.all(tile[..., 0] == tile[..., 2])  # gray
    assert "input channels 3, 0, 11" in ax.get_title()
    first_two = viz.filter_grid(conv, in_channels=2, ncols=5).images[0].get_array()
    assert first_two.shape == (3, 5 * 7 + 4 * 3, 3)


def test_filter_grid_rgb_composite_and_explicit_mean():
    conv = nn.Conv2d(8, 4, 3)
    ax = viz.filter_grid(conv, in_channels=[5, 1, 2], rgb=True, scale="filter", ncols=4)
    mosaic = ax.images[0].get_array()
    assert mosaic.shape == (3, 15, 3)
    weight = conv.weight.detach()[2, [5, 1, 2]]
    expected = ((weight - weight.min()) / (weight.max() - weight.min())).permute(1, 2, 0)
    np.testing.assert_allclose(mosaic[:, 8:11], expected, atol=1e-6)
    assert "as RGB" in ax.get_title()
    default = viz.filter_grid(conv).images[0].get_array()
    explicit = viz.filter_grid(conv, in_channels="mean").images[0].get_array()
    np.testing.assert_array_equal(default, explicit)
    rgb_layer = nn.Conv2d(3, 4, 3)
    gray = viz.filter_grid(rgb_layer, in_channels="mean").images[0].get_array()
    assert np.all(gray[..., 0] == gray[..., 1])
    assert "mean of 3 input channels" in viz.filter_grid(rgb_layer, in_channels="mean").get_title()
    with pytest.raises(ValueError, match="exactly three"):
        viz.filter_grid(conv, in_channels=[0, 1], rgb=True)
    with pytest.raises(ValueError, match="rgb=True"):
        viz.filter_grid(conv, rgb=True)
    with pytest.raises(IndexError, match="in_channels"):
        viz.filter_grid(conv, in_channels=[8])
    with pytest.raises(ValueError, match="in_channels"):
        viz.filter_grid(conv, in_channels="median")
