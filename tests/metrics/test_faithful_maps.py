"""A model that reads only the left half for its class: the left-half map wins on every metric."""

from __future__ import annotations

import pytest
import torch
from metric_models import Halves, half_maps

from netlens.metrics import average_drop, deletion, increase_in_confidence, insertion, road

SIZE = 16


@pytest.fixture(scope="module")
def halves():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, SIZE, SIZE, generator=generator)
    model = Halves().eval()
    left = half_maps(6, SIZE, left=True, seed=1)
    right = half_maps(6, SIZE, left=False, seed=2)
    return model, x, left, right


METRICS = {
    "deletion": lambda m, x, maps: deletion(m, x, maps, 0, steps=16),
    "deletion, blur": lambda m, x, maps: deletion(m, x, maps, 0, steps=16, substrate="blur"),
    "insertion": lambda m, x, maps: insertion(m, x, maps, 0, steps=16),
    "insertion, zero": lambda m, x, maps: insertion(m, x, maps, 0, steps=16, substrate="zero"),
    "average drop": lambda m, x, maps: average_drop(m, x, maps, 0),
    "increase in confidence": lambda m, x, maps: increase_in_confidence(m, x, maps, 0),
    "ROAD": lambda m, x, maps: road(m, x, maps, 0),
    "ROAD MoRF": lambda m, x, maps: road(m, x, maps, 0, order="morf"),
    "ROAD LeRF": lambda m, x, maps: road(m, x, maps, 0, order="lerf"),
}


@pytest.mark.parametrize("name", list(METRICS))
def test_the_left_half_map_beats_the_right_half_map_on_every_image(halves, name):
    model, x, left, right = halves
    on_left = METRICS[name](model, x, left)
    on_right = METRICS[name](model, x, right)
    if on_left.higher_is_better:
        assert (on_left.values > on_right.values).all(), (on_left.values, on_right.values)
    else:
        assert (on_left.values < on_right.values).all(), (on_left.values, on_right.values)
    assert on_left.beats(on_right)
