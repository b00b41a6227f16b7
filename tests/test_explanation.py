"""netlens.explain: the maps of the top classes, their probabilities, one forward pass, a figure."""

from __future__ import annotations

import matplotlib
import pytest
import torch
import torchvision

import netlens
from netlens import Explanation, explain
from netlens.attribution import CAM, METHODS, GradCAM, Saliency
from netlens.explanation import imagenet_classes

matplotlib.use("Agg")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["cam", "gradcam", "saliency"])
def test_maps_are_the_methods_maps_of_the_top_classes(model, x, name):
    with torch.no_grad():
        probs = model(x).double().softmax(1)
    top = probs.topk(4, dim=1)
    e = explain(model, x, name, topk=4)
    assert isinstance(e, Explanation)
    assert torch.equal(e.classes, top.indices)
    torch.testing.assert_close(e.probs, top.values.float(), rtol=1e-6, atol=1e-7)
    expected = METHODS[name](model) if name != "cam" else CAM(model)
    torch.testing.assert_close(e.maps, expected(x, top.indices), rtol=1e-5, atol=1e-6)
    assert e.maps.shape == (2, 4, 48, 48)
    assert e.method == METHODS[name].title
    assert e.layer == (None if name == "saliency" else "layer4")


def test_one_image_and_a_given_target(model, x):
    e = explain(model, x[0], GradCAM, target=[[7, 2]])
    assert e.maps.shape == (1, 2, 48, 48) and e.classes.tolist() == [[7, 2]]
    with torch.no_grad():
        probs = model(x[:1]).double().softmax(1)
    torch.testing.assert_close(e.probs, probs[:, [7, 2]].float())
    torch.testing.assert_close(e.maps, GradCAM(model)(x[:1], [[7, 2]]))


def test_the_model_runs_once_per_call(model, x):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for name in ("cam", "gradcam", "saliency"):
            explain(model, x, name, topk=3)  # the default layers are found once, first
            calls.clear()
            explain(model, x, name, topk=3)
            assert len(calls) == 1, name
    finally:
        handle.remove()


def test_a_method_already_built_is_used_as_it_is(model, x):
    saliency = Saliency(model, abs=False, channel_reduce="sum")
    e = explain(model, x, saliency, topk=2)
    torch.testing.assert_close(e.maps, saliency(x, e.classes))
    assert (e.maps < 0).any()


def test_plot_draws_the_image_and_one_titled_panel_per_class(model, x):
    import matplotlib.pyplot as plt

    names = [f"digit {i}" for i in range(10)]
    e = explain(model, x, "gradcam", topk=3, class_names=names)
    fig = e.plot()
    try:
        assert len(fig.axes) == 2 * 4
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[0] == "image 0" and titles[4] == "image 1"
        for n in range(2):
            for k in range(3):
                title = titles[4 * n + 1 + k]
                assert title.startswith(names[int(e.classes[n, k])])
                assert f"p = {float(e.probs[n, k]):.3f}" in title
        assert "Grad-CAM at layer4" in fig.get_suptitle()
    finally:
        plt.close(fig)
    one = e.plot(images=[1])
    try:
        assert len(one.axes) == 4
    finally:
        plt.close(one)
    with pytest.raises(IndexError, match="out of range"):
        e.plot(images=[2])


def test_a_notebook_shows_a_png_and_leaves_no_figure_open(model, x):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    png = explain(model, x, "cam", topk=2)._repr_png_()
    assert png[:8] == PNG and len(png) > 1000
    assert plt.get_fignums() == before


def test_the_repr_is_one_short_line(model, x):
    text = repr(explain(model, x, "cam", topk=5))
    assert "\n" not in text and len(text) < 200
    assert text.startswith("Explanation(CAM at 'layer4': 2 images x top-5; first image: class ")


def test_imagenet_names_for_a_1000_class_model(x):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    e = explain(model, x[:1], "cam", topk=2)
    names = imagenet_classes()
    assert len(names) == 1000 and e.labels() == [[names[int(c)] for c in e.classes[0]]]


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"topk": 11}, ValueError, "only 10 classes"),
        ({"topk": 0}, ValueError, "positive int"),
        ({"method": "gradcamm"}, ValueError, "did you mean 'gradcam'"),
        ({"method": "saliency", "layer": "layer3"}, ValueError, "reads no layer"),
        ({"class_names": ["a", "b"]}, ValueError, "2 class_names for a model with 10"),
        ({"method": 3}, TypeError, "method must be"),
        ({"target": lambda logits: logits.argmax(1)}, TypeError, "class indices"),
    ],
)
def test_bad_arguments_are_clear_errors(model, x, kwargs, error, words):
    with pytest.raises(error, match=words):
        explain(model, x, **kwargs)


def test_a_method_built_on_another_model_is_refused(model, x):
    other = torchvision.models.resnet18(num_classes=10).eval()
    with pytest.raises(ValueError, match="another model"):
        explain(model, x, GradCAM(other))


def test_top_level_names():
    assert netlens.explain is explain and netlens.Explanation is Explanation
    from netlens.errors import LayerNotReachedError, RepeatedCallError

    assert netlens.RepeatedCallError is RepeatedCallError
    assert netlens.LayerNotReachedError is LayerNotReachedError
    assert {"explain", "Explanation", "RepeatedCallError", "LayerNotReachedError"} <= set(
        netlens.__all__
    )
