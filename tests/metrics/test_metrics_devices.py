"""Every metric on a CUDA model and images equals the same metric on the CPU."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from metric_models import full_resolution

from netlens.metrics import (
    RandomMap,
    average_drop,
    deletion,
    increase_in_confidence,
    insertion,
    model_randomization,
    road,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

METRICS = {
    "deletion": lambda m, x, maps: deletion(m, x, maps, steps=8),
    "insertion": lambda m, x, maps: insertion(m, x, maps, steps=8),
    "average_drop": lambda m, x, maps: average_drop(m, x, maps),
    "increase_in_confidence": lambda m, x, maps: increase_in_confidence(m, x, maps),
    "road": lambda m, x, maps: road(m, x, maps, percentiles=(25, 75)),
}


@pytest.mark.parametrize("name", list(METRICS))
def test_a_metric_on_cuda_equals_the_cpu(name):
    model = full_resolution()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    on_cpu = METRICS[name](model, x, maps)
    on_cuda = METRICS[name](copy.deepcopy(model).cuda(), x.cuda(), maps.cuda())
    np.testing.assert_allclose(on_cuda.values, on_cpu.values, rtol=1e-4, atol=1e-6)


def test_randomization_and_random_map_on_cuda_equal_the_cpu():
    model = full_resolution()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    gpu = copy.deepcopy(model).cuda()
    assert torch.equal(RandomMap(gpu)(x.cuda()).cpu(), RandomMap(model)(x))
    on_cpu = model_randomization(model, x, "saliency")
    on_cuda = model_randomization(gpu, x.cuda(), "saliency")
    np.testing.assert_allclose(on_cuda.values, on_cpu.values, rtol=1e-4, atol=1e-5)
