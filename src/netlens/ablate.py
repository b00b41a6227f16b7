"""Unit ablation: switch off (or set) channels of a layer and watch the prediction.

Ablation follows one rule for every value: inside the block, the layer's
output ``a`` becomes ``where(mask, value, a)`` where ``mask`` selects the
chosen channels, so zeroing, clamping to a constant and patching are the same
operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import torch
from torch import Tensor, nn

from netlens._checks import check_images
from netlens.hooks import HookSession, Tap, eval_mode
from netlens.layers import LayerLike, resolve_layer

Units = int | Sequence[int] | Tensor


class UnitAblator:
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
        self, model: nn.Module, layer: LayerLike, units: Units, *, value: float = 0.0
    ) -> None:
        self.model = model
        self.layer_name, self.layer = resolve_layer(model, layer)
        self.units = _as_units(units)
        channels = channel_count(self.layer)
        if channels is not None:
            _check_units(self.units, channels, self.layer_name)
        self.value = float(value)
        self._session: HookSession | None = None

    def _ablate(self, out: Tensor) -> Tensor:
        if out.dim() < 2:
            raise ValueError(
                f"layer '{self.layer_name}' outputs shape {tuple(out.shape)}, which has "
                "no channel dimension to ablate"
            )
        _check_units(self.units, out.shape[1], self.layer_name)
        mask = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
        mask[self.units.to(out.device)] = True
        mask = mask.view(1, -1, *([1] * (out.dim() - 2)))
        return torch.where(mask, torch.as_tensor(self.value, dtype=out.dtype), out)

    def __enter__(self) -> UnitAblator:
        if self._session is not None:
            raise RuntimeError("this UnitAblator is already active; nesting it has no meaning")
        session = HookSession(
            self.model, [Tap(self.layer_name, self.layer, None, replace=self._ablate)]
        )
        session.__enter__()
        self._session = session
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        assert session is not None
        session.__exit__(exc_type, exc, tb)

    def __call__(self, x: Tensor) -> Tensor:
        """Logits of ``model(x)`` with the units ablated (eval mode, no gradients)."""
        check_images(x)
        with self, eval_mode(self.model), torch.no_grad():
            return self.model(x)


def channel_count(module: nn.Module) -> int | None:
    """Number of output channels of a module when its type tells, else ``None``."""
    for attr in ("out_channels", "num_features", "out_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _as_units(units: Units) -> Tensor:
    tensor = torch.as_tensor(units).reshape(-1)
    if tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise TypeError(f"units are integer channel indices, got dtype {tensor.dtype}")
    if tensor.numel() == 0:
        raise ValueError("give at least one unit to ablate")
    return tensor.long().cpu()


def _check_units(units: Tensor, channels: int, layer: str) -> None:
    bad = units[(units < 0) | (units >= channels)]
    if bad.numel():
        raise IndexError(
            f"unit index {bad.tolist()} out of range for layer '{layer}', which has "
            f"{channels} channels (valid: 0 to {channels - 1})"
        )


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` defined in ``model`` (its classifier in torchvision CNNs)."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier; pass fc= explicitly")
    return found[-1]


def rank_units(model: nn.Module, target: int, *, fc: LayerLike | None = None) -> Tensor:
    """Units of the layer feeding the classifier, by their weight for ``target``.

    In a global-average-pool + linear model the logit of class ``c`` is
    ``sum_k w[c, k] * mean(a_k) + b[c]``, so the units with the largest
    ``w[c, k]`` push hardest towards ``c``.

    Parameters
    ----------
    model
        The classifier.
    target
        The class index.
    fc
        The classifier layer; default: the last ``nn.Linear`` of the model.

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
    linear = resolve_layer(model, fc)[1] if fc is not None else last_linear(model)[1]
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fc must be an nn.Linear, got {type(linear).__name__}")
    classes = linear.out_features
    if not 0 <= int(target) < classes:
        raise IndexError(f"target {target} out of range for {classes} classes")
    return linear.weight.detach()[int(target)].argsort(descending=True).cpu()


@dataclass
class AblationSearch:
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

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> result = fewest_units_to_flip(resnet, torch.randn(1, 3, 64, 64), "layer4")
    >>> result.count is None or result.new_class != result.original_class
    True
    """
    check_images(x)
    if x.shape[0] != 1:
        raise ValueError(f"give one image, shape (1, C, H, W); got batch of {x.shape[0]}")
    layer_name, module = resolve_layer(model, layer)
    with eval_mode(model), torch.no_grad():
        before = model(x)[0]
        original = int(before.argmax())
        order = _as_units(ranking) if ranking is not None else rank_units(model, original, fc=fc)
        limit = len(order) if max_units is None else min(int(max_units), len(order))
        for start in range(1, limit + 1, batch_size):
            counts = torch.arange(start, min(start + batch_size, limit + 1))
            logits = _ablate_prefixes(model, x, layer_name, module, order, counts, value)
            changed = (logits.argmax(1) != original).nonzero()
            if changed.numel():
                i = int(changed[0])
                k = int(counts[i])
                return AblationSearch(
                    k, order[:k], original, int(logits[i].argmax()), before, logits[i]
                )
    return AblationSearch(None, order[:0], original, original, before, before)


def _ablate_prefixes(
    model: nn.Module,
    x: Tensor,
    layer_name: str,
    module: nn.Module,
    order: Tensor,
    counts: Tensor,
    value: float,
) -> Tensor:
    """Logits for a batch where sample ``i`` ablates the first ``counts[i]`` units."""

    def ablate(out: Tensor) -> Tensor:
        _check_units(order, out.shape[1], layer_name)
        ranks = torch.empty(out.shape[1], dtype=torch.long)
        ranks.fill_(out.shape[1])
        ranks[order] = torch.arange(len(order))
        mask = ranks.unsqueeze(0) < counts.unsqueeze(1)  # (batch, channels)
        mask = mask.to(out.device).view(*mask.shape, *([1] * (out.dim() - 2)))
        return torch.where(mask, torch.as_tensor(value, dtype=out.dtype), out)

    batch = x.expand(len(counts), *x.shape[1:]).contiguous()
    with HookSession(model, [Tap(layer_name, module, None, replace=ablate)]):
        return model(batch)
