"""Average drop and increase in confidence against the formula written here, torchcam and
pytorch-grad-cam, and errors."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from metric_models import Linear, full_resolution

from netlens.errors import UndefinedMapError
from netlens.metrics import average_drop, increase_in_confidence
from netlens.models import SmallResNet


def probabilities(model, x, classes):
    with torch.no_grad():
        return model(x).softmax(1).gather(1, classes[:, None])[:, 0].double()


def unit_maps(n, size, seed):
    """Random maps scaled exactly to [0, 1] (min 0 and max 1 in each)."""
    maps = torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed))
    low = maps.flatten(1).amin(1)[:, None, None]
    high = maps.flatten(1).amax(1)[:, None, None]
    return (maps - low) / (high - low)


def test_drop_and_increase_equal_the_formula_written_here():
    model = full_resolution()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    raw = 3 * torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(1)) - 1
    classes = torch.tensor([0, 1, 2, 3])
    scaled = (raw - raw.amin((1, 2), keepdim=True)) / (
        raw.amax((1, 2), keepdim=True) - raw.amin((1, 2), keepdim=True)
    )
    # Scaled at the map's own resolution, then resized (as both peers do).
    seen = x * F.interpolate(scaled[:, None], size=(16, 16), mode="bilinear", align_corners=False)
    before, after = probabilities(model, x, classes), probabilities(model, seen, classes)
    drop = average_drop(model, x, raw, classes)
    np.testing.assert_allclose(drop.values, ((before - after).clamp(min=0) / before).numpy(), 1e-5)
    rose = increase_in_confidence(model, x, raw, classes)
    np.testing.assert_array_equal(rose.values, (after > before).double().numpy())
    assert not drop.higher_is_better and rose.higher_is_better


def test_equal_torchcam_classification_metric():
    methods = pytest.importorskip("torchcam.methods")
    from torchcam.metrics import ClassificationMetric

    torch.manual_seed(3)
    model = SmallResNet(10, 3, 8).eval()
    with torch.no_grad():
        model.fc.weight *= 40  # confident predictions, whose drops are far from 0
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with methods.GradCAM(model, "layer4") as extractor:
        # The metric below maps what its logits_fn returns (here the softmax), so the maps
        # given to ours are made the same way.
        scores = model(x).softmax(-1)
        classes = scores.argmax(1)
        maps = extractor(classes.tolist(), scores)[0].detach().clone()  # (N, 8, 8), scaled
        metric = ClassificationMetric(extractor, functools.partial(torch.softmax, dim=-1))
        theirs = []
        for i in range(len(x)):
            metric.reset()
            metric.update(x[i : i + 1], int(classes[i]))
            theirs.append(metric.summary())
    assert all(float(m.max() - m.min()) > 0.5 for m in maps)  # maps with something to scale
    drop = average_drop(model, x, maps)
    rose = increase_in_confidence(model, x, maps)
    np.testing.assert_allclose(drop.values, [t["avg_drop"] for t in theirs], rtol=1e-5)
    np.testing.assert_array_equal(rose.values, [t["conf_increase"] for t in theirs])


def test_increase_equals_pytorch_grad_cam_and_its_drop_is_not_divided_by_the_score():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = full_resolution(seed=2)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    maps = unit_maps(4, 16, seed=6)
    classes = torch.tensor([4, 0, 2, 1])
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    cams = maps.numpy().astype(np.float32)
    their_increase = IncreaseInConfidence()(x, cams, targets, model)
    their_drop = DropInConfidence()(x, cams, targets, model)
    rose = increase_in_confidence(model, x, maps, classes)
    drop = average_drop(model, x, maps, classes)
    np.testing.assert_array_equal(rose.values, np.asarray(their_increase).reshape(-1))
    # pytorch-grad-cam's drop is absolute: ours times the class probability.
    before = probabilities(model, x, classes).numpy()
    np.testing.assert_allclose(drop.values * before, np.asarray(their_drop).reshape(-1), 1e-5)
    assert (np.abs(drop.values - np.asarray(their_drop).reshape(-1)) > 1e-3).any()


def test_a_constant_map_has_no_scaling_and_is_refused():
    model = full_resolution()
    x = torch.rand(2, 3, 16, 16)
    maps = torch.rand(2, 16, 16)
    maps[1] = 0.25
    with pytest.raises(UndefinedMapError, match=r"images \[1\] are constant"):
        average_drop(model, x, maps)
    with pytest.raises(UndefinedMapError):
        increase_in_confidence(model, x, maps)


def test_a_class_probability_of_zero_is_refused():
    weight = torch.full((1, 4, 4), 50.0)
    model = Linear(weight).eval()  # logits (w.x, 0) with w.x = 800: p(class 1) = 0
    x = torch.ones(1, 1, 4, 4)
    with pytest.raises(UndefinedMapError, match="probability of images \\[0\\] is 0"):
        average_drop(model, x, torch.rand(1, 4, 4), 1)


@pytest.mark.parametrize(
    ("maps", "target", "error"),
    [
        (torch.rand(3, 16, 16), None, ValueError),
        (torch.rand(2, 17, 16), None, ValueError),
        (torch.rand(2, 16, 16), [0], ValueError),
        (torch.rand(2, 16, 16), 7, IndexError),
        (torch.rand(2, 16, 16), 1.0, TypeError),
    ],
)
def test_bad_input_is_refused(maps, target, error):
    model = full_resolution()
    with pytest.raises(error):
        average_drop(model, torch.rand(2, 3, 16, 16), maps, target)
