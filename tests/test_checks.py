"""The input checks every method shares: batches, labels, counts."""

import numpy as np
import pytest
import torch

from netlens._checks import check_labels, check_positive_int, split_batch


def test_split_batch_reads_a_tensor_as_images_alone():
    x = torch.rand(2, 3, 4, 4)
    images, labels = split_batch(x)
    assert images is x and labels is None


@pytest.mark.parametrize("container", [tuple, list])
def test_split_batch_takes_images_first_labels_second_and_ignores_the_rest(container):
    x, y = torch.rand(2, 3, 4, 4), torch.tensor([1, 0])
    images, labels = split_batch(container([x, y, ["a.png", "b.png"]]))
    assert images is x and labels is y
    assert split_batch(container([x])) == (x, None)


def test_split_batch_returns_labels_untouched_for_callers_that_only_need_images():
    x = torch.rand(2, 3, 4, 4)
    assert split_batch((x, ["a.png", "b.png"]))[1] == ["a.png", "b.png"]
    assert split_batch((x, torch.tensor([0.5, 0.25])))[1].dtype == torch.float32


@pytest.mark.parametrize("batch", [{"image": torch.rand(1, 3, 4, 4)}, ({"image": 0}, [1])])
def test_split_batch_refuses_mappings_with_their_keys(batch):
    with pytest.raises(TypeError, match=r"mapping \(keys 'image'\)"):
        split_batch(batch)


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ((torch.rand(3, 4, 4), torch.tensor([0])), ValueError, "unsqueeze"),
        ((torch.zeros(1, 3, 4, 4, dtype=torch.uint8),), TypeError, "floating-point"),
        ((), TypeError, "torch.Tensor"),
    ],
)
def test_split_batch_checks_the_images(batch, error, match):
    with pytest.raises(error, match=match):
        split_batch(batch)


def test_check_labels_gives_int64_from_ints_bools_and_whole_floats():
    for labels in ([2, 0], np.array([2, 0], dtype=np.uint8), torch.tensor([2.0, 0.0])):
        out = check_labels(labels)
        assert out.dtype == torch.int64 and out.tolist() == [2, 0]
    assert check_labels(torch.tensor([[True], [False]])).tolist() == [1, 0]


@pytest.mark.parametrize("bad", [0.5, float("nan"), float("inf")])
def test_check_labels_names_the_first_value_that_is_not_whole(bad):
    with pytest.raises(ValueError, match=rf"targets\[2\] is {bad}"):
        check_labels(torch.tensor([1.0, 3.0, bad, 0.5]), "targets")


@pytest.mark.parametrize("bad", [["cat", "dog"], torch.tensor([1 + 1j])])
def test_check_labels_refuses_what_is_not_a_number(bad):
    with pytest.raises(TypeError, match="integer class indices"):
        check_labels(bad)


def test_check_positive_int_takes_any_integral_number():
    for value in (3, np.int64(3), np.uint8(3)):
        out = check_positive_int(value, "k")
        assert out == 3 and type(out) is int


@pytest.mark.parametrize(
    ("value", "error"), [(3.0, TypeError), (True, TypeError), ("3", TypeError), (0, ValueError)]
)
def test_check_positive_int_refuses_other_values(value, error):
    with pytest.raises(error, match="k must be"):
        check_positive_int(value, "k")
