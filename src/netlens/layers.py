"""Find layers by name, and find the layers every method needs by default.

A *layer* is a dotted name from ``model.named_modules()`` (``"layer4"``,
``"features.28"``, ``"layer4.1.conv2"``) or the module object itself.

The ``find_*`` functions run the model once on a single example (eval mode, no
gradients) and read the order in which modules finish, so they work for any
architecture whose ``forward`` calls its modules, whatever the module names.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from torch import Tensor, nn

from netlens.errors import LayerNotFoundError
from netlens.hooks import ModuleCall, OutputFn, as_logits, split_call, trace_calls

__all__ = [
    "Defaults",
    "LayerLike",
    "LayerNotFoundError",
    "channel_axis",
    "find_classifier",
    "find_defaults",
    "find_feature_layer",
    "find_last_conv",
    "layer_names",
    "resolve_layer",
    "trace",
]

LayerLike = str | nn.Module

_POOLING = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.AvgPool2d,
    nn.MaxPool2d,
    nn.Flatten,
    nn.Dropout,
)


def layer_names(model: nn.Module, example: Tensor | None = None) -> list[str]:
    """All names a layer can be given by.

    Without ``example``: every dotted module name, in definition order. With
    an example batch, one forward pass lists the calls in the order they end:
    a module called once by its name, one called several times once per call
    as ``"name:k"`` (``"pool:0"``, ``"pool:1"``); modules the pass does not
    run are left out.

    Examples
    --------
    >>> import torch, torch.nn as nn
    >>> relu = nn.ReLU()
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), relu, nn.Conv2d(2, 2, 3), relu)
    >>> layer_names(net)
    ['0', '1', '2']
    >>> layer_names(net, torch.randn(1, 1, 8, 8))
    ['0', '1:0', '2', '1:1']
    """
    if example is None:
        return [name for name, _ in model.named_modules() if name]
    return [call.label for call in trace(model, example)]


def resolve_layer(model: nn.Module, layer: LayerLike) -> tuple[str, nn.Module]:
    """Return ``(name, module)`` for a dotted name or a module of ``model``.

    Raises
    ------
    LayerNotFoundError
        If ``layer`` is not a submodule of ``model``; the message lists the
        closest valid names.

    A name may end in ``":k"`` to address the ``k``-th call of a module that
    the forward pass runs several times (``"pool:1"``); the name returned
    keeps it. On a ``torch.compile`` d model (or a ``DataParallel`` one) the
    names of the wrapped model work as they are.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> resolve_layer(net, "0")[1]
    Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    >>> resolve_layer(net, "1:0")[0]
    '1:0'
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
    base, call = split_call(layer)
    paths = (layer, base) if call is not None else (layer,)
    # torch.compile wraps the model: its layers are named "_orig_mod.<name>".
    for prefix in ("", *_WRAPPERS):
        for path in paths:
            found = submodule(model, prefix + path) if path else None
            if found is not None:
                return prefix + layer, found
    raise LayerNotFoundError(_unknown_layer_message(layer, layer_names(model)))


_WRAPPERS = ("_orig_mod.", "module.")


def submodule(model: nn.Module, name: str) -> nn.Module | None:
    """The module registered under the dotted ``name`` in ``model``, or ``None``.

    Follows the registered children only (``_modules``), as
    ``model.named_modules()`` does, but without listing the whole model.

    Examples
    --------
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Sequential(nn.ReLU()))
    >>> submodule(net, "0.0"), submodule(net, "0.1")
    (ReLU(), None)
    """
    module: nn.Module | None = model
    for part in name.split("."):
        children = module._modules  # type: ignore[union-attr]
        # (a TorchScript module's children have no .get)
        module = children[part] if part in children else None
        if module is None:
            return None
    return module


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


def trace(model: nn.Module, example: Tensor, *, output: OutputFn | None = None) -> list[ModuleCall]:
    """Module calls of one forward pass on the first example, in finishing order."""
    calls, _ = trace_calls(model, example[:1])
    return calls


@dataclass(frozen=True)
class Defaults:
    """The layers every method finds on its own, from one traced forward pass.

    Attributes
    ----------
    feature_layer
        The last convolutional feature map (see :func:`find_feature_layer`).
    last_conv
        The last ``nn.Conv2d`` that runs.
    classifier
        The ``nn.Linear`` producing the logits, or ``None`` when no linear layer does.
    """

    feature_layer: str
    last_conv: str
    classifier: str | None


def find_defaults(model: nn.Module, example: Tensor, *, output: OutputFn | None = None) -> Defaults:
    """Feature layer, last convolution and classifier of ``model``, from one forward pass.

    The pass runs on the first example only, in eval mode and without
    gradients; like any forward pass it runs the hooks the user attached.

    Examples
    --------
    >>> import torch, torchvision
    >>> find_defaults(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    Defaults(feature_layer='layer4', last_conv='layer4.1.conv2', classifier='fc')
    """
    return _defaults_and_calls(model, example, output=output)[0]


def _defaults_and_calls(
    model: nn.Module, example: Tensor, *, output: OutputFn | None = None
) -> tuple[Defaults, list[ModuleCall]]:
    """:func:`find_defaults`, and the module calls of its pass on ``example[:1]``."""
    calls, out = trace_calls(model, example[:1])
    index = _last_conv_index(calls)
    found = Defaults(
        _feature_layer(calls, index),
        calls[index].label,
        _classifier(calls, as_logits(out, output)),
    )
    return found, calls


def find_last_conv(model: nn.Module, example: Tensor) -> str:
    """Name of the last ``nn.Conv2d`` the forward pass runs.

    Examples
    --------
    >>> import torch, torchvision
    >>> find_last_conv(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    'layer4.1.conv2'
    """
    return find_defaults(model, example, output=_any_output).last_conv


def _any_output(out: object) -> Tensor:
    try:
        return as_logits(out)
    except Exception:  # noqa: BLE001 - the logits do not matter here
        import torch

        return torch.empty(0)


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
    return find_defaults(model, example, output=_any_output).feature_layer


def _feature_layer(calls: list[ModuleCall], start: int) -> str:
    spatial = calls[start].output_shape[-2:]  # type: ignore[index]
    best = start
    for i in range(start + 1, len(calls)):
        call = calls[i]
        shape = call.output_shape
        if isinstance(call.module, _POOLING) or (shape is not None and len(shape) < 4):
            break
        if shape is not None and len(shape) == 4 and shape[-2:] == spatial:
            best = i
    return calls[best].label


def find_classifier(model: nn.Module, example: Tensor, *, output: OutputFn | None = None) -> str:
    """Name of the ``nn.Linear`` whose output is the model's output (the logits).

    This is the one rule netlens uses for "the classifier": CAM, unit ranking
    and the embedding probe all read it.

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
    calls, out = trace_calls(model, example[:1])
    found = _classifier(calls, as_logits(out, output))
    if found is None:
        raise LayerNotFoundError(
            f"{type(model).__name__}'s output is not the output of an nn.Linear layer, so "
            "there is no classifier weight matrix to read; pass the layer explicitly "
            "(e.g. fc=...) or use a gradient-based method such as GradCAM."
        )
    return found


def _classifier(calls: list[ModuleCall], logits: Tensor) -> str | None:
    for i in range(len(calls) - 1, -1, -1):
        call = calls[i]
        if (
            isinstance(call.module, nn.Linear)
            and call.output_shape == tuple(logits.shape)
            and _only_containers_after(calls, i)
        ):
            return call.name
    return None


def _only_containers_after(calls: list[ModuleCall], index: int) -> bool:
    """True when every module finishing after ``calls[index]`` contains it."""
    inner = calls[index].module
    return all(any(m is inner for m in c.module.modules()) for c in calls[index + 1 :])


def channel_axis(model: nn.Module, layer: str, dims: int = 4) -> int:
    """The axis of ``layer``'s output that holds its channels: 1, or -1 for channels-last.

    Inside ConvNeXt and Swin blocks the tensor is permuted to ``(N, H, W, C)``
    and ``nn.Linear`` / ``nn.LayerNorm`` act on the last axis. A layer's
    output is channels-last when it is such a linear or layer norm on a 4-d
    tensor, or when it follows, in its ``nn.Sequential``, a
    ``torchvision.ops.Permute([0, 2, 3, 1])`` not undone since.

    Examples
    --------
    >>> import torchvision
    >>> convnext = torchvision.models.convnext_tiny()
    >>> channel_axis(convnext, "features.1.0.block.4"), channel_axis(convnext, "features.1.0")
    (-1, 1)
    """
    if dims < 3:
        return 1
    name = split_call(layer)[0]
    module = submodule(model, name)
    if module is None:
        raise LayerNotFoundError(f"no layer named {name!r} in this {type(model).__name__}")
    # Exact LayerNorm: subclasses such as torchvision's LayerNorm2d permute inside.
    if isinstance(module, nn.Linear) or (
        type(module) is nn.LayerNorm and len(module.normalized_shape) == 1
    ):
        return -1
    last = False
    parts = name.split(".")
    parent: nn.Module = model
    for part in parts:
        if isinstance(parent, nn.Sequential):
            for sibling_name, sibling in parent.named_children():
                if sibling_name == part:
                    break
                last = _layout_after(sibling, last)
        parent = parent._modules[part]  # type: ignore[assignment]
    return -1 if _layout_after(module, last) else 1


def _layout_after(module: nn.Module, last: bool) -> bool:
    """Whether the tensor is channels-last after ``module``, given whether it was before."""
    dims = getattr(module, "dims", None)
    if type(module).__name__ == "Permute" and isinstance(dims, (list, tuple)):
        if list(dims) == [0, 2, 3, 1]:
            return True
        if list(dims) == [0, 3, 1, 2]:
            return False
    if isinstance(module, nn.Sequential):
        for child in module.children():
            last = _layout_after(child, last)
    return last
