"""ROAD: the imputation's identities and noise, pytorch-grad-cam's imputer and metrics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metric_models import full_resolution

from netlens.metrics import impute, road


def ramp(channels=2, size=12):
    rows = torch.arange(size, dtype=torch.float64)[:, None]
    cols = torch.arange(size, dtype=torch.float64)[None, :]
    return torch.stack([0.3 * rows - 0.2 * cols + 1 + c for c in range(channels)])


def test_holes_inside_a_linear_image_are_filled_exactly():
    # The weighted mean of the 8 neighbours (symmetric weights) of a linear function is its
    # value at the centre, so a linear image solves the system: interior holes come back.
    image = ramp()
    removed = torch.zeros(12, 12, dtype=torch.bool)
    removed[2:6, 3:9] = True
    removed[8, 8] = removed[9, 9] = removed[7, 2] = True
    filled = impute(image, removed)
    torch.testing.assert_close(filled, image, rtol=0, atol=1e-10)
    scrambled = image.clone()
    scrambled[:, removed] = 99.0
    torch.testing.assert_close(impute(scrambled, removed), image, rtol=0, atol=1e-10)


def test_a_single_hole_is_the_weighted_mean_of_its_neighbours():
    image = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    removed = torch.zeros(5, 5, dtype=torch.bool)
    removed[0, 2] = True  # on the border: 5 neighbours, weights renormalised
    edge = image[0, 0, 1] + image[0, 0, 3] + image[0, 1, 2]
    corner = image[0, 1, 1] + image[0, 1, 3]
    expected = (edge / 6 + corner / 12) / (3 / 6 + 2 / 12)
    assert float(impute(image, removed)[0, 0, 2]) == pytest.approx(float(expected), rel=1e-12)


def test_noise_is_added_to_imputed_pixels_only_with_the_asked_spread():
    image = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    removed = torch.rand(40, 40, generator=torch.Generator().manual_seed(2)) < 0.5
    clean = impute(image, removed)
    noisy = impute(image, removed, noise=0.05, generator=torch.Generator().manual_seed(3))
    again = impute(image, removed, noise=0.05, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(noisy, again, rtol=0, atol=0)
    difference = noisy - clean
    assert torch.equal(difference[:, ~removed], torch.zeros_like(difference[:, ~removed]))
    assert float(difference[:, removed].std()) == pytest.approx(0.05, rel=0.05)
    assert abs(float(difference[:, removed].mean())) < 0.005


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # in pytorch-grad-cam
def test_imputation_equals_pytorch_grad_cam_noisy_linear_imputer():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    image = torch.rand(3, 20, 24, generator=torch.Generator().manual_seed(4))
    removed = torch.rand(20, 24, generator=torch.Generator().manual_seed(5)) < 0.6
    theirs = NoisyLinearImputer(noise=0.0)(image, (~removed).float())
    torch.testing.assert_close(impute(image, removed), theirs, rtol=1e-5, atol=1e-6)


def test_every_pixel_removed_is_refused():
    with pytest.raises(ValueError, match="every pixel"):
        impute(torch.rand(1, 4, 4), torch.ones(4, 4, dtype=torch.bool))


def peer_road(model, x, maps, classes, percentiles, order):
    """pytorch-grad-cam's ROAD averages, built from its public parts with the noise switched off."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    remove = RemoveMostRelevantFirst if order == "morf" else RemoveLeastRelevantFirst

    def metric(percentile):
        return PerturbationConfidenceMetric(remove(percentile, NoisyLinearImputer(noise=0.0)))

    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    averager = AveragerAcrossThresholds(metric, percentiles)
    return np.asarray(averager(x, maps.numpy(), targets, model)).reshape(-1)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # in pytorch-grad-cam
@pytest.mark.parametrize("order", ["morf", "lerf", "both"])
def test_equals_pytorch_grad_cam_road_without_noise(order):
    pytest.importorskip("pytorch_grad_cam")
    model = full_resolution(seed=3)
    # 40 x 40 pixels: every 10% of them is a whole number, as pytorch-grad-cam's percentile
    # thresholds count them.
    x = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    maps = torch.rand(2, 40, 40, generator=torch.Generator().manual_seed(7))
    classes = torch.tensor([2, 0])
    ours = road(model, x, maps, classes, order=order, noise=0.0)
    percentiles = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    if order == "both":
        morf = peer_road(model, x, maps, classes, percentiles, "morf")
        lerf = peer_road(model, x, maps, classes, percentiles, "lerf")
        np.testing.assert_allclose(ours.values, (lerf - morf) / 2, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(ours.parts["morf"].values, morf, rtol=1e-4, atol=1e-7)
    else:
        theirs = peer_road(model, x, maps, classes, percentiles, order)
        np.testing.assert_allclose(ours.values, theirs, rtol=1e-4, atol=1e-7)
    # Their percentile r removes 100 - r percent of the pixels.
    one = road(model, x, maps, classes, percentiles=(30,), order="morf", noise=0.0)
    np.testing.assert_allclose(
        one.values, peer_road(model, x, maps, classes, [70], "morf"), rtol=1e-4, atol=1e-7
    )


def test_curves_are_the_probabilities_and_values_their_mean_change():
    model = full_resolution()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = road(model, x, maps, percentiles=(25, 50, 75), order="lerf")
    with torch.no_grad():
        logits = model(x)
    before = logits.softmax(1).max(1).values.double().numpy()
    assert result.curves.shape == (3, 3) and result.x.tolist() == [25, 50, 75]
    np.testing.assert_allclose(result.values, (result.curves - before[:, None]).mean(1), atol=1e-6)
    assert result.higher_is_better and result.name == "road_lerf"
    both = road(model, x, maps, percentiles=(25, 50, 75))  # the same noise for the same job
    np.testing.assert_allclose(both.parts["lerf"].values, result.values, rtol=1e-12)
    assert both.higher_is_better and not both.parts["morf"].higher_is_better


def test_batch_size_changes_nothing_even_with_noise():
    model = full_resolution()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1))
    a = road(model, x, maps, percentiles=(20, 60), batch_size=1, seed=4)
    b = road(model, x, maps, percentiles=(20, 60), seed=4)
    np.testing.assert_allclose(a.values, b.values, atol=1e-7)  # float32 rounding of the passes
    c = road(model, x, maps, percentiles=(20, 60), seed=5)
    assert not np.allclose(a.parts["morf"].curves, c.parts["morf"].curves, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"percentiles": (0, 50)}, ValueError, "strictly between 0 and 100"),
        ({"percentiles": (50, 100)}, ValueError, "strictly between 0 and 100"),
        ({"percentiles": ()}, ValueError, "empty"),
        ({"percentiles": "50"}, TypeError, "sequence"),
        ({"percentiles": (1,)}, ValueError, "at least one pixel"),
        ({"order": "random"}, ValueError, "order"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"maps": torch.rand(2, 5, 5)}, ValueError, "larger"),
    ],
)
def test_bad_input_is_refused(options, error, words):
    model = full_resolution()
    x = torch.rand(2, 3, 4, 4)
    maps = options.pop("maps", torch.rand(2, 4, 4))
    with pytest.raises(error) as caught:
        road(model, x, maps, **options)
    assert words in str(caught.value)
