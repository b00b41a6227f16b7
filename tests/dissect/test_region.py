import numpy as np
import pytest
import skimage.data
import torch
import torchvision

from netlens import FeatureExtractor
from netlens.dissect import units_for_region
from netlens.viz import IMAGENET_MEAN, IMAGENET_STD


def test_planted_unit_ranks_first_with_iou_one():
    torch.manual_seed(0)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 4:20] = True
    features = torch.rand(1, 16, 32, 32)
    features[0, 11] = mask.float()
    found = units_for_region(features, mask, top=5)
    assert found.units[0].item() == 11
    assert found.iou[0].item() == pytest.approx(1.0)
    assert torch.equal(found.masks[0], mask)
    assert torch.all(found.iou[:-1] >= found.iou[1:])


def test_planted_coarse_unit_ranks_first_after_upsampling():
    torch.manual_seed(0)
    features = torch.rand(1, 16, 8, 8) * 0.5
    features[0, 11] = 0.0
    features[0, 11, 2:6, 1:5] = 3.0
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:48, 8:40] = True
    found = units_for_region(features, mask, top=5)
    assert found.units[0].item() == 11
    # bilinear upsampling rounds the square's corners, nothing more
    assert found.iou[0].item() > 0.85
    assert torch.all(found.iou[:-1] >= found.iou[1:])
    assert found.masks.shape == (5, 64, 64) and found.masks.dtype == torch.bool


def test_constant_unit_gets_no_region():
    features = torch.ones(3, 4, 4)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    found = units_for_region(features, mask)
    assert torch.all(found.iou == 0) and not found.masks.any()


def test_sky_of_astronaut_photo_gives_sorted_ious():
    photo = skimage.data.astronaut()[::4, ::4]  # 128 x 128
    x = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    features = FeatureExtractor(model, "layer2")(x[None])["layer2"]
    mask = np.zeros(photo.shape[:2], dtype=bool)
    mask[:, 96:] = True  # the right-hand background
    found = units_for_region(features, mask, top=10, quantile=0.9)
    assert found.units.shape == (10,) and len(set(found.units.tolist())) == 10
    assert torch.all(found.iou[:-1] >= found.iou[1:])
    assert 0 < found.iou[0] <= 1
    assert found.quantile == 0.9


@pytest.mark.parametrize(
    ("features", "mask", "match"),
    [
        (torch.rand(2, 3, 4, 4), torch.ones(8, 8, dtype=torch.bool), "2 images"),
        (torch.rand(4, 4), torch.ones(8, 8, dtype=torch.bool), r"\(C, h, w\)"),
        (torch.rand(3, 4, 4), torch.ones(1, 8, 8, dtype=torch.bool), r"\(H, W\)"),
        (torch.rand(3, 4, 4), torch.zeros(8, 8, dtype=torch.bool), "empty"),
    ],
)
def test_bad_input_is_explained(features, mask, match):
    with pytest.raises(ValueError, match=match):
        units_for_region(features, mask)


def test_region_units_are_served_by_the_package_and_the_top_level():
    import netlens
    import netlens.dissect
    import netlens.dissect.region

    assert netlens.dissect.units_for_region is netlens.dissect.region.units_for_region
    assert netlens.units_for_region is netlens.dissect.region.units_for_region
    assert netlens.RegionUnits is netlens.dissect.RegionUnits
