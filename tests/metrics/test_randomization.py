"""Model randomisation: Spearman and SSIM against scipy and scikit-image, the cascade, the
model left as found, the blocks, and errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from netlens.attribution import METHODS, GradCAM, Saliency
from netlens.errors import LayerNotFoundError
from netlens.metrics import (
    RandomMap,
    default_blocks,
    model_randomization,
    randomise,
    spearman,
    ssim,
)
from netlens.models import SmallResNet
from netlens.testing import assert_unchanged, snapshot


def small_net(seed=0):
    torch.manual_seed(seed)
    return SmallResNet(10, 1, 4).eval()


def test_spearman_equals_scipy_with_ties_and_nan_for_a_constant_map():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(3, 8, 8, generator=generator)
    b = torch.rand(3, 8, 8, generator=generator)
    a[1] = a[1].round(decimals=1)  # many ties
    b[2, :4] = 0.0
    ours = spearman(a, b)
    for i in range(3):
        expected = stats.spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy()).statistic
        assert ours[i] == pytest.approx(expected, abs=1e-12)
    b[0] = 0.5
    assert np.isnan(spearman(a, b)[0]) and not np.isnan(spearman(a, b)[1:]).any()


def test_ssim_equals_scikit_image_on_the_scaled_maps():
    metrics = pytest.importorskip("skimage.metrics")
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(3, 20, 17, generator=generator)
    b = a + 0.3 * torch.rand(3, 20, 17, generator=generator)
    b[2] = 7.0  # a constant map is scaled to zeros
    ours = ssim(a, b)

    def unit(m):
        span = m.max() - m.min()
        return ((m - m.min()) / span).numpy() if span > 0 else np.zeros(m.shape)

    for i in range(3):
        expected = metrics.structural_similarity(
            unit(a[i].double()),
            unit(b[i].double()),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert ours[i] == pytest.approx(expected, abs=1e-10)
    with pytest.raises(ValueError, match="smaller than SSIM's window"):
        ssim(torch.rand(1, 10, 30), torch.rand(1, 10, 30))


def test_default_blocks_follow_the_forward_pass_from_the_top():
    x = torch.rand(1, 3, 32, 32)
    assert default_blocks(torchvision.models.resnet18(), x) == [
        "fc",
        "layer4",
        "layer3",
        "layer2",
        "layer1",
        "bn1",
        "conv1",
    ]
    # Fewer than three blocks at the top: the Sequentials are opened (VGG's features, classifier).
    vgg_like = nn.Sequential()
    vgg_like.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    vgg_like.pool = nn.AdaptiveAvgPool2d(1)
    vgg_like.flat = nn.Flatten()
    vgg_like.classifier = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2))
    assert default_blocks(vgg_like, x) == [
        "classifier.3",
        "classifier.0",
        "features.2",
        "features.0",
    ]


def test_randomise_redraws_every_parameter_seeded_and_leaves_the_generator_alone():
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.linspace(1, 2, 5))

    block = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), Custom())
    with torch.no_grad():
        block[1].weight.fill_(3.0)
        block[1].running_mean.fill_(0.7)
    state = torch.get_rng_state()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    randomise(block, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    after = block.state_dict()
    assert not torch.equal(after["0.weight"], before["0.weight"])
    assert torch.equal(after["1.weight"], torch.ones(3)) and torch.equal(
        after["1.bias"], torch.zeros(3)
    )
    assert torch.equal(after["1.running_mean"], torch.zeros(3))
    assert not torch.equal(after["2.scale"], before["2.scale"])
    twin = copy.deepcopy(block)
    randomise(block, seed=3)
    randomise(twin, seed=3)
    for key, value in block.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


def test_the_cascade_randomises_the_blocks_in_turn_and_never_the_model():
    model = small_net()
    model.train()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    state = torch.get_rng_state()
    result = model_randomization(
        model, x, "gradcam", blocks=["fc", "layer4", "layer3"], keep_maps=True
    )
    assert_unchanged(model, before)
    assert torch.equal(torch.get_rng_state(), state)
    assert result.blocks == ("fc", "layer4", "layer3") and result.maps.shape == (4, 3, 16, 16)
    with torch.no_grad():
        classes = model.eval()(x).argmax(1)
    model.train()
    # By hand: a copy with the first j + 1 blocks randomised, the maps of its top-1 classes.
    twin = copy.deepcopy(model)
    torch.testing.assert_close(result.maps[0], GradCAM(model)(x, classes))
    for j, name in enumerate(result.blocks):
        randomise(twin.get_submodule(name), seed=j)
        expected = GradCAM(twin)(x, classes)
        torch.testing.assert_close(result.maps[j + 1], expected)
        np.testing.assert_allclose(
            result.spearman[j].values, spearman(result.maps[0], expected), rtol=1e-6
        )
        np.testing.assert_allclose(result.ssim[j].values, ssim(result.maps[0], expected), 1e-6)
    assert result.values.shape == (3, 3) and result.mean.shape == (3,)
    assert result.interval.shape == (3, 2)


def test_a_map_that_ignores_the_model_stays_the_same_and_one_that_does_not_changes():
    model = small_net(1)
    x = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    random = model_randomization(model, x, RandomMap)
    assert all(r.mean == 1.0 for r in random.spearman)
    assert all(r.mean == pytest.approx(1.0) for r in random.ssim)
    saliency = model_randomization(model, x, Saliency)
    assert all(r.mean < 0.9 for r in saliency.spearman_abs)


def test_method_forms_and_targets():
    model = small_net(2)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    by_name = model_randomization(model, x, "saliency", blocks=["fc", "layer4"])
    by_class = model_randomization(model, x, Saliency, blocks=["fc", "layer4"])
    by_function = model_randomization(model, x, lambda m: Saliency(m), blocks=["fc", "layer4"])
    with torch.no_grad():
        top = model(x).argmax(1)
    explicit = model_randomization(model, x, METHODS["saliency"], top, blocks=["fc", "layer4"])
    for other in (by_class, by_function, explicit):
        np.testing.assert_array_equal(by_name.values, other.values)
    other_class = model_randomization(model, x, "saliency", (top + 1) % 10, blocks=["fc", "layer4"])
    assert not np.array_equal(by_name.values, other_class.values)
    assert by_name.method == "Saliency" and "fc" in repr(by_name)


@pytest.mark.parametrize(
    ("method", "options", "error", "words"),
    [
        ("nothing", {}, ValueError, "unknown method"),
        (Saliency(nn.Conv2d(1, 1, 1)), {}, TypeError, "not an instance"),
        (nn.Conv2d, {}, TypeError, "not a netlens"),
        (lambda m: Saliency(small_net(5)), {}, ValueError, "on the model it is given"),
        (lambda m: m, {}, TypeError, "not an Attribution"),
        ("saliency", {"blocks": ["nowhere"]}, LayerNotFoundError, "nowhere"),
        ("saliency", {"blocks": ["relu"]}, ValueError, "no parameters"),
        ("saliency", {"blocks": ["fc", "fc"]}, ValueError, "twice"),
        ("saliency", {"blocks": "fc"}, TypeError, "list of layer names"),
        ("saliency", {"seed": -2}, ValueError, "seed"),
        ("saliency", {"target": torch.zeros(2, 2, dtype=torch.long)}, ValueError, "one class"),
    ],
)
def test_bad_input_is_refused(method, options, error, words):
    model = small_net(4)
    x = torch.rand(2, 1, 16, 16)
    target = options.pop("target", None)
    with pytest.raises(error) as caught:
        model_randomization(model, x, method, target, **options)
    assert words in str(caught.value)


def test_images_smaller_than_the_ssim_window_are_refused():
    with pytest.raises(ValueError, match="window"):
        model_randomization(small_net(), torch.rand(1, 1, 8, 8), "saliency")
