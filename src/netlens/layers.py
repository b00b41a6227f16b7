"""Find layers by name, and find the layers every method needs by default.

A *layer* is a dotted name from ``model.named_modules()`` (``"layer4"``,
``"features.28"``, ``"layer4.1.conv2"``) or the module object itself.

The ``find_*`` functions run the model once on a single example (eval mode, no
gradients) and read the order in which modules finish, so they work for any
architecture whose ``forward`` calls its modules, whatever the module names.
"""

from __future__ import annotations

import difflib

from torch import Tensor, nn

from netlens.errors import LayerNotFoundError
from netlens.hooks import ModuleCall, trace_calls

LayerLike = str | nn.Module

_POOLING = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Dropout,
)


def layer_names(model: nn.Module) -> list[str]:
    """All dotted names a layer can be given by, in definition order.

    Examples
    --------
    >>> import torch.nn as nn
    >>> layer_names(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    ['0', '1']
    """
    return [name for name, _ in model.named_modules() if name]


def resolve_layer(model: nn.Module, layer: LayerLike) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a dotted name or a module of ``model``.

    Raises
    ------
    LayerNotFoundError
        If ``layer`` is not a submodule of ``model``; the message lists the
        closest valid names.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> resolve_layer(net, "0")[1]
    Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise LayerNotFoundError(
            f"the module {type(layer).__name__} passed as a layer is not part of this "
            f"{type(model).__name__}; pass one of its submodules or a dotted name."
        )
    if not isinstance(layer, str):
        raise TypeError(f"a layer is a dotted name or an nn.Module, not {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return layer, modules[layer]
    raise LayerNotFoundError(_unknown_layer_message(layer, layer_names(model)))


def _unknown_layer_message(layer: str, names: list[str]) -> str:
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    parent = layer.rsplit(".", 1)[0] if "." in layer else ""
    siblings = [n for n in names if parent and n.rsplit(".", 1)[0] == parent]
    for name in siblings:
        if name not in close and len(close) < 8:
            close.append(name)
    hint = f" Closest names: {', '.join(repr(n) for n in close)}." if close else ""
    top = [n for n in names if "." not in n]
    return (
        f"no layer named {layer!r}.{hint} Top-level layers: {', '.join(top)}. "
        "`netlens.layers.layer_names(model)` lists all of them."
    )


def trace(model: nn.Module, example: Tensor) -> list[ModuleCall]:
    """Module calls of one forward pass on the first example, in finishing order."""
    calls, _ = trace_calls(model, example[:1])
    return calls


def find_last_conv(model: nn.Module, example: Tensor) -> str:
    """Name of the last ``nn.Conv2d`` the forward pass runs.

    Examples
    --------
    >>> import torch, torchvision
    >>> find_last_conv(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    'layer4.1.conv2'
    """
    calls = trace(model, example)
    index = _last_conv_index(calls)
    return calls[index].name


def _last_conv_index(calls: list[ModuleCall]) -> int:
    for i in range(len(calls) - 1, -1, -1):
        if isinstance(calls[i].module, nn.Conv2d):
            return i
    raise LayerNotFoundError("the model runs no nn.Conv2d; name the layer explicitly.")


def find_feature_layer(model: nn.Module, example: Tensor) -> str:
    """Name of the outermost module that outputs the last convolutional feature map.

    This is the last module to finish, after the last ``Conv2d``, whose output
    has the same spatial size as that convolution's output and which runs
    before any pooling or flattening: ``layer4`` in a ResNet, ``features`` in
    DenseNet / MobileNet / EfficientNet / ConvNeXt, ``inception5b`` in GoogLeNet.

    Examples
    --------
    >>> import torch, torchvision
    >>> find_feature_layer(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    'layer4'
    """
    calls = trace(model, example)
    start = _last_conv_index(calls)
    spatial = calls[start].output_shape[-2:]  # type: ignore[index]
    best = start
    for i in range(start + 1, len(calls)):
        call = calls[i]
        shape = call.output_shape
        if isinstance(call.module, _POOLING) or (shape is not None and len(shape) < 4):
            break
        if shape is not None and len(shape) == 4 and shape[-2:] == spatial:
            best = i
    return calls[best].name


def find_classifier(model: nn.Module, example: Tensor) -> str:
    """Name of the ``nn.Linear`` whose output is the model's output (the logits).

    Raises
    ------
    LayerNotFoundError
        If the logits are not produced by an ``nn.Linear`` (SqueezeNet's
        convolutional classifier, say).

    Examples
    --------
    >>> import torch, torchvision
    >>> find_classifier(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    'fc'
    """
    calls, output = trace_calls(model, example[:1])
    if isinstance(output, Tensor):
        for i in range(len(calls) - 1, -1, -1):
            call = calls[i]
            if (
                isinstance(call.module, nn.Linear)
                and call.output_shape == tuple(output.shape)
                and _only_containers_after(calls, i)
            ):
                return call.name
    raise LayerNotFoundError(
        f"{type(model).__name__}'s output is not the output of an nn.Linear layer, so "
        "there is no classifier weight matrix to read; pass the layer explicitly "
        "(e.g. fc=...) or use a gradient-based method such as GradCAM."
    )


def _only_containers_after(calls: list[ModuleCall], index: int) -> bool:
    """True when every module finishing after ``calls[index]`` contains it."""
    inner = calls[index].module
    return all(any(m is inner for m in c.module.modules()) for c in calls[index + 1 :])
