"""SmoothGrad equals the mean of the wrapped method over the documented noisy copies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import SmallCNN, assert_unchanged, get_model, snapshot
from netlens.attribution import METHODS, GradCAM, Saliency
from netlens.testing import check_attribution

SmoothGrad = METHODS["smoothgrad"]
Occlusion = METHODS["occlusion"]
LayerCAM = METHODS["layercam"]


def _small() -> nn.Module:
    """A small CNN with 5 classes (layers features.0 to features.4)."""
    torch.manual_seed(0)
    return SmallCNN().eval()


def _images(n: int = 2, side: int = 32, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _noisy(image: torch.Tensor, samples: int, noise: float, seed: int) -> torch.Tensor:
    """The documented noise: a generator seeded per image, sigma a fraction of its range."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn((samples, *image.shape), generator=generator)
    return image + noise * (image.max() - image.min()) * draws


def test_smoothgrad_of_saliency_is_the_mean_input_gradient_over_noisy_copies():
    model = _small()
    x, targets = _images(), [3, 1]
    before = snapshot(model)
    ours = SmoothGrad(Saliency(model, abs=False, channel_reduce="sum"), samples=5, seed=7)(
        x, targets
    )
    assert_unchanged(model, before)
    expected = []
    for image, target in zip(x, targets, strict=True):
        noisy = _noisy(image, 5, 0.15, 7).requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(noisy)[:, target].sum(), noisy)
        expected.append(gradient.sum(1).mean(0))
    expected = torch.stack(expected)
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_smoothgrad_equals_captums_noise_tunnel_with_the_same_noise():
    captum = pytest.importorskip("captum.attr")
    model = get_model("resnet18")
    x = _images()
    ours = SmoothGrad(Saliency(model, abs=False, channel_reduce="sum"), samples=4, noise=0.2)(
        x, [1, 2]
    )
    rows = []
    for image, target in zip(x, [1, 2], strict=True):
        image = image.unsqueeze(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # captum's noise: torch's global generator
            rows.append(
                captum.NoiseTunnel(captum.Saliency(model)).attribute(
                    image,
                    nt_type="smoothgrad",
                    nt_samples=4,
                    stdevs=float(0.2 * (image.max() - image.min())),
                    target=target,
                    abs=False,
                )
            )
    theirs = torch.cat(rows).sum(1)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(theirs.abs().max()))


@pytest.mark.parametrize(
    "wrapped",
    [
        lambda model: GradCAM(model, "features.3"),
        lambda model: LayerCAM(model, "features.0"),
        lambda model: Occlusion(model, window=8, stride=8),
        lambda model: METHODS["integratedgradients"](model, steps=4),
    ],
    ids=["gradcam", "layercam", "occlusion", "integratedgradients"],
)
def test_smoothgrad_averages_any_method_at_its_own_resolution(wrapped, request):
    if "integratedgradients" in request.node.name and "integratedgradients" not in METHODS:
        pytest.skip("no IntegratedGradients registered")
    model = _small()
    x, targets = _images(), torch.tensor([[3, 4], [2, 0]])
    method = wrapped(model)
    smooth = SmoothGrad(method, samples=3, noise=0.1, seed=2, batch_size=4)
    ours = smooth(x, targets, size=None)
    expected = torch.stack(
        [
            method(_noisy(image, 3, 0.1, 2), wanted.expand(3, 2), size=None).mean(0)
            for image, wanted in zip(x, targets, strict=True)
        ]
    )
    assert ours.shape == expected.shape == (2, 2, *method(x, size=None).shape[-2:])
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    resized = smooth(x, targets)
    assert resized.shape == (2, 2, 32, 32)
    assert torch.allclose(
        resized, torch.nn.functional.interpolate(ours, size=(32, 32), mode="bilinear")
    )
    assert smooth.needs_gradients == method.needs_gradients


def test_the_same_seed_gives_the_same_maps_and_another_seed_other_maps():
    model = _small()
    x = _images()
    first = SmoothGrad(model, samples=3, seed=5)(x)
    assert torch.equal(first, SmoothGrad(model, samples=3, seed=5)(x))
    assert not torch.allclose(first, SmoothGrad(model, samples=3, seed=6)(x))


def test_seed_none_draws_from_torchs_global_generator():
    model = _small()
    x = _images(1)
    method = SmoothGrad(model, samples=3, seed=None)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        first = method(x)
        second = method(x)
        torch.manual_seed(11)
        again = method(x)
    assert not torch.allclose(first, second)  # fresh noise each call
    assert torch.equal(first, again)
    assert torch.allclose(first, SmoothGrad(model, samples=3, seed=11)(x))  # one image


def test_one_sample_without_noise_is_the_wrapped_method():
    model = _small()
    x = _images()
    for method in (Saliency(model), GradCAM(model, "features.3")):
        smooth = SmoothGrad(method, samples=1, noise=0.0)
        assert torch.allclose(smooth(x, [4, 0], size=None), method(x, [4, 0], size=None))


def test_batch_size_and_the_batch_do_not_change_the_maps():
    model = _small()
    x = _images(3)
    small = SmoothGrad(model, samples=4, batch_size=3)(x, [1, 2, 3])
    large = SmoothGrad(model, samples=4, batch_size=32)(x, [1, 2, 3])
    alone = SmoothGrad(model, samples=4)(x[1:2], 2)
    scale = float(large.abs().max())
    assert torch.allclose(small, large, rtol=1e-5, atol=1e-6 * scale)
    assert torch.allclose(alone, large[1:2], rtol=1e-5, atol=1e-6 * scale)


class _Rising(nn.Module):
    """Class 0 scores 0.6 whatever the image; class 1 its mean square."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = self.scale * (x**2).mean((1, 2, 3))
        return torch.stack([0.6 + 0.01 * x.mean((1, 2, 3)), energy], 1)


class _Recorder(Saliency):
    """Saliency that remembers the targets it was given."""

    def __call__(self, x, target=None, *, size="input"):
        self.seen.append(target)
        return super().__call__(x, target, size=size)


def test_targets_are_chosen_on_the_image_without_noise():
    model = _Rising().eval()
    x = (torch.arange(64.0).view(1, 1, 8, 8) % 2).expand(2, 3, 8, 8).clone()  # mean square 0.5
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == [0, 0]
        noisy = torch.cat([_noisy(image, 6, 0.5, 0) for image in x])
        assert model(noisy).argmax(1).tolist() == [1] * 12  # every noisy copy: class 1
    wrapped = _Recorder(model)
    wrapped.seen = []
    smooth = SmoothGrad(wrapped, samples=6, noise=0.5)
    maps = smooth(x)
    assert all(
        torch.equal(seen, torch.zeros(len(seen), 1, dtype=torch.long)) for seen in wrapped.seen
    )
    assert torch.equal(maps, smooth(x, 0))
    assert not torch.allclose(maps, smooth(x, 1))


def test_noisy_copies_of_several_images_share_a_batch_with_their_own_classes():
    model = _small()
    x = _images(3)
    wrapped = _Recorder(model)
    wrapped.seen = []
    maps = SmoothGrad(wrapped, samples=4, batch_size=5)(x, [1, 2, 3])
    # ceil(3 * 4 / 5) = 3 calls; each copy keeps its image's class.
    assert [seen.flatten().tolist() for seen in wrapped.seen] == [
        [1, 1, 1, 1, 2],
        [2, 2, 2, 3, 3],
        [3, 3],
    ]
    for i, target in enumerate([1, 2, 3]):
        alone = SmoothGrad(model, samples=4)(x[i : i + 1], target)
        scale = float(alone.abs().max())
        assert torch.allclose(maps[i : i + 1], alone, rtol=1e-5, atol=1e-6 * scale)


def test_smoothgrad_of_a_model_is_smoothgrad_of_its_saliency():
    model = _small()
    x = _images()
    assert torch.equal(SmoothGrad(model, samples=2)(x), SmoothGrad(Saliency(model), samples=2)(x))
    assert SmoothGrad.needs_layer is False and SmoothGrad.title == "SmoothGrad"


def test_progress_bar(capsys):
    model = _small()
    SmoothGrad(model, samples=2, progress=True)(_images(1))
    assert "SmoothGrad" in capsys.readouterr().err
    SmoothGrad(model, samples=2)(_images(1))
    assert "SmoothGrad" not in capsys.readouterr().err


def test_bad_arguments_are_refused():
    model = _small()
    with pytest.raises(TypeError, match="attribution method or a model"):
        SmoothGrad("saliency")
    with pytest.raises(ValueError, match="samples"):
        SmoothGrad(model, samples=0)
    with pytest.raises(ValueError, match="noise"):
        SmoothGrad(model, noise=-0.1)
    with pytest.raises(TypeError, match="seed"):
        SmoothGrad(model, seed=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        SmoothGrad(model, batch_size=0)
    x = _images(1)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        SmoothGrad(model, samples=2)(x)


def test_smoothgrad_keeps_the_contract():
    check_attribution(SmoothGrad, samples=3)
    check_attribution(lambda model: SmoothGrad(GradCAM(model), samples=2, batch_size=4))
