"""Input checks shared by every method: fail before any work, say what is right."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch
from torch import Tensor, nn


def check_images(x: object) -> Tensor:
    """Return ``x`` if it is an ``(N, C, H, W)`` floating-point tensor, else raise.

    Examples
    --------
    >>> import torch
    >>> check_images(torch.zeros(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"expected a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}; "
            "convert images with torchvision.transforms.functional.to_tensor and stack them."
        )
    if x.dim() != 4:
        hint = " Add a batch dimension with x.unsqueeze(0)." if x.dim() == 3 else ""
        raise ValueError(f"expected input of shape (N, C, H, W), got shape {tuple(x.shape)}.{hint}")
    if x.shape[0] == 0:
        raise ValueError("the input batch is empty (N = 0)")
    if not x.is_floating_point():
        raise TypeError(
            f"expected a floating-point tensor, got dtype {x.dtype}; "
            "convert with x.float() / 255 for uint8 images."
        )
    return x


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` if it is a whole number of at least 1, else raise.

    Any integral number is accepted (``3``, ``numpy.int64(3)``); a float or a
    bool is a :class:`TypeError` even when it is whole (``3.0``, ``True``),
    zero or less a :class:`ValueError`.

    Examples
    --------
    >>> import numpy as np
    >>> check_positive_int(np.int64(3), "k")
    3
    >>> check_positive_int(3.0, "k")
    Traceback (most recent call last):
    ...
    TypeError: k must be an integer, got 3.0 (float)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_labels(labels: object, name: str = "labels") -> Tensor:
    """Return class labels as a 1-D ``int64`` tensor, on the device they came on.

    Integer and bool labels are taken as they are. Float labels are accepted
    only when every value is a whole number (``1.0``, not ``1.5``): casting
    would silently put an image in the wrong class.

    Raises
    ------
    TypeError
        If the labels are not numbers (strings, complex values, ...).
    ValueError
        If a float label is not a whole number; the message names the first.

    Examples
    --------
    >>> import torch
    >>> check_labels(torch.tensor([0.0, 2.0])).tolist()
    [0, 2]
    >>> check_labels([0.0, 1.5, 2.5])
    Traceback (most recent call last):
    ...
    ValueError: labels must be whole numbers (class indices); labels[1] is 1.5
    """
    try:
        values = labels.detach() if isinstance(labels, Tensor) else torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be integer class indices, got {type(labels).__name__} ({error})"
        ) from None
    values = values.reshape(-1)
    if values.is_complex():
        raise TypeError(f"{name} must be integer class indices, got dtype {values.dtype}")
    if values.is_floating_point():
        whole = torch.isfinite(values) & (values == values.round())
        if not bool(whole.all()):
            first = int((~whole).nonzero()[0, 0])
            raise ValueError(
                f"{name} must be whole numbers (class indices); "
                f"{name}[{first}] is {values[first].item()!r}"
            )
    return values.long()


def check_feature_maps(features: object) -> Tensor:
    """Return detached ``(N, C, H, W)`` feature maps; one ``(C, H, W)`` map becomes a batch of one.

    Examples
    --------
    >>> import torch
    >>> check_feature_maps(torch.zeros(8, 5, 5)).shape
    torch.Size([1, 8, 5, 5])
    """
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a torch.Tensor, not {type(features).__name__}")
    if features.dim() == 3:
        features = features[None]
    if features.dim() != 4:
        raise ValueError(
            f"features must be (N, C, H, W) or (C, H, W), got shape {tuple(features.shape)}"
        )
    return features.detach()


def split_batch(batch: object) -> tuple[Tensor, object | None]:
    """Split one batch of a data loader into its images and its labels.

    A tensor is images alone. A tuple or list holds the images first and, when
    it has a second item, the labels second; further items (paths, masks) are
    ignored. The images are checked with :func:`check_images`; the labels are
    returned untouched (``None`` when there are none), so a caller that needs
    class indices checks them with :func:`check_labels` and one that only needs
    images never fails on them.

    Raises
    ------
    TypeError
        For a mapping (``{"image": ..., "label": ...}``): which entry holds
        the images is not guessed.

    Examples
    --------
    >>> import torch
    >>> images, labels = split_batch((torch.zeros(2, 1, 4, 4), torch.tensor([3, 1])))
    >>> images.shape, labels.tolist()
    (torch.Size([2, 1, 4, 4]), [3, 1])
    >>> split_batch(torch.zeros(2, 1, 4, 4))[1] is None
    True
    """
    labels = None
    if isinstance(batch, (tuple, list)) and batch:
        if len(batch) > 1:
            labels = batch[1]
        batch = batch[0]
    if isinstance(batch, Mapping):
        keys = ", ".join(repr(key) for key in list(batch)[:8])
        raise TypeError(
            f"a batch that is a mapping (keys {keys}) is not understood; yield (images, labels) "
            "or images alone, e.g. ((b['image'], b['label']) for b in loader)"
        )
    return check_images(batch), labels


def check_matches_model(x: Tensor, model: nn.Module) -> None:
    """Raise a clear error when ``x``'s dtype or device does not match the model's."""
    first = next((p for p in model.parameters() if p.is_floating_point()), None)
    if first is None:
        return
    device = model_device(model)
    if x.device != device and device.type != "meta":
        raise ValueError(
            f"the input is on {x.device} but the model is on {device}; move one of them, "
            f"e.g. x.to({str(device)!r})"
        )
    dtype = first.dtype
    if x.dtype != dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"the input is {x.dtype} but the model's parameters are {dtype}; convert the "
            f"input with x.to({dtype}) (or the model with model.to({x.dtype}))"
        )
