"""What every attribution method shares: checks, targets, resizing, model state.

A method subclasses :class:`Attribution` and implements :meth:`_attribute`,
which receives a checked input batch and the raw ``target`` argument and
returns ``(maps, logits)`` with maps of shape ``(N, h, w)``. The base class
runs it with the model in eval mode (every ``training`` flag restored after),
outside any caller's ``torch.inference_mode`` / ``torch.no_grad``, and
resizes the maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens._checks import check_images
from netlens.hooks import eval_mode
from netlens.layers import LayerLike, find_feature_layer, resolve_layer

Target = int | Sequence[int] | Tensor | None
Size = str | tuple[int, int] | None


class Attribution:
    """Base class of netlens attribution methods.

    Calling an instance returns one map per sample: ``method(x, target=None, *,
    size="input") -> Tensor (N, H, W)`` on ``x``'s device and dtype, with raw
    (unnormalised) values.

    ``target`` is ``None`` (each sample's top-1 class), an ``int`` (the same
    class for every sample) or one class per sample (a sequence or 1-D tensor
    of length ``N``). ``size`` is ``"input"`` (bilinear upsampling to the input's
    height and width), ``None`` (the method's own resolution) or ``(H, W)``.
    """

    #: The method's name as people write it, for titles and listings.
    title: ClassVar[str] = ""
    #: Whether the method reads one layer's feature map (``layer=`` argument).
    needs_layer: ClassVar[bool] = False
    #: Whether the method differentiates the model (backward passes).
    needs_gradients: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("title"):
            cls.title = cls.__name__

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __call__(self, x: Tensor, target: Target = None, *, size: Size = "input") -> Tensor:
        """One map per sample, ``(N, H, W)``, raw values on ``x``'s device and dtype.

        Parameters
        ----------
        x
            Images ``(N, C, H, W)``.
        target
            ``None`` (each sample's top-1 class), an ``int``, or one class per
            sample.
        size
            ``"input"`` (the input's height and width), ``None`` (the method's
            own resolution) or ``(H, W)``.
        """
        check_images(x)
        _check_target_form(target, x.shape[0])
        out_size = _output_size(size, x)
        with torch.inference_mode(False), eval_mode(self.model):
            maps = self._attribute(x, target)
        if out_size is not None and tuple(maps.shape[-2:]) != out_size:
            maps = F.interpolate(
                maps.unsqueeze(1), size=out_size, mode="bilinear", align_corners=False
            ).squeeze(1)
        return maps.to(device=x.device, dtype=x.dtype)

    def _attribute(self, x: Tensor, target: Target) -> Tensor:
        raise NotImplementedError


class LayerAttribution(Attribution):
    """An attribution method read off one layer's feature map.

    ``layer=None`` picks the model's last convolutional feature map
    (:func:`netlens.layers.find_feature_layer`) at the first call.
    """

    needs_layer: ClassVar[bool] = True

    def __init__(self, model: nn.Module, layer: LayerLike | None = None) -> None:
        super().__init__(model)
        self._layer = resolve_layer(model, layer) if layer is not None else None

    @property
    def layer_name(self) -> str | None:
        """Name of the layer the maps are read from (``None`` until found)."""
        return self._layer[0] if self._layer else None

    def _resolve(self, x: Tensor) -> tuple[str, nn.Module]:
        if self._layer is None:
            self._layer = resolve_layer(self.model, find_feature_layer(self.model, x))
        return self._layer


def resolve_targets(target: Target, logits: Tensor) -> Tensor:
    """One class index per sample, checked against the number of classes.

    Examples
    --------
    >>> import torch
    >>> resolve_targets(None, torch.tensor([[0.1, 2.0], [3.0, 0.0]])).tolist()
    [1, 0]
    >>> resolve_targets(1, torch.zeros(3, 2)).tolist()
    [1, 1, 1]
    """
    if logits.dim() != 2:
        raise ValueError(
            f"the model's output has shape {tuple(logits.shape)}; attribution needs "
            "logits of shape (N, num_classes)"
        )
    n, classes = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    _check_target_form(target, n)
    targets = torch.as_tensor(target, device=logits.device).long().reshape(-1).expand(n)
    bad = targets[(targets < 0) | (targets >= classes)]
    if bad.numel():
        raise IndexError(
            f"target {bad.unique().tolist()} out of range: the model has {classes} "
            f"classes (valid: 0 to {classes - 1})"
        )
    return targets


def _check_target_form(target: Target, n: int) -> None:
    if target is None:
        return
    if isinstance(target, bool):
        raise TypeError("target must be None, an int or one int per sample, not a bool")
    tensor = torch.as_tensor(target)
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"targets are integer class indices, got dtype {tensor.dtype}")
    if tensor.dim() > 1 or (tensor.dim() == 1 and tensor.numel() != n):
        raise ValueError(
            f"got {tensor.numel()} targets in shape {tuple(tensor.shape)} for a batch of "
            f"{n} samples; give one int for all samples or exactly one per sample"
        )


def _output_size(size: Size, x: Tensor) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        if size != "input":
            raise ValueError(f"size must be 'input', None or (H, W), not {size!r}")
        return int(x.shape[-2]), int(x.shape[-1])
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be 'input', None or (H, W) positive ints, not {size!r}")
    return int(size[0]), int(size[1])


def spatial(name: str, value: Tensor, method: str) -> Tensor:
    """Return ``value`` if it is an ``(N, C, H, W)`` feature map, else raise."""
    if value.dim() != 4:
        raise ValueError(
            f"{method} needs a spatial feature map (N, C, H, W), but layer '{name}' "
            f"outputs shape {tuple(value.shape)}; pick a convolutional layer "
            "(netlens.layers.find_feature_layer finds the last one)."
        )
    return value


def channels_last_helps(model: nn.Module, x: Tensor) -> bool:
    """Whether running ``model`` on ``x`` in channels-last layout is the faster way on this host.

    On the CPU, oneDNN computes 2-d convolutions natively in channels-last
    (NHWC) layout; a batch in the default NCHW layout is reordered to and from
    it around every convolution. For float32 image batches on a CPU with
    oneDNN and a model with 2-d convolutions, handing it the batch in
    channels-last layout skips those reorders (ResNet-50 forward: about a
    fifth faster).
    """
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and not x.is_contiguous(memory_format=torch.channels_last)
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


def is_layout_error(error: RuntimeError) -> bool:
    """An error of code that needs the default (NCHW-contiguous) layout, e.g. ``.view``."""
    message = str(error)
    return "view size is not compatible" in message or "contiguous" in message
