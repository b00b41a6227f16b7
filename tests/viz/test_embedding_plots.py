"""t-SNE scatter and neighbour grid: what they draw, and how they read images and labels."""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from netlens.viz import normalize, to_image  # noqa: E402
from netlens.viz.embedding import WRONG_COLOUR, neighbour_grid, tsne_scatter  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_tsne_scatter_draws_every_point_with_a_named_legend(figure_dir):
    points = torch.randn(40, 2, generator=torch.Generator().manual_seed(8)).numpy()
    labels = torch.arange(40) % 4
    ax = tsne_scatter(points, labels, ["zero", "one", "two", "three"], title="four classes")
    ax.figure.canvas.draw()
    assert sum(len(c.get_offsets()) for c in ax.collections) == 40
    assert [len(c.get_offsets()) for c in ax.collections] == [10, 10, 10, 10]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one", "two", "three"]
    if figure_dir:
        ax.figure.savefig(os.path.join(figure_dir, "embedding_tsne_scatter.png"), dpi=110)


def test_tsne_scatter_into_given_axes_and_without_labels():
    _, ax = plt.subplots()
    assert tsne_scatter(torch.zeros(5, 2), ax=ax) is ax
    assert len(ax.collections) == 1 and ax.get_legend() is None
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        tsne_scatter(np.zeros((5, 3)), ax=ax)


def test_tsne_scatter_names_unnamed_classes_and_refuses_fractional_labels():
    ax = tsne_scatter(torch.rand(4, 2), torch.tensor([0.0, 2.0, 2.0, 0.0]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["class 0", "class 2"]
    with pytest.raises(ValueError, match=r"labels\[1\] is 1.5"):
        tsne_scatter(torch.rand(2, 2), np.array([1.0, 1.5]))


def test_tsne_scatter_refuses_a_label_without_a_name_before_drawing():
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="label -1 has no entry in the 2 class_names"):
        tsne_scatter(torch.rand(3, 2), [0, 1, -1], ["a", "b"])
    assert plt.get_fignums() == before


def test_neighbour_grid_layout_and_red_marks():
    bank = torch.rand(8, 3, 8, 8)
    bank_labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    indices = torch.tensor([[1, 2, 6], [3, 7, 0]])
    fig = neighbour_grid(
        bank[:2], bank, indices, query_labels=[0, 1], bank_labels=bank_labels, class_names="abc"
    )
    fig.canvas.draw()
    assert len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["query: a", "a", "b", "a", "query: b", "b", "b", "a"]
    red = [mcolors.same_color(ax.title.get_color(), WRONG_COLOUR) for ax in fig.axes]
    assert red == [False, False, True, False, False, False, False, True]
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        neighbour_grid(bank[:1], bank, torch.tensor([[8]]))


def test_neighbour_grid_scales_each_image_of_any_range_and_layout_alike():
    torch.manual_seed(0)
    chw = torch.randn(4, 3, 6, 6) * 4 + 1  # normalised images: outside [0, 1]
    hwc = chw.permute(0, 2, 3, 1).numpy()
    by_tensor = neighbour_grid(chw[:1], chw, [[1, 2]])
    by_array = neighbour_grid(hwc[:1], hwc, [[1, 2]])
    # the axes show bank images 0 (the query), 1 and 2
    for row, (a, b) in enumerate(zip(by_tensor.axes, by_array.axes, strict=True)):
        shown = a.images[0].get_array()
        np.testing.assert_allclose(shown, to_image(normalize(chw[row])), atol=1e-6)
        np.testing.assert_allclose(b.images[0].get_array(), shown, atol=1e-6)
        assert shown.min() == 0 and shown.max() == 1


def test_neighbour_grid_shows_a_constant_image_as_black_not_nan():
    bank = torch.full((3, 1, 5, 5), 7.0)
    fig = neighbour_grid(bank[:1], bank, [[1, 2]])
    for ax in fig.axes:
        assert np.array_equal(ax.images[0].get_array(), np.zeros((5, 5, 3)))


def test_neighbour_grid_reads_whole_float_labels_and_refuses_a_missing_name():
    bank = torch.rand(3, 1, 6, 6)
    fig = neighbour_grid(
        bank[:1],
        bank,
        torch.tensor([[2, 1]]),
        query_labels=torch.tensor([1.0]),
        bank_labels=np.array([0.0, 0.0, 1.0]),
        class_names=["zero", "one"],
    )
    assert [ax.get_title() for ax in fig.axes] == ["query: one", "one", "zero"]
    with pytest.raises(ValueError, match="label 2 has no entry in the 2 class_names"):
        neighbour_grid(bank[:1], bank, [[1]], query_labels=[2], class_names=["zero", "one"])
