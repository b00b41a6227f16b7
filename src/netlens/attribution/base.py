"""What every attribution method shares: checks, targets, resizing, model state.

A method subclasses :class:`Attribution` (or :class:`LayerAttribution`, for
maps read off one layer) and implements one method, :meth:`Attribution._attribute`,
which receives a checked input batch and a :class:`Targets` and returns
maps of shape ``(N, K, h, w)``: one per sample and per requested class. The
base class does everything else, once for every method: input and target
checks, eval mode with every ``training`` flag restored, the escape from a
caller's ``torch.inference_mode`` / ``torch.no_grad``, resizing, the output
device and dtype, and the shape of the answer (``(N, H, W)`` for one class
per sample, ``(N, K, H, W)`` for ``K``).
"""

from __future__ import annotations

import numbers
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens._checks import check_images, check_matches_model
from netlens._plan import learn_from_calls
from netlens.errors import GraphCutError
from netlens.hooks import OutputFn, as_logits, eval_mode, graph_cut_message
from netlens.layers import Defaults, LayerLike, _defaults_and_calls, channel_axis, resolve_layer

__all__ = [
    "Attribution",
    "LayerAttribution",
    "Size",
    "Target",
    "Targets",
    "resolve_targets",
    "resize",
    "spatial",
]

Target = int | Sequence[int] | Tensor | Callable[[Tensor], Tensor] | None
Size = str | int | tuple[int, int] | None


class Attribution:
    """Base class of netlens attribution methods.

    Calling an instance returns one map per sample: ``method(x, target=None, *,
    size="input") -> Tensor (N, H, W)`` on ``x``'s device and dtype, with raw
    (unnormalised) values; a target of shape ``(N, K)`` gives ``(N, K, H, W)``.

    ``target`` is ``None`` (each sample's top-1 class), an ``int`` (the same
    class for every sample), one class per sample (a sequence or 1-D tensor
    of length ``N``), ``K`` classes per sample (``(N, K)``), or a function of
    the logits returning one of those. ``size`` is ``"input"`` (bilinear
    upsampling to the input's height and width), ``None`` (the method's own
    resolution), an ``int`` (a square) or ``(H, W)``.

    A subclass implements :meth:`_attribute`; see ``docs/guide/extending.rst``.

    Parameters
    ----------
    model
        The classifier.
    output
        How to read logits from what ``model`` returns, when it is not a
        tensor, a tuple / list with the logits first, a mapping with
        ``"logits"`` or an object with a ``.logits`` tensor
        (:func:`netlens.hooks.as_logits`).
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

    def __init__(self, model: nn.Module, *, output: OutputFn | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, not {type(model).__name__}")
        if output is not None and not callable(output):
            raise TypeError(f"output must be a function of the model's output, not {output!r}")
        self.model = model
        self.output = output

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"

    def __call__(self, x: Tensor, target: Target = None, *, size: Size = "input") -> Tensor:
        """Maps ``(N, H, W)`` (or ``(N, K, H, W)``), raw values on ``x``'s device and dtype.

        Parameters
        ----------
        x
            Images ``(N, C, H, W)``.
        target
            ``None`` (each sample's top-1 class), an ``int``, one class per
            sample, ``(N, K)`` classes, or a function of the logits.
        size
            ``"input"`` (the input's height and width), ``None`` (the method's
            own resolution), an ``int`` (square) or ``(H, W)``.
        """
        check_images(x)
        check_matches_model(x, self.model)
        out_size = _output_size(size, x)
        # Outside a caller's inference mode, so that target tensors can enter autograd.
        with torch.inference_mode(False):
            targets = Targets.parse(target, x.shape[0])
            with eval_mode(self.model):
                maps = self._attribute(x, targets)
        if maps.dim() == 3:  # a method that returns one map per sample
            maps = maps.unsqueeze(1)
        maps = resize(maps, out_size)
        if not targets.many:
            maps = maps[:, 0]
        return maps.to(device=x.device, dtype=x.dtype)

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        """Maps ``(N, K, h, w)`` for ``targets.resolve(logits)`` of shape ``(N, K)``.

        Runs in eval mode, outside inference mode, after every input check.
        """
        raise NotImplementedError

    def logits(self, output: object) -> Tensor:
        """The logits in what the model returned (see the ``output`` parameter)."""
        return as_logits(output, self.output)

    def class_gradients(
        self, x: Tensor, logits: Tensor, classes: Tensor, wrt: Tensor, what: str
    ) -> Iterator[Tensor]:
        """Gradients of each column of ``classes`` ``(N, K)`` of the logits with respect to ``wrt``.

        One backward pass per column, the graph kept until the last. A gradient
        that does not exist (the logits do not depend on ``wrt``) is
        :class:`~netlens.errors.GraphCutError` naming ``what`` and where the
        graph of the model on ``x`` is cut; one that exists and is zero is zeros.
        """
        columns = classes.shape[1]
        for k in range(columns):
            score = logits.gather(1, classes[:, k : k + 1]).sum()
            gradient = None
            if score.requires_grad:
                (gradient,) = torch.autograd.grad(
                    score, wrt, retain_graph=k + 1 < columns, allow_unused=True
                )
            if gradient is None:
                raise GraphCutError(
                    graph_cut_message(
                        self.model, x, f"the gradient of the logits with respect to {what}"
                    )
                )
            yield gradient


class LayerAttribution(Attribution):
    """An attribution method read off one layer's feature map.

    ``layer=None`` picks the model's last convolutional feature map
    (:func:`netlens.layers.find_feature_layer`) at the first call, which runs
    one extra forward pass on one example to find it. A layer whose output is
    channels-last, ``(N, H, W, C)`` (inside ConvNeXt and Swin blocks), is read
    along its channel axis (:func:`netlens.layers.channel_axis`); pass
    ``channels_last=True`` / ``False`` to say so where netlens cannot tell.
    """

    needs_layer: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        layer: LayerLike | None = None,
        *,
        output: OutputFn | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, output=output)
        self._layer = resolve_layer(model, layer) if layer is not None else None
        self._defaults: Defaults | None = None
        self._axes: dict[str, bool] = {}  # layer name -> channels-last output, found once
        self.channels_last = channels_last

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, layer={self.layer_name!r})"

    @property
    def layer_name(self) -> str | None:
        """Name of the layer the maps are read from (``None`` until found)."""
        return self._layer[0] if self._layer else None

    def defaults(self, x: Tensor) -> Defaults:
        """The model's default layers, found with one forward pass on ``x[:1]``.

        Kept for the model while its modules stay the same, so that methods
        made afresh for every call (``GradCAM(model)(x)``) do not pay that pass
        again.
        """
        if self._defaults is None:
            self._defaults = _known_defaults(self.model, x, self.output)
        return self._defaults

    def _resolve(self, x: Tensor) -> tuple[str, nn.Module]:
        if self._layer is None:
            self._layer = resolve_layer(self.model, self.defaults(x).feature_layer)
        return self._layer

    def as_nchw(self, name: str, value: Tensor) -> Tensor:
        """The layer's output as ``(N, C, H, W)``, permuted when it is channels-last."""
        if value.dim() != 4:
            return spatial(name, value, self.title)
        last = self.channels_last
        if last is None:
            if self._axes.get(name) is None:
                self._axes[name] = channel_axis(self.model, name) == -1
            last = self._axes[name]
        return value.permute(0, 3, 1, 2) if last else value


_DEFAULTS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[object, ...], Defaults]] = (
    weakref.WeakKeyDictionary()
)
_DEFAULTS_LOCK = threading.Lock()


def _known_defaults(model: nn.Module, x: Tensor, output: OutputFn | None) -> Defaults:
    """:func:`~netlens.layers.find_defaults` once per model, modules, input shape and output."""
    key = (
        tuple((name, id(module)) for name, module in model.named_modules()),
        tuple(x.shape[1:]),
        x.dtype,
        x.device,
        output,
    )
    with _DEFAULTS_LOCK:
        known = _DEFAULTS.get(model)
    if known is not None and known[0] == key:
        return known[1]
    found, calls = _defaults_and_calls(model, x, output=output)
    learn_from_calls(model, x, calls)  # the same pass sizes the size plan
    with _DEFAULTS_LOCK:
        try:
            _DEFAULTS[model] = (key, found)
        except TypeError:  # a module that cannot be weakly referenced
            pass
    return found


@dataclass
class Targets:
    """The classes to explain, checked for form; resolved against the logits later.

    Attributes
    ----------
    value
        ``None`` (top-1), a long tensor ``(N,)`` or ``(N, K)``, or a function
        of the logits.
    n
        The batch size.
    many
        Whether the caller asked for ``K`` classes per sample (maps come back
        ``(N, K, H, W)``).

    Examples
    --------
    >>> import torch
    >>> Targets.parse([2, 0], 2).resolve(torch.zeros(2, 3)).tolist()
    [[2], [0]]
    >>> Targets.parse(None, 2).resolve(torch.tensor([[0.0, 1.0], [5.0, 1.0]])).tolist()
    [[1], [0]]
    """

    value: Tensor | Callable[[Tensor], Tensor] | None
    n: int
    many: bool = False

    @classmethod
    def parse(cls, target: Target | Targets, n: int) -> Targets:
        """Check the form of ``target`` for a batch of ``n`` (no logits needed)."""
        if isinstance(target, Targets):
            return target
        if target is None:
            return cls(None, n)
        if callable(target) and not isinstance(target, Tensor):
            return cls(target, n)
        tensor = _target_tensor(target)
        if tensor.dim() == 2:
            if tensor.shape[0] != n or tensor.shape[1] == 0:
                raise ValueError(
                    f"targets of shape {tuple(tensor.shape)} for a batch of {n}: give (N, K) "
                    f"with N = {n} and K >= 1"
                )
            return cls(tensor, n, many=True)
        if tensor.dim() > 2 or (tensor.dim() == 1 and tensor.numel() != n):
            raise ValueError(
                f"got {tensor.numel()} targets in shape {tuple(tensor.shape)} for a batch of "
                f"{n} samples; give one int for all samples, exactly one per sample, or (N, K)"
            )
        return cls(tensor.reshape(-1).expand(n), n)

    @property
    def needs_logits(self) -> bool:
        """Whether the classes depend on the logits of the input itself (top-1 or a function).

        Given classes need only the logits' width and device, so a method that
        never runs the model on the input as given (Integrated Gradients,
        SmoothGrad, Occlusion) can resolve them on the logits of any batch.
        """
        return self.value is None or (callable(self.value) and not isinstance(self.value, Tensor))

    def resolve(self, logits: Tensor) -> Tensor:
        """Class indices ``(N, K)`` on the logits' device, checked against the class count."""
        if logits.dim() != 2:
            raise ValueError(
                f"the model's output has shape {tuple(logits.shape)}; attribution needs "
                "logits of shape (N, num_classes) (pass output= to say where they are)"
            )
        classes = logits.shape[1]
        if self.value is None:
            return logits.detach().argmax(1, keepdim=True)
        value = self.value
        if callable(value) and not isinstance(value, Tensor):
            chosen = value(logits.detach())
            if chosen is None or callable(chosen):
                raise TypeError("a target function must return class indices")
            parsed = Targets.parse(chosen, self.n)
            assert isinstance(parsed.value, Tensor)
            value, self.many = parsed.value, parsed.many
        targets = value.to(logits.device).long()
        if targets.dim() == 1:
            targets = targets.unsqueeze(1)
        return _check_range(targets, classes)

    def given(self, device: torch.device) -> Tensor:
        """Given classes ``(N, K)`` on ``device``, not yet checked against the class count.

        For a method that hands them to another call which checks them
        (SmoothGrad's wrapped method); raises when :attr:`needs_logits`.
        """
        if self.needs_logits:
            raise ValueError("these targets depend on the logits: use resolve(logits)")
        assert isinstance(self.value, Tensor)
        targets = self.value.to(device).long()
        return targets.unsqueeze(1) if targets.dim() == 1 else targets


def _check_range(targets: Tensor, classes: int) -> Tensor:
    low, high = targets.aminmax()
    if int(low) < 0 or int(high) >= classes:
        bad = targets[(targets < 0) | (targets >= classes)]
        raise IndexError(
            f"target {bad.unique().tolist()} out of range: the model has {classes} "
            f"classes (valid: 0 to {classes - 1})"
        )
    return targets


def _target_tensor(target: object) -> Tensor:
    if isinstance(target, bool) or isinstance(target, str | bytes):
        raise TypeError(
            f"target must be None, an int, one int per sample or (N, K) ints, not "
            f"{type(target).__name__} {target!r}"
        )
    if isinstance(target, numbers.Integral):
        return torch.tensor(int(target))
    if isinstance(target, Tensor):
        tensor = target.detach().cpu()
    else:
        if isinstance(target, Sequence) and any(
            isinstance(t, bool | str | bytes | float) for t in _flat(target)
        ):
            bad = next(t for t in _flat(target) if isinstance(t, bool | str | bytes | float))
            raise TypeError(f"targets are integer class indices, got {bad!r}")
        try:
            tensor = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"target must be None, an int, one int per sample or (N, K) ints; could not "
                f"read {type(target).__name__}: {error}"
            ) from None
    if tensor.numel() == 0:
        raise ValueError("no targets given (an empty sequence); give at least one class index")
    if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"targets are integer class indices, got dtype {tensor.dtype}")
    return tensor


def _flat(values: object) -> list[object]:
    if isinstance(values, Sequence) and not isinstance(values, str | bytes):
        return [v for item in values for v in _flat(item)]
    return [values]


def resolve_targets(target: Target | Targets, logits: Tensor) -> Tensor:
    """One class index per sample, checked against the number of classes.

    Examples
    --------
    >>> import torch
    >>> resolve_targets(None, torch.tensor([[0.1, 2.0], [3.0, 0.0]])).tolist()
    [1, 0]
    >>> resolve_targets(1, torch.zeros(3, 2)).tolist()
    [1, 1, 1]
    """
    targets = Targets.parse(target, logits.shape[0] if logits.dim() else 0).resolve(logits)
    if targets.shape[1] != 1:
        raise ValueError("resolve_targets gives one class per sample; use Targets for (N, K)")
    return targets[:, 0]


def _output_size(size: Size, x: Tensor) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, str):
        if size != "input":
            raise ValueError(f"size must be 'input', None, an int or (H, W), not {size!r}")
        return int(x.shape[-2]), int(x.shape[-1])
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, Sequence)
        or len(size) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
        or not all(int(s) > 0 for s in size)
    ):
        raise ValueError(
            f"size must be 'input', None, a positive int or (H, W) positive ints, not {size!r}"
        )
    return int(size[0]), int(size[1])


def resize(maps: Tensor, size: tuple[int, int] | None) -> Tensor:
    """Bilinear resizing of ``(N, K, h, w)`` maps to ``size`` (``None``: unchanged)."""
    if size is None or tuple(maps.shape[-2:]) == size:
        return maps
    if not maps.is_floating_point():
        maps = maps.float()
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def spatial(name: str, value: Tensor, method: str) -> Tensor:
    """Return ``value`` if it is an ``(N, C, H, W)`` feature map, else raise."""
    if value.dim() != 4:
        raise ValueError(
            f"{method} needs a spatial feature map (N, C, H, W), but layer '{name}' "
            f"outputs shape {tuple(value.shape)}; pick a convolutional layer "
            "(netlens.layers.find_feature_layer finds the last one)."
        )
    return value
