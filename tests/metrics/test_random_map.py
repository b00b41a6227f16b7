"""RandomMap: the attribution contract, uniform noise, and independence of the model."""

from __future__ import annotations

import pytest
import torch

from netlens.attribution import METHODS
from netlens.metrics import RandomMap
from netlens.models import SmallResNet
from netlens.testing import check_attribution


def test_keeps_the_attribution_contract():
    report = check_attribution(RandomMap)
    assert report.method == "Random" and not report.skipped
    check_attribution(RandomMap, seed=7)


def test_maps_are_uniform_independent_and_seeded():
    torch.manual_seed(0)
    model = SmallResNet(10, 1, 4).eval()
    x = torch.rand(3, 1, 40, 40)
    maps = RandomMap(model)(x)
    values = maps.flatten()
    assert 0 <= float(values.min()) and float(values.max()) < 1
    assert float(values.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(values.var()) == pytest.approx(1 / 12, rel=0.05)
    # Independent across images, classes and seeds; the same for the same image anywhere.
    corr = torch.corrcoef(maps.flatten(1))
    assert float((corr - torch.eye(3)).abs().max()) < 0.1
    two = RandomMap(model)(x, torch.tensor([[1, 2]] * 3))
    assert float(torch.corrcoef(two[0].flatten(1))[0, 1]) < 0.1
    assert not torch.equal(RandomMap(model, seed=1)(x), maps)
    assert torch.equal(RandomMap(model)(x[[2, 0]]), maps[[2, 0]])


def test_the_map_does_not_depend_on_the_weights():
    torch.manual_seed(0)
    a, b = SmallResNet(10, 1, 4).eval(), SmallResNet(10, 1, 4).eval()
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(RandomMap(a)(x, [3, 4]), RandomMap(b)(x, [3, 4]))


def test_is_not_a_registered_method():
    assert RandomMap not in METHODS.values()


def test_bad_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        RandomMap(torch.nn.Conv2d(1, 1, 1), seed=-1)
    with pytest.raises(TypeError, match="seed"):
        RandomMap(torch.nn.Conv2d(1, 1, 1), seed=1.5)
