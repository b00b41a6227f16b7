"""Images for display: layout, range, normalisation, blending, and the helpers every plot shares."""

import numpy as np
import pytest
import skimage.data
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from netlens import viz
from netlens.viz import IMAGENET_MEAN, IMAGENET_STD
from netlens.viz._common import as_numpy, class_labels, class_name


def test_to_image_accepts_tensor_array_and_pil_alike():
    photo = skimage.data.chelsea()[:40, :60]
    expected = photo / 255.0
    tensor = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
    for img in (
        photo,
        tensor,
        tensor[None],
        Image.fromarray(photo),
        photo.astype(np.float32) / 255,
    ):
        out = viz.to_image(img)
        assert out.shape == (40, 60, 3)
        np.testing.assert_allclose(out, expected, atol=1e-6)
    # bfloat16 keeps 8 bits of mantissa: within 1/256 of the photo
    np.testing.assert_allclose(viz.to_image(tensor.bfloat16()), expected, atol=1 / 256)


def test_to_image_makes_grayscale_rgb():
    out = viz.to_image(torch.rand(1, 5, 7))
    assert out.shape == (5, 7, 3) and np.array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize(
    ("img", "error", "match"),
    [
        (torch.rand(3, 5, 3), ValueError, "cannot tell"),
        (torch.rand(2, 3, 4, 4), ValueError, "batch of 2"),
        (torch.randn(3, 8, 8) * 3, ValueError, "mean= and std="),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_to_image_explains_bad_input(img, error, match):
    with pytest.raises(error, match=match):
        viz.to_image(img)


def test_an_image_of_any_range_shows_through_normalize_first():
    image = torch.randn(3, 8, 8) * 5 - 2
    out = viz.to_image(viz.normalize(image))
    assert out.min() == 0.0 and out.max() == 1.0
    expected = viz.normalize(image.permute(1, 2, 0).numpy())
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_normalize_constant_map_gives_zeros_not_nan():
    for value in (torch.full((4, 4), 3.0), np.full((4, 4), 3.0)):
        out = viz.normalize(value)
        assert not np.isnan(np.asarray(out)).any() and float(out.max()) == 0.0
    out = viz.normalize(torch.tensor([[-2.0, 0.0], [2.0, 6.0]]))
    assert out.min() == 0 and out.max() == 1


def test_blend_with_alpha_zero_reproduces_the_uint8_photo():
    photo = skimage.data.chelsea()
    x = TF.normalize(TF.to_tensor(photo), IMAGENET_MEAN, IMAGENET_STD)
    heat = torch.rand(7, 7)
    picture = viz.to_image(x, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out = viz.blend(picture, heat, alpha=0.0)
    restored = np.round(out * 255).astype(int)
    assert np.abs(restored - photo.astype(int)).max() <= 1


def test_blend_colours_the_hot_corner():
    heat = torch.zeros(2, 2)
    heat[0, 0] = 1.0
    out = viz.blend(torch.zeros(3, 16, 16), heat, alpha=1.0, cmap="gray")
    assert out.shape == (16, 16, 3)
    assert out[0, 0].min() == pytest.approx(1.0) and out[-1, -1].max() == pytest.approx(0.0)


# helpers every plot shares ---------------------------------------------------------


def test_as_numpy_keeps_integers_exact_and_reads_bfloat16():
    index = torch.tensor([2**24 + 1, 3])
    out = as_numpy(index)
    assert out.dtype == np.int64 and out.tolist() == [2**24 + 1, 3]
    assert as_numpy(torch.tensor([1.0], dtype=torch.float64)).dtype == np.float64
    half = as_numpy(torch.tensor([0.5, 1.5], dtype=torch.bfloat16, requires_grad=True))
    assert half.dtype == np.float32 and half.tolist() == [0.5, 1.5]
    assert as_numpy([1, 2]).tolist() == [1, 2]


def test_class_name_defaults_to_the_index_and_rejects_a_missing_name():
    assert class_name(3, None) == "class 3"
    assert class_name(1, ["cat", "dog"]) == "dog"
    # A negative label must not wrap around to the last name.
    for label in (-1, 2):
        with pytest.raises(ValueError, match=f"label {label} has no entry in the 2 class_names"):
            class_name(label, ["cat", "dog"])


def test_class_labels_accept_whole_floats_and_refuse_fractions():
    assert class_labels(torch.tensor([0.0, 2.0])).tolist() == [0, 2]
    assert class_labels([1, 0]).dtype == np.int64
    with pytest.raises(ValueError, match=r"labels\[1\] is 1.5"):
        class_labels(np.array([1.0, 1.5]))
