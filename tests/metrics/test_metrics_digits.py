"""On the tour's digit classifier, trained here: Grad-CAM and Saliency against chance.

The figures are measurements of one trained network; the test prints them
(``pytest -s``), Guided Backprop's beside Grad-CAM's and Saliency's.
"""

from __future__ import annotations

import pytest

from netlens.app.audit import DEFAULT, digits_network
from netlens.attribution import METHODS
from netlens.metrics import RandomMap, deletion, insertion, model_randomization

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    return digits_network(DEFAULT, seed=0, progress=False)[:2]


def maps_of(name, model, x):
    cls = RandomMap if name == "random" else METHODS[name]
    return cls(model)(x)


def test_gradcam_and_saliency_beat_a_random_map_with_intervals_apart(digits):
    model, x = digits  # all 450 held-out digits
    # The digits lie on a black background, so a "zero" substrate leaves most removed pixels
    # as they were; the blurred image (RISE's insertion substrate) changes every pixel.
    scores = {}
    for name in ("gradcam", "saliency", "random"):
        maps = maps_of(name, model, x)
        scores[name] = {
            metric.__name__: metric(model, x, maps, steps=8, substrate="blur")
            for metric in (deletion, insertion)
        }
        print(name, *scores[name].values())
    for name in ("gradcam", "saliency"):
        for metric in ("deletion", "insertion"):
            assert scores[name][metric].beats(scores["random"][metric]), (name, metric)


def test_randomising_the_model_takes_the_maps_apart_from_the_trained_ones(digits):
    model, x = digits
    x = x[:32]
    found = {
        name: model_randomization(model, x, RandomMap if name == "random" else name)
        for name in ("gradcam", "saliency", "guidedbackprop", "random")
    }
    for name, result in found.items():
        print(
            name,
            " ".join(
                f"{b} {r.mean:.3f}" for b, r in zip(result.blocks, result.spearman, strict=True)
            ),
        )
    for name in ("gradcam", "saliency"):
        result = found[name]
        # From 1 (the trained model's map against itself) to far below at the first block,
        # and far below for the rest of the cascade.
        assert all(r.interval[1] < 0.6 for r in result.spearman_abs), name
        assert all(r.interval[1] < 0.6 for r in result.spearman), name
    # The check can fail: a map that does not depend on the weights stays at 1.
    assert all(r.mean == 1.0 for r in found["random"].spearman)
