"""Unit ablation: switch off (or set) channels of a layer and watch the prediction.

Ablation follows one rule for every value: inside the block, the layer's
output ``a`` becomes ``where(mask, value, a)`` where ``mask`` selects the
chosen channels, so zeroing, clamping to a constant and patching are the same
operation. A channels-last layer (``(N, H, W, C)``, inside ConvNeXt blocks) is
ablated along its last axis (:func:`netlens.layers.channel_axis`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from netlens._checks import check_images, check_matches_model
from netlens._repr import ShortRepr
from netlens.hooks import (
    ActiveSessions,
    HookSession,
    OutputFn,
    SessionBlock,
    Tap,
    as_logits,
    eval_mode,
    run_forward,
)
from netlens.layers import LayerLike, channel_axis, find_classifier, resolve_layer

__all__ = ["AblationSearch", "UnitAblator", "channel_count", "fewest_units_to_flip", "rank_units"]

Units = int | Sequence[int] | Tensor


class UnitAblator(SessionBlock):
    """Set chosen channels ("units") of a layer's output to a constant.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    layer
        The layer whose output channels are ablated (name or module).
    units
        Channel indices: an int, a sequence of ints or a 1-D integer tensor.
    value
        What the chosen channels are set to (0 switches them off).
    channels_last
        Whether the layer's output is ``(N, H, W, C)``; default: found from the
        model (:func:`netlens.layers.channel_axis`).

    Raises
    ------
    LayerNotReachedError
        When the forward pass does not run the layer (an auxiliary head in
        eval mode, a TorchScript or compiled graph that runs no hooks): an
        ablation that never happens is an error, not unchanged logits.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> ablator = UnitAblator(resnet, "layer4", [3, 17, 42])
    >>> with ablator:
    ...     ablated = resnet(x)
    >>> torch.equal(ablated, ablator(x))
    True
    """

    def __init__(
        self,
        model: nn.Module,
        layer: LayerLike,
        units: Units,
        *,
        value: float = 0.0,
        channels_last: bool | None = None,
        output: OutputFn | None = None,
    ) -> None:
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.units = _as_units(units)
        channels = channel_count(self.layer)
        if channels is not None:
            _check_units(self.units, channels, self.layer_name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a number, not {value!r}")
        self.value = float(value)
        self.channels_last = channels_last
        self.output = output
        self._active = ActiveSessions(self, "UnitAblator")

    def _axis(self, out: Tensor) -> int:
        if out.dim() < 2:
            raise ValueError(
                f"layer '{self.layer_name}' outputs shape {tuple(out.shape)}, which has "
                "no channel dimension to ablate"
            )
        if self.channels_last is not None:
            return out.dim() - 1 if self.channels_last else 1
        return channel_axis(self.model, self.layer_name, out.dim()) % out.dim()

    def _ablate(self, out: Tensor) -> Tensor:
        axis = self._axis(out)
        _check_units(self.units, out.shape[axis], self.layer_name)
        mask = torch.zeros(out.shape[axis], dtype=torch.bool, device=out.device)
        mask[self.units.to(out.device)] = True
        shape = [1] * out.dim()
        shape[axis] = -1
        return torch.where(mask.view(shape), torch.as_tensor(self.value, dtype=out.dtype), out)

    def _new_session(self) -> HookSession:
        return HookSession(
            self.model, [Tap(self.layer_name, self.layer, None, replace=self._ablate)]
        )

    def __call__(self, x: Tensor) -> Tensor:
        """Logits of ``model(x)`` with the units ablated (eval mode, no gradients)."""
        check_images(x)
        check_matches_model(x, self.model)
        with eval_mode(self.model), torch.no_grad():
            logits, _ = run_forward(self.model, x, self._new_session(), output=self.output)
        assert logits is not None
        return logits


def channel_count(module: nn.Module) -> int | None:
    """Number of output channels of a module when its type tells, else ``None``."""
    for attr in ("out_channels", "num_features", "out_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _as_units(units: Units) -> Tensor:
    if isinstance(units, bool | str | bytes | float):
        raise TypeError(f"units are integer channel indices, not {units!r}")
    if isinstance(units, numbers.Integral):
        return torch.tensor([int(units)])
    if isinstance(units, Tensor):
        tensor = units.detach().cpu().reshape(-1)
    else:
        values = list(units)
        bad = [u for u in values if isinstance(u, bool) or not isinstance(u, numbers.Integral)]
        if bad:
            raise TypeError(f"units are integer channel indices, got {bad[0]!r}")
        tensor = torch.tensor([int(u) for u in values], dtype=torch.long)
    if tensor.numel() == 0:
        raise ValueError("give at least one unit to ablate")
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"units are integer channel indices, got dtype {tensor.dtype}")
    return tensor.long()


def _check_units(units: Tensor, channels: int, layer: str) -> None:
    bad = units[(units < 0) | (units >= channels)]
    if bad.numel():
        raise IndexError(
            f"unit index {bad.tolist()} out of range for layer '{layer}', which has "
            f"{channels} channels (valid: 0 to {channels - 1})"
        )


def rank_units(
    model: nn.Module,
    target: int,
    *,
    fc: LayerLike | None = None,
    example: Tensor | None = None,
    output: OutputFn | None = None,
) -> Tensor:
    """Units of the layer feeding the classifier, by their weight for ``target``.

    In a global-average-pool + linear model the logit of class ``c`` is
    ``sum_k w[c, k] * mean(a_k) + b[c]``, so the units with the largest
    ``w[c, k]`` push hardest towards ``c``.

    Parameters
    ----------
    model
        The classifier.
    target
        The class index (an int).
    fc
        The classifier layer; default: the ``nn.Linear`` whose output is the
        logits (:func:`netlens.layers.find_classifier`), found with one forward
        pass of ``example``.
    example
        An input batch for finding the classifier; default: one zero image of
        224 x 224 with as many channels as the first convolution takes.
    output
        How to read the logits from the model's output (see
        :func:`netlens.hooks.as_logits`).

    Returns
    -------
    Tensor
        Unit indices, largest weight first.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18()
    >>> order = rank_units(resnet, 7)
    >>> bool(resnet.fc.weight[7, order[0]] == resnet.fc.weight[7].max())
    True
    """
    if isinstance(target, bool) or not isinstance(target, numbers.Integral):
        raise TypeError(f"target must be an int class index, not {target!r}")
    linear = _classifier(model, fc, example, output)
    classes = linear.out_features
    if not 0 <= int(target) < classes:
        raise IndexError(
            f"target {target} out of range for {classes} classes (valid: 0 to {classes - 1})"
        )
    return linear.weight.detach()[int(target)].argsort(descending=True).cpu()


def _classifier(
    model: nn.Module, fc: LayerLike | None, example: Tensor | None, output: OutputFn | None
) -> nn.Linear:
    if fc is None:
        if example is None:
            example = _zero_image(model)
        fc = find_classifier(model, example, output=output)
    name, linear = resolve_layer(model, fc)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fc must be an nn.Linear, but '{name}' is a {type(linear).__name__}")
    return linear


def _zero_image(model: nn.Module) -> Tensor:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Conv2d to tell its input channels; pass "
            "example= (an input batch) or fc= (the classifier layer)"
        )
    weight = conv.weight
    return torch.zeros(1, conv.in_channels, 224, 224, dtype=weight.dtype, device=weight.device)


@dataclass(repr=False)
class AblationSearch(ShortRepr):
    """Result of :func:`fewest_units_to_flip`.

    Attributes
    ----------
    count
        The fewest top-ranked units whose ablation changes the top-1 class, or
        ``None`` if no count up to ``max_units`` does.
    units
        Those units (empty when ``count`` is ``None``).
    original_class, new_class
        Top-1 class before and after ablating ``units``.
    logits_before, logits_after
        ``(num_classes,)`` logits before and after.
    """

    count: int | None
    units: Tensor
    original_class: int
    new_class: int
    logits_before: Tensor
    logits_after: Tensor


def fewest_units_to_flip(
    model: nn.Module,
    x: Tensor,
    layer: LayerLike,
    *,
    ranking: Units | None = None,
    fc: LayerLike | None = None,
    max_units: int | None = None,
    value: float = 0.0,
    batch_size: int = 32,
    output: OutputFn | None = None,
) -> AblationSearch:
    """Fewest top-ranked units of ``layer`` whose ablation changes the top-1 class.

    Every candidate count ``k = 1, 2, ...`` ablates the first ``k`` units of
    ``ranking``. Counts are evaluated ``batch_size`` at a time in one batched
    forward pass (sample ``i`` of the batch ablates its own ``k``), and the
    search stops at the first batch that contains a change.

    Parameters
    ----------
    model
        The classifier.
    x
        One image, ``(1, C, H, W)``.
    layer
        The layer whose units are ablated.
    ranking
        Units in the order to ablate; default :func:`rank_units` for the
        image's top-1 class (a GAP + linear head is then assumed).
    fc
        Classifier layer for the default ranking.
    max_units
        Largest count to try; default all ranked units.
    value
        Value the ablated units are set to.
    batch_size
        Counts per forward pass.
    output
        How to read the logits from the model's output (see
        :func:`netlens.hooks.as_logits`).

    Raises
    ------
    LayerNotReachedError
        When the forward pass does not run ``layer``.
    ValueError
        When the default ranking does not apply: the classifier does not read
        ``layer``'s channels (pass ``ranking=``).

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> result = fewest_units_to_flip(resnet, torch.randn(1, 3, 64, 64), "layer4")
    >>> result.count is None or result.new_class != result.original_class
    True
    """
    check_images(x)
    check_matches_model(x, model)
    if x.shape[0] != 1:
        raise ValueError(f"give one image, shape (1, C, H, W); got batch of {x.shape[0]}")
    limit_given = _positive("max_units", max_units) if max_units is not None else None
    batch_size = _positive("batch_size", batch_size)
    layer_name, module = resolve_layer(model, layer)
    with eval_mode(model), torch.no_grad():
        before = as_logits(model(x), output)[0]
        original = int(before.argmax())
        if ranking is not None:
            order = _as_units(ranking)
        else:
            order = rank_units(model, original, fc=fc, example=x, output=output)
            _check_default_ranking(model, x, layer_name, module, len(order))
        limit = len(order) if limit_given is None else min(limit_given, len(order))
        for start in range(1, limit + 1, batch_size):
            counts = torch.arange(start, min(start + batch_size, limit + 1))
            logits = _ablate_prefixes(model, x, layer_name, module, order, counts, value, output)
            changed = (logits.argmax(1) != original).nonzero()
            if changed.numel():
                i = int(changed[0])
                k = int(counts[i])
                return AblationSearch(
                    k, order[:k], original, int(logits[i].argmax()), before, logits[i]
                )
    return AblationSearch(None, order[:0], original, original, before, before)


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return int(value)


def _check_default_ranking(
    model: nn.Module, x: Tensor, layer_name: str, module: nn.Module, ranked: int
) -> None:
    """The classifier's weights rank units only of a layer with as many channels as it reads."""
    channels = channel_count(module)
    if channels is None:
        found = run_forward(model, x, HookSession(model, [Tap(layer_name, module, "copy")]))[1]
        value = found[layer_name]
        channels = (
            value.shape[channel_axis(model, layer_name, value.dim())] if value.dim() > 1 else 1
        )
    if channels != ranked:
        raise ValueError(
            f"the default ranking orders the {ranked} inputs of the classifier, but layer "
            f"'{layer_name}' has {channels} channels: the classifier does not read this "
            "layer. Pass ranking= (unit indices of this layer, in the order to ablate), "
            "or pick the layer that feeds the classifier."
        )


def _ablate_prefixes(
    model: nn.Module,
    x: Tensor,
    layer_name: str,
    module: nn.Module,
    order: Tensor,
    counts: Tensor,
    value: float,
    output: OutputFn | None,
) -> Tensor:
    """Logits for a batch where sample ``i`` ablates the first ``counts[i]`` units."""

    def ablate(out: Tensor) -> Tensor:
        axis = channel_axis(model, layer_name, out.dim()) % out.dim()
        channels = out.shape[axis]
        _check_units(order, channels, layer_name)
        ranks = torch.full((channels,), channels, dtype=torch.long)
        ranks[order] = torch.arange(len(order))
        mask = (ranks.unsqueeze(0) < counts.unsqueeze(1)).to(out.device)  # (batch, channels)
        shape = [len(counts)] + [1] * (out.dim() - 1)
        shape[axis] = channels
        return torch.where(mask.view(shape), torch.as_tensor(value, dtype=out.dtype), out)

    batch = x.expand(len(counts), *x.shape[1:]).contiguous()
    session = HookSession(model, [Tap(layer_name, module, None, replace=ablate)])
    logits, _ = run_forward(model, batch, session, output=output)
    assert logits is not None
    return logits
