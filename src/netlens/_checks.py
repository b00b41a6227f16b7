"""Input checks shared by every method: fail before any work, say what is right."""

from __future__ import annotations

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
