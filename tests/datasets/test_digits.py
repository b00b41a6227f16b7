import warnings

import pytest
import torch

import netlens.data
import netlens.datasets
import netlens.models
from netlens.datasets import DIGIT_CLASSES, Split, load_digits


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (16, 3), (32, 1)])
def test_digits_come_as_images_in_unit_range_with_stratified_labels(size, channels):
    train, test = load_digits(size=size, channels=channels)
    assert train.images.shape == (1347, channels, size, size)
    assert test.images.shape == (450, channels, size, size)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert len(DIGIT_CLASSES) == 10
    per_class = torch.bincount(torch.cat([train.labels, test.labels]), minlength=10)
    held_out = torch.bincount(test.labels, minlength=10)
    assert torch.all((held_out - 0.25 * per_class).abs() <= 1)  # stratified


def test_split_is_seeded_and_disjoint():
    first, held_out = load_digits(size=8, seed=3)
    again, _ = load_digits(size=8, seed=3)
    other, _ = load_digits(size=8, seed=4)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert len(first) + len(held_out) == 1797


def test_split_dataset_yields_image_label_pairs():
    split = Split(torch.rand(3, 1, 4, 4), torch.tensor([2, 0, 1]))
    image, label = split.dataset()[2]
    assert torch.equal(image, split.images[2]) and int(label) == 1


def test_data_module_serves_every_name_from_its_new_home_without_warning():
    homes = {
        "DIGIT_CLASSES": netlens.datasets,
        "Split": netlens.datasets,
        "load_digits": netlens.datasets,
        "SmallResNet": netlens.models,
        "History": netlens.models,
        "accuracy": netlens.models,
        "train_classifier": netlens.models,
        "load_torchvision_classifier": netlens.models,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, home in homes.items():
            assert getattr(netlens.data, name) is getattr(home, name), name
        assert issubclass(netlens.data.WeightsUnavailableError, netlens.errors.NetlensError)
    assert set(homes) < set(netlens.data.__all__)
