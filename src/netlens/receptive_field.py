"""Receptive fields measured through the gradient, and convolution output sizes.

The receptive field of a unit is the set of input pixels that can change it.
It is read off the support of ``d(unit) / d(input)``, measured on a copy of the
model made *linear and positive* so that no path is hidden:

* max pooling passes the gradient to one pixel per window, so every max pool
  runs as an average pool with the same window;
* a ReLU that is off (or a saturated sigmoid) zeroes the gradient, and signed
  weights can cancel, so activations run as identities and every convolution
  / linear weight becomes the positive constant ``1 / fan_in`` (bias 0; any other
  learned scale becomes 1);
* normalisation layers become a division by the (constant) mean activation,
  which keeps values near 1 where gating (``x * sigmoid(...)`` in
  squeeze-excitation blocks) would otherwise square them towards overflow;
  dropout runs as an identity.

Pooling, activations and dropout are swapped where they are *called*, by a
``torch.overrides.TorchFunctionMode`` active during the measuring forward
pass, so the functions a ``forward`` calls itself (``F.max_pool2d``,
``torch.relu``, ``x.sigmoid()``) are linearised exactly like the modules
(``nn.MaxPool2d``, ``nn.ReLU``) that call them.

With positive weights and a positive input every path adds, so the support is
the union of the fields of all paths: a residual block gets the field of its
longest branch. The model you pass is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from netlens._checks import model_device
from netlens.extract import FeatureExtractor
from netlens.layers import LayerLike, resolve_layer

_NORMS = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.LocalResponseNorm,
)


def _functions(*names: str) -> set[Callable[..., Any]]:
    """The functions of these names in ``F``, ``torch`` and ``torch.Tensor``."""
    found = set()
    for name in names:
        for namespace in (F, torch, torch.Tensor, torch._C._nn):
            function = getattr(namespace, name, None)
            if callable(function):
                found.add(function)
    return found


# Activations (and their inplace forms) and dropout: identities on the copy.
_AS_IDENTITY = _functions(
    *(
        f"{name}{suffix}"
        for name in (
            "relu",
            "relu6",
            "leaky_relu",
            "prelu",
            "rrelu",
            "elu",
            "selu",
            "celu",
            "gelu",
            "silu",
            "mish",
            "hardswish",
            "hardsigmoid",
            "hardtanh",
            "threshold",
            "sigmoid",
            "tanh",
            "softplus",
            "softsign",
            "dropout",
            "dropout1d",
            "dropout2d",
            "dropout3d",
            "alpha_dropout",
            "feature_alpha_dropout",
            "feature_dropout",
        )
        for suffix in ("", "_")
    ),
    "_threshold",
)

_AVERAGE_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOLS_WITH_INDICES = {
    1: F.max_pool1d_with_indices,
    2: F.max_pool2d_with_indices,
    3: F.max_pool3d_with_indices,
}
_ADAPTIVE_AVERAGE_POOLS = {
    1: F.adaptive_avg_pool1d,
    2: F.adaptive_avg_pool2d,
    3: F.adaptive_avg_pool3d,
}
_ADAPTIVE_MAX_POOLS_WITH_INDICES = {
    1: F.adaptive_max_pool1d_with_indices,
    2: F.adaptive_max_pool2d_with_indices,
    3: F.adaptive_max_pool3d_with_indices,
}


def _max_pool_as_average(dims: int, indices: bool | None) -> Callable[..., Any]:
    """A max pool of ``dims`` dims that averages over each window instead.

    ``indices``: whether the function returns the argmax indices too (``None``:
    when called with ``return_indices=True``). They are the real max pool's,
    for a later ``max_unpool``; the gradient does not flow through them.
    """

    def pool(
        input: Tensor,  # noqa: A002 - the name torch passes it under
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if any(d != 1 for d in torch.nn.modules.utils._ntuple(dims)(dilation)):
            raise ValueError(
                f"a max pool with dilation {dilation} has no average-pool counterpart, so "
                "its receptive field cannot be measured"
            )
        stride = kernel_size if stride is None or stride == [] else stride
        average = _AVERAGE_POOLS[dims](
            input, kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=False
        )
        if indices or (indices is None and return_indices):
            real = _MAX_POOLS_WITH_INDICES[dims](
                input.detach(), kernel_size, stride, padding, dilation, ceil_mode
            )
            return average, real[1]
        return average

    return pool


def _adaptive_max_pool_as_average(dims: int, indices: bool | None) -> Callable[..., Any]:
    """An adaptive max pool that averages over each window instead (see above)."""

    def pool(
        input: Tensor,  # noqa: A002 - the name torch passes it under
        output_size: Any,
        return_indices: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        average = _ADAPTIVE_AVERAGE_POOLS[dims](input, output_size)
        if indices or (indices is None and return_indices):
            real = _ADAPTIVE_MAX_POOLS_WITH_INDICES[dims](input.detach(), output_size)
            return average, real[1]
        return average

    return pool


def _pool_replacements() -> dict[Callable[..., Any], Callable[..., Any]]:
    table: dict[Callable[..., Any], Callable[..., Any]] = {}
    for dims in (1, 2, 3):
        # F.max_pool2d decides by return_indices; the *_with_indices forms
        # (and torch.adaptive_max_pool1d) always return both.
        for function in _functions(f"max_pool{dims}d"):
            table[function] = _max_pool_as_average(dims, None)
        for function in _functions(f"max_pool{dims}d_with_indices"):
            table[function] = _max_pool_as_average(dims, True)
        for function in _functions(f"adaptive_max_pool{dims}d"):
            with_indices = function is not getattr(F, f"adaptive_max_pool{dims}d")
            table[function] = _adaptive_max_pool_as_average(dims, True if with_indices else None)
        for function in _functions(f"adaptive_max_pool{dims}d_with_indices"):
            table[function] = _adaptive_max_pool_as_average(dims, True)
    return table


_POOLS = _pool_replacements()


class _LinearisedFunctions(TorchFunctionMode):
    """Activations and dropout as identities, max pools as average pools, where called."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: object,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _AS_IDENTITY:
            return args[0] if args else kwargs.get("input", kwargs.get("self"))
        replacement = _POOLS.get(func)
        if replacement is not None:
            return replacement(*args, **kwargs)
        return func(*args, **kwargs)


class _Rescale(nn.Module):
    """Divide by the mean activation, held constant: a positive scale, same support."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / x.detach().mean().clamp_min(torch.finfo(x.dtype).tiny)


@dataclass(frozen=True)
class ReceptiveField:
    """The input region one unit of a layer sees.

    Attributes
    ----------
    size : tuple[int, int]
        ``(height, width)`` of the field in input pixels, clipped to the input.
    box : tuple[int, int, int, int]
        ``(top, left, bottom, right)`` in input pixels; ``bottom`` and
        ``right`` are exclusive, so ``size == (bottom - top, right - left)``.
    unit : tuple[int, int]
        ``(row, column)`` of the unit in the layer's output.
    clipped : bool
        Whether the box touches a border of the input: the field may then be
        larger than ``size``; measure again with a larger ``input_size``.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3))
    >>> field = receptive_field(net, "2", (1, 32, 32))
    >>> field.size, field.clipped
    ((5, 5), False)
    """

    size: tuple[int, int]
    box: tuple[int, int, int, int]
    unit: tuple[int, int]
    clipped: bool


def conv_output_size(
    n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Length of a convolution's (or pooling's) output along one dimension.

    ``floor((n + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1``, the
    rule ``nn.Conv2d`` and ``nn.MaxPool2d`` (with ``ceil_mode=False``) follow.

    Raises
    ------
    ValueError
        If an argument is out of range or the kernel does not fit the padded input.

    Examples
    --------
    >>> conv_output_size(224, kernel=7, stride=2, padding=3)
    112
    >>> conv_output_size(32, kernel=5)
    28
    """
    if n < 1 or kernel < 1 or stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(
            "need n >= 1, kernel >= 1, stride >= 1, dilation >= 1 and padding >= 0; got "
            f"n={n}, kernel={kernel}, stride={stride}, padding={padding}, dilation={dilation}"
        )
    span = dilation * (kernel - 1) + 1
    if n + 2 * padding < span:
        raise ValueError(
            f"a kernel spanning {span} pixels does not fit an input of {n} with padding "
            f"{padding}; use a larger input or more padding"
        )
    return (n + 2 * padding - span) // stride + 1


def receptive_field(
    model: nn.Module,
    layer: LayerLike,
    input_size: int | tuple[int, int] | tuple[int, int, int],
    *,
    unit: tuple[int, int] | None = None,
) -> ReceptiveField:
    """Measure the receptive field of one unit of ``layer`` in input pixels.

    The field is the nonzero support of the gradient of the unit (summed over
    channels) with respect to the input, on a linearised positive copy of the
    model (see the module notes), so max pooling and dead ReLUs do not shrink
    it and residual networks get the union over all paths.

    Parameters
    ----------
    model
        Any CNN; it is deep-copied, never changed.
    layer
        The layer whose output holds the unit; its output must be ``(N, C, H, W)``.
    input_size
        ``S`` (square), ``(H, W)`` or ``(C, H, W)``. Without ``C`` the channel
        count is that of the first ``nn.Conv2d`` in the model. Choose it large
        enough that the field fits inside: a field larger than the input is
        clipped to it (``clipped`` is then ``True``).
    unit
        ``(row, column)`` in the layer's output; default the centre unit
        ``(H // 2, W // 2)``, the one least likely to be clipped.

    Notes
    -----
    Max pooling, activations and dropout are linearised where they are called,
    so the functions a ``forward`` calls itself (``F.max_pool2d``,
    ``torch.relu``) count exactly like modules. Other operations that pass the
    gradient to a few of their inputs (``torch.amax``, ``torch.topk``, indexing
    with an ``argmax``) are left as they are. Gradients are enabled for the
    measurement, also inside a caller's ``torch.no_grad()`` or
    ``torch.inference_mode()``, and the caller's grad mode is restored after.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    >>> rf = receptive_field(net, "3", 16)
    >>> rf.size
    (7, 7)
    >>> rf = receptive_field(net, "3", 16, unit=(0, 0))
    >>> rf.box
    (0, 0, 7, 7)
    """
    name, _ = resolve_layer(model, layer)
    shape = _input_shape(model, input_size)
    # Under a caller's no_grad() or inference_mode() nothing would be recorded.
    with torch.inference_mode(False), torch.enable_grad():
        probe = _linearised_copy(model)
        x = torch.ones(1, *shape, dtype=torch.float64, device=model_device(model))
        x.requires_grad_(True)
        with _LinearisedFunctions():
            out = FeatureExtractor(probe, name, detach=False, stop_early=True)(x)[name]
        if out.dim() != 4:
            raise ValueError(
                f"layer '{name}' outputs shape {tuple(out.shape)}; a receptive field needs a "
                "spatial output (N, C, H, W), so pick a convolutional or pooling layer"
            )
        height, width = out.shape[2:]
        row, col = (height // 2, width // 2) if unit is None else unit
        if not (0 <= row < height and 0 <= col < width):
            raise IndexError(
                f"unit {(row, col)} is outside the {height}x{width} output of layer '{name}'"
            )
        (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), x)
    support = grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if len(rows) == 0:
        raise RuntimeError(
            f"unit {(row, col)} of layer '{name}' does not depend on the input; is the layer "
            "reached through a path that ignores the image?"
        )
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    clipped = top == 0 or left == 0 or bottom == shape[1] or right == shape[2]
    return ReceptiveField(
        size=(bottom - top, right - left),
        box=(top, left, bottom, right),
        unit=(row, col),
        clipped=clipped,
    )


def _input_shape(
    model: nn.Module, input_size: int | tuple[int, int] | tuple[int, int, int]
) -> tuple[int, int, int]:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) == 3:
        return size  # type: ignore[return-value]
    if len(size) != 2:
        raise ValueError(f"input_size must be S, (H, W) or (C, H, W), not {input_size!r}")
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(
            "the model has no nn.Conv2d to read the channel count from; pass (C, H, W)"
        )
    return (first.in_channels, *size)  # type: ignore[return-value]


def _linearised_copy(model: nn.Module) -> nn.Module:
    # Every weight is overwritten, so the copy never reads the model's values:
    # fresh float64 parameters skip copying (and converting) large classifiers.
    # float64 keeps the smallest gradient entries of a deep network (the
    # field's corners, reached by one path each) far from underflow.
    memo: dict[int, object] = {
        id(p): nn.Parameter(
            torch.ones(p.shape, dtype=torch.float64, device=p.device), requires_grad=False
        )
        for p in model.parameters()
    }
    probe = copy.deepcopy(model, memo).double().eval()
    for parent in list(probe.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, _NORMS):
                setattr(parent, child_name, _Rescale())
    for module in probe.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            with torch.no_grad():
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
    return probe
