"""Deletion and insertion: curves recomputed here, the optimal order of a linear model, chance,
torchcam, batching and errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from metric_models import Linear, full_resolution

from netlens.metrics import RandomMap, deletion, insertion, substrate_like
from netlens.testing import assert_unchanged, snapshot


def softmax_class(model, images, classes):
    with torch.no_grad():
        return model(images).softmax(1).gather(1, classes[:, None])[:, 0]


def curve_by_hand(model, image, ranking_map, cls, steps, substrate, kind):
    """The deletion / insertion curve of one image, one pass per point, ranked by sorting here."""
    pixels = ranking_map.numel()
    order = torch.argsort(ranking_map.flatten(), descending=True)
    points = []
    for k in range(steps + 1):
        count = k * pixels // steps
        chosen = torch.zeros(pixels, dtype=torch.bool)
        chosen[order[:count]] = True
        chosen = chosen.view(1, *ranking_map.shape)
        if kind == "deletion":
            changed = torch.where(chosen, substrate, image)
        else:
            changed = torch.where(chosen, image, substrate)
        points.append(float(softmax_class(model, changed[None], torch.tensor([cls]))[0]))
    fractions = np.array([k * pixels // steps for k in range(steps + 1)]) / pixels
    return np.array(points), fractions


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
@pytest.mark.parametrize("substrate", ["zero", "blur", "mean"])
def test_curves_and_areas_equal_a_loop_written_here(kind, substrate):
    model = full_resolution()
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 16, 16, generator=generator)
    maps = torch.rand(2, 16, 16, generator=generator)
    metric = deletion if kind == "deletion" else insertion
    result = metric(model, x, maps, [1, 4], steps=8, substrate=substrate)
    background = substrate_like(x, substrate)
    for i, cls in enumerate([1, 4]):
        curve, fractions = curve_by_hand(model, x[i], maps[i], cls, 8, background[i], kind)
        np.testing.assert_allclose(result.curves[i], curve, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.x, fractions)
        area = np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(fractions))
        assert result.values[i] == pytest.approx(area, rel=1e-6)
    assert result.mean == pytest.approx(result.values.mean())
    assert result.higher_is_better == (kind == "insertion")


def test_blur_substrate_is_an_11_tap_gaussian_of_sigma_5():
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 10, 10] = 1.0
    blurred = substrate_like(image, "blur")[0, 0]
    taps = torch.exp(-0.5 * (torch.arange(-5, 6.0) / 5) ** 2)
    taps = taps / taps.sum()
    expected = torch.zeros(21, 21)
    expected[5:16, 5:16] = taps[:, None] * taps[None, :]
    torch.testing.assert_close(blurred, expected)


def linear_case(seed=0, n=2, size=12):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(1, 1, size, size, generator=generator)
    x = torch.rand(n, 1, size, size, generator=generator)
    return Linear(weight[0]).eval(), x, weight[0, 0]


def other_maps(x, weight, generator):
    n = len(x)
    candidates = [torch.rand(n, *weight.shape, generator=generator) for _ in range(20)]
    candidates += [weight.abs().expand(n, -1, -1), weight.expand(n, -1, -1), x[:, 0]]
    candidates += [-(weight * x[:, 0]), weight * x[:, 0] + 0.3 * torch.randn(x[:, 0].shape)]
    return candidates


@pytest.mark.parametrize("steps", [144, 12])
@pytest.mark.parametrize("substrate", ["zero", "mean", "tensor"])
def test_the_contribution_map_has_the_lowest_deletion_and_highest_insertion(steps, substrate):
    # For logits (w.x, 0), replacing pixel j by s_j changes the class-0 logit by -w_j (x_j - s_j):
    # removing the largest contributions first gives the lowest probability at every step, so
    # no map has a lower deletion AUC, and (the mirror) no map a higher insertion AUC.
    model, x, weight = linear_case()
    generator = torch.Generator().manual_seed(1)
    if substrate == "tensor":
        substrate = torch.rand(x.shape, generator=generator)
    background = substrate_like(x, substrate)
    contribution = (weight * (x - background))[:, 0]
    best_deletion = deletion(model, x, contribution, 0, steps=steps, substrate=substrate)
    best_insertion = insertion(model, x, contribution, 0, steps=steps, substrate=substrate)
    for other in other_maps(x, weight, generator):
        worse = deletion(model, x, other, 0, steps=steps, substrate=substrate)
        assert (best_deletion.values <= worse.values + 1e-12).all()
        worse = insertion(model, x, other, 0, steps=steps, substrate=substrate)
        assert (best_insertion.values >= worse.values - 1e-12).all()
    # And the check can fail: the reversed order is the worst.
    reversed_order = deletion(model, x, -contribution, 0, steps=steps, substrate=substrate)
    assert (reversed_order.values > best_deletion.values).all()


def chance_by_hand(model, image, cls, steps, kind, orders=400, seed=5):
    """Mean and spread of the AUC over uniformly random pixel orders, computed here."""
    generator = torch.Generator().manual_seed(seed)
    pixels = image[0].numel()
    background = torch.zeros_like(image)
    fractions = torch.arange(steps + 1) * pixels // steps
    areas = []
    for _ in range(orders):
        order = torch.randperm(pixels, generator=generator)
        batch = []
        for count in fractions.tolist():
            chosen = torch.zeros(pixels, dtype=torch.bool)
            chosen[order[:count]] = True
            chosen = chosen.view(1, *image.shape[1:])
            if kind == "deletion":
                batch.append(torch.where(chosen, background, image))
            else:
                batch.append(torch.where(chosen, image, background))
        curve = softmax_class(model, torch.stack(batch), torch.full((steps + 1,), cls))
        areas.append(float(torch.trapezoid(curve.double(), fractions.double() / pixels)))
    return float(np.mean(areas)), float(np.std(areas))


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_a_random_map_scores_the_chance_value(kind):
    model, x, _ = linear_case(seed=2, n=1)
    image = x[0]
    chance, spread = chance_by_hand(model, image, 0, 12, kind)
    seeds = 30
    images = image.expand(seeds, -1, -1, -1)
    maps = torch.cat([RandomMap(model, seed=s)(image[None]) for s in range(seeds)])
    metric = deletion if kind == "deletion" else insertion
    result = metric(model, images, maps, 0, steps=12, substrate="zero")
    assert np.abs(result.values - chance).max() < 5 * spread
    assert abs(result.mean - chance) < 4 * spread / np.sqrt(seeds)
    # Within noise of chance, and beaten by the best order on every draw.
    best = metric(model, x, (model.weight * x)[:, 0], 0, steps=12, substrate="zero").values[0]
    assert (best < result.values).all() if kind == "deletion" else (best > result.values).all()


def test_constant_maps_rank_pixels_at_random_not_in_raster_order():
    model, x, weight = linear_case(seed=4, n=1)
    flat = torch.zeros(1, 12, 12)
    raster = deletion(model, x, torch.arange(144.0, 0, -1).view(1, 12, 12), 0, steps=12)
    results = [deletion(model, x, flat, 0, steps=12, seed=s).values[0] for s in range(6)]
    assert len(set(results)) == 6  # seeded tie-breaking: each seed its own order
    assert raster.values[0] not in results
    assert deletion(model, x, flat, 0, steps=12, seed=3).values[0] == results[3]


@pytest.mark.parametrize("kind", ["deletion", "insertion"])
def test_equals_torchcam_deletion_insertion_metric(kind):
    methods = pytest.importorskip("torchcam.methods")
    from torchcam.metrics import DeletionInsertionMetric

    model = full_resolution(seed=1)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with methods.CAM(model, "features", fc_layer="fc") as extractor:
        with torch.no_grad():
            scores = model(x)
        classes = scores.argmax(1)
        maps = extractor(classes.tolist(), scores)[0].clone()  # (N, 16, 16): no resizing
        metric = DeletionInsertionMetric(
            extractor, functools.partial(torch.softmax, dim=-1), steps=16
        )
        theirs = []
        for i in range(len(x)):
            metric.reset()
            metric.update(x[i : i + 1], int(classes[i]))
            theirs.append(metric.summary()[f"{kind}_auc"])
    flat = maps.flatten(1)
    assert all(len(row.unique()) == row.numel() for row in flat)  # no ties
    ours = (deletion if kind == "deletion" else insertion)(
        model, x, maps, steps=16, substrate="zero"
    )
    np.testing.assert_allclose(ours.values, theirs, rtol=1e-5)


def test_smaller_maps_are_resized_bilinearly_to_the_input():
    model = full_resolution()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    small = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    resized = F.interpolate(small[:, None], size=(16, 16), mode="bilinear", align_corners=False)
    a = deletion(model, x, small, steps=8)
    b = deletion(model, x, resized, steps=8)
    np.testing.assert_array_equal(a.values, b.values)
    c = deletion(model, x, small[:, None], steps=8)  # (N, 1, h, w) is accepted
    np.testing.assert_array_equal(a.values, c.values)


def test_batch_size_changes_nothing_and_the_model_is_left_as_found():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(3),
    )
    x = torch.rand(3, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    model(x)
    model.train()
    before = snapshot(model)
    maps = torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(1))
    results = [insertion(model, x, maps, steps=5, batch_size=b).values for b in (1, 4, None)]
    assert_unchanged(model, before)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-6)
    # Scored in eval mode: the same as the model put in eval mode by hand.
    model.eval()
    np.testing.assert_allclose(insertion(model, x, maps, steps=5).values, results[0], rtol=1e-6)


def test_progress_bar_is_shown_on_request(capsys):
    model, x, weight = linear_case()
    deletion(model, x, weight.expand(2, -1, -1), 0, steps=4, progress=True)
    assert "deletion" in capsys.readouterr().err
    deletion(model, x, weight.expand(2, -1, -1), 0, steps=4)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        ({"maps": torch.rand(3, 12, 12)}, ValueError, "3 maps for 2 images"),
        ({"maps": torch.rand(2, 13, 12)}, ValueError, "larger than the images"),
        ({"maps": torch.rand(2, 2, 12, 12)}, ValueError, "one map per image"),
        ({"maps": torch.rand(12, 12)}, ValueError, "(N, H, W)"),
        ({"maps": torch.full((2, 12, 12), float("nan"))}, ValueError, "NaN"),
        ({"maps": [[0.0]]}, TypeError, "tensor"),
        ({"steps": 0}, ValueError, "steps"),
        ({"steps": 145}, ValueError, "144 pixels"),
        ({"steps": 2.0}, TypeError, "steps"),
        ({"substrate": "black"}, ValueError, "substrate"),
        ({"substrate": torch.zeros(3, 5, 5)}, ValueError, "broadcast"),
        ({"target": [0, 1, 0]}, ValueError, "3 targets"),
        ({"target": torch.zeros(2, 2, dtype=torch.long)}, ValueError, "one class per image"),
        ({"target": 2}, IndexError, "out of range"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"x": torch.rand(2, 1, 12, 12).double()}, TypeError, "float64"),
        ({"x": torch.rand(1, 12, 12)}, ValueError, "(N, C, H, W)"),
        ({"model": "resnet"}, TypeError, "nn.Module"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(change, error, words):
    model, x, weight = linear_case()
    arguments = {"model": model, "x": x, "maps": weight.expand(2, -1, -1), "target": None}
    options = {"steps": 4}
    for key, value in change.items():
        (arguments if key in arguments else options)[key] = value
    with pytest.raises(error, match=None) as caught:
        deletion(
            arguments["model"], arguments["x"], arguments["maps"], arguments["target"], **options
        )
    assert words in str(caught.value)
