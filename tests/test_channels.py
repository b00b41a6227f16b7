"""Channels reduced for a person to look at: mean, max, and PCA to RGB."""

import pytest
import torch

from netlens import viz
from netlens.channels import reduce_channels


def test_reduce_channels_methods():
    features = torch.rand(2, 6, 4, 5)
    assert torch.equal(reduce_channels(features, "mean"), features.mean(1))
    assert torch.equal(reduce_channels(features, "max"), features.amax(1))
    rgb = reduce_channels(features, "pca")
    assert rgb.shape == (2, 4, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert torch.equal(rgb, reduce_channels(features.clone(), "pca"))
    with pytest.raises(ValueError, match="pca"):
        reduce_channels(features, "tsne")


def test_one_map_is_a_batch_of_one_and_other_shapes_are_refused():
    features = torch.rand(6, 4, 5)
    assert torch.equal(reduce_channels(features, "max"), features.amax(0)[None])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(C, H, W\)"):
        reduce_channels(torch.rand(6, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        reduce_channels(features.numpy())


def test_pca_first_component_follows_the_dominant_direction():
    torch.manual_seed(0)
    signal = torch.linspace(0, 1, 16).reshape(1, 1, 4, 4)
    direction = torch.tensor([3.0, -1.0, 2.0, 0.5]).reshape(1, 4, 1, 1)
    features = signal * direction + 0.001 * torch.randn(1, 4, 4, 4)
    red = reduce_channels(features, "pca")[0, ..., 0]
    assert torch.corrcoef(torch.stack([red.flatten(), signal.flatten()]))[0, 1] > 0.99


def test_pca_of_two_channels_pads_the_missing_component_with_zeros():
    rgb = reduce_channels(torch.rand(2, 2, 3, 3), "pca")
    assert torch.equal(rgb[..., 2], torch.zeros(2, 3, 3))
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 1


def test_viz_serves_the_same_function():
    assert viz.reduce_channels is reduce_channels
