import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import netlens
from netlens.datasets import RotationDataset, rotate, rotate_batch


def test_rotating_back_by_the_label_recovers_the_image():
    images = torch.rand(3, 2, 5, 5)
    rotated, labels = rotate_batch(images)
    assert rotated.shape == (12, 2, 5, 5)
    for row in range(12):
        assert torch.equal(rotate(rotated[row], -int(labels[row])), images[row // 4])
    dataset = RotationDataset(TensorDataset(torch.rand(4, 1, 6, 3), torch.arange(4)))
    for index in range(len(dataset)):
        image, r = dataset[index]
        assert torch.equal(rotate(image, -r), dataset.dataset[index // 4][0])


def test_rotation_length_and_labels_are_balanced():
    dataset = RotationDataset(torch.rand(5, 1, 4, 4))
    assert len(dataset) == 20
    labels = [dataset[i][1] for i in range(len(dataset))]
    assert np.bincount(labels).tolist() == [5, 5, 5, 5]
    _, batch_labels = rotate_batch(torch.rand(6, 1, 4, 4))
    assert torch.bincount(batch_labels).tolist() == [6, 6, 6, 6]
    assert dataset[-1][1] == 3
    with pytest.raises(IndexError):
        dataset[20]
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.rand(2, 1, 4, 5))


def test_rotation_of_pil_images_matches_tensors():
    from PIL import Image

    array = (np.random.default_rng(0).random((6, 4)) * 255).astype(np.uint8)
    dataset = RotationDataset([Image.fromarray(array)])
    for r in range(4):
        turned = np.asarray(dataset[r][0])
        np.testing.assert_array_equal(turned, rotate(torch.from_numpy(array), r).numpy())


def test_top_level_names_are_the_datasets_ones():
    assert netlens.RotationDataset is RotationDataset
    assert netlens.rotate_batch is rotate_batch


def test_old_rotation_path_serves_the_same_names_with_a_warning():
    import netlens.rotation

    with pytest.warns(DeprecationWarning, match="netlens.datasets.rotation"):
        old = netlens.rotation.rotate_batch
    assert old is rotate_batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert netlens.rotation.ROTATION_NAMES == netlens.datasets.ROTATION_NAMES
