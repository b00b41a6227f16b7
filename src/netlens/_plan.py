"""How to run a model at a given input size: memory layout, and whether the lean rules pay.

Two choices depend on the model and the size of the batch, not on the
method, and are made once per model and input shape from what the first call
of that shape sees (:func:`size_plan`).

Layout
------

On the CPU, oneDNN computes 2-d convolutions natively in channels-last (NHWC)
layout. A batch in the default NCHW layout is reordered to and from it around
every convolution, which costs time in proportion to the activations; a
channels-last batch meets weights stored NCHW, which are reordered on every
call instead, in proportion to the weights. Which is cheaper depends on the
model and the size of the batch, not on the method: on a 2-core AMD EPYC
(torch 2.14, oneDNN), channels-last forward passes at 224 x 224 took

========================  =======  ========  =========
model                     batch 1  batch 4   batch 16
========================  =======  ========  =========
ResNet-18                 1.66x    0.96x     0.80x
ResNet-50                 1.05x    0.85x     0.71x
MobileNet-V3-Large        0.65x    0.69x     0.65x
ConvNeXt-Tiny             1.04x    0.92x     0.86x
========================  =======  ========  =========

the time of the same pass in NCHW. Across those and VGG-11, DenseNet-121 and
EfficientNet-B0 at 112 to 448 pixels and batches of 1 to 16, the crossover
sits where the elements the convolutions read (summed over every call of a
2-d convolution in one pass) equal the elements of their weights: below it
the weights' reorders dominate (ResNet-18 at batch 1 reads 0.2 elements of
activation per weight), above it the activations' (ResNet-50 at batch 16
reads 7). Of the 30 sizes measured, the rule picks the layout that was
slower by more than 2 percent in five: VGG-11 at batches 1 and 2 and
DenseNet-121 at 112 pixels (by 12 to 18 percent: they run faster in
channels-last while reading fewer elements than their weights), ResNet-18 at
batch 4 and ConvNeXt-Tiny at batch 1 (by 4 percent).

Lean rules
----------
The rules of :func:`netlens.hooks.input_gradients_only` save activations at
a fixed cost of Python per layer call; the methods apply them to inputs of at
least :data:`netlens._input_gradients.WORTH_A_RULE` elements. Where no layer
the rules know (convolution, BatchNorm, ReLU) gets an input that large, as in
a ResNet at batch 1, calls of that shape run plain autograd without the
rules' hooks at all: the same gradients, about a millisecond sooner on a
ResNet-50.

Measuring
---------
Both choices scale with the batch: every layer's input has ``N`` times the
elements of one image's, the weights stay. So the first call for a model and
an image size (channels, height, width) measures one image: the pass that
finds the model's default layers on the first image serves
(:func:`learn_from_calls`) where a method runs it; otherwise, where
channels-last is possible, the first image runs through the model once,
without gradients and in its own layout, counting. Every call of that image
size, the first included, then follows the plan for its batch, so that
repeated calls do the same arithmetic and give bit-identical results. The
extra pass is one image's forward pass once per model and size (a third of a
saliency call at batch 1, under 1 percent at batch 16); forward hooks of the
model's own see it. Where channels-last is not possible (CUDA, float64, no
2-d convolutions) nothing runs in another layout, and the first call itself
counts, with the rules' hooks.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from netlens._input_gradients import LAYER_TYPES, WORTH_A_RULE
from netlens.errors import NetlensError
from netlens.hooks import ModuleCall, inputs_seen

T = TypeVar("T")

__all__ = [
    "Plan",
    "channels_last_possible",
    "forced_layout",
    "in_plan_layout",
    "learn_from_calls",
    "refuse_channels_last",
    "run_channels_last",
    "size_plan",
]

# model -> {(image shape, dtype, device): what one image's pass shows}
_DECISIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], _Count]] = (
    weakref.WeakKeyDictionary()
)
_HAS_CONVOLUTIONS: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_FORCED = threading.local()


def _has_convolutions(model: nn.Module) -> bool:
    try:
        return _HAS_CONVOLUTIONS[model]
    except (KeyError, TypeError):
        found = any(isinstance(m, nn.Conv2d) for m in model.modules())
        try:
            _HAS_CONVOLUTIONS[model] = found
        except TypeError:  # a module that cannot be weakly referenced
            pass
        return found


def channels_last_possible(model: nn.Module, x: Tensor) -> bool:
    """Whether ``model`` could run on a channels-last copy of ``x`` through oneDNN.

    Float32 image batches on a CPU with oneDNN enabled, not channels-last
    already, and a model with 2-d convolutions.
    """
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and bool(torch.backends.mkldnn.enabled)
        and not x.is_contiguous(memory_format=torch.channels_last)
        and _has_convolutions(model)
    )


@contextmanager
def forced_layout(channels_last: bool | None) -> Iterator[None]:
    """On this thread, run in channels-last (``True``) or as given (``False``) where possible.

    ``None`` restores the size rule. For benchmarks and tests of both paths;
    the results are equal up to float rounding either way.
    """
    before = getattr(_FORCED, "value", None)
    _FORCED.value = channels_last
    try:
        yield
    finally:
        _FORCED.value = before


@dataclass(frozen=True)
class Plan:
    """How to run one call: in channels-last, and with the lean rules' hooks."""

    #: Run the model on a channels-last copy of the batch.
    channels_last: bool = False
    #: Enter :func:`netlens.hooks.input_gradients_only`; ``False`` where no
    #: layer of the model gets an input the rules would take at this size.
    rules: bool = True


_FIRST = Plan()


class _Count:
    """What a pass shows, per image: convolution reads and weights, the largest rule-sized input."""

    def __init__(self, images: int) -> None:
        self.images = images
        self.activations = 0
        self.weights = 0
        self.largest = 0
        #: Channels-last is off for this image size: the model's code refused it,
        #: or the first call counted in the input's layout.
        self.as_given = False

    @staticmethod
    def counted(module: nn.Module) -> bool:
        return type(module) in LAYER_TYPES or isinstance(module, nn.Conv2d)

    def __call__(self, module: nn.Module, x: Tensor) -> None:
        self.note(module, x.numel())

    def note(self, module: nn.Module, elements: int) -> None:
        """One call of ``module`` on an input of ``elements`` elements."""
        if type(module) in LAYER_TYPES:
            self.largest = max(self.largest, elements // self.images)
        if isinstance(module, nn.Conv2d):
            self.activations += elements // self.images
            self.weights += module.weight.numel()

    def plan(self, possible: bool, images: int) -> Plan:
        channels_last = (
            possible
            and not self.as_given
            and bool(self.weights)
            and images * self.activations >= self.weights
        )
        return Plan(channels_last=channels_last, rules=images * self.largest >= WORTH_A_RULE)


def _key(x: Tensor) -> tuple[object, ...]:
    return (tuple(x.shape[1:]), x.dtype, x.device)


def _keep(model: nn.Module, key: tuple[object, ...], count: _Count) -> None:
    with _LOCK:
        try:
            _DECISIONS.setdefault(model, {})[key] = count
        except TypeError:  # a module that cannot be weakly referenced
            pass


def _measure(model: nn.Module, x: Tensor) -> _Count | None:
    """Count one pass of ``x``'s first image without gradients; ``None`` where it raises."""
    count = _Count(images=1)
    try:
        with torch.no_grad(), inputs_seen(model, _Count.counted, count):
            model(x[:1].detach())
    except Exception:  # noqa: BLE001 - the call's own pass raises it to the caller
        return None
    return count


def learn_from_calls(model: nn.Module, x: Tensor, calls: Iterable[ModuleCall]) -> None:
    """Keep what a traced pass of ``x[:1]`` showed (:func:`~netlens.hooks.trace_calls`).

    The pass that finds a model's default layers is such a pass: the first
    call of a size that finds them needs no measuring pass of its own.
    """
    key = _key(x)
    with _LOCK:
        if _DECISIONS.get(model, {}).get(key) is not None:
            return
    count = _Count(images=1)
    for call in calls:
        if call.input_shape is not None and _Count.counted(call.module):
            count.note(call.module, math.prod(call.input_shape))
    _keep(model, key, count)


@contextmanager
def size_plan(model: nn.Module, x: Tensor, *, images: int | None = None) -> Iterator[Plan]:
    """How to run ``model`` on ``x`` in this block.

    The plan comes from what one image of that size showed (measured on the
    first call, see the module's notes), scaled to ``x``'s batch, or to
    ``images`` images where given (a call that runs many batches plans every
    one of them for its full batches, so that the last and smaller one runs
    the same way).
    Channels-last only where :func:`channels_last_possible`; under
    :func:`forced_layout` the forced layout, with the rules' hooks. Where
    nothing was measured before the block (channels-last not possible, or
    the measuring pass raised), the block gets the safe plan (the input's
    layout, the rules' hooks) and counts what the pass it wraps shows; when
    it ends without an error that is kept for the size, with channels-last
    off for it.
    """
    possible = channels_last_possible(model, x)
    forced = getattr(_FORCED, "value", None)
    if forced is not None:
        yield Plan(channels_last=forced and possible)
        return
    key = _key(x)
    with _LOCK:
        known = _DECISIONS.get(model, {}).get(key)
    if known is None and possible and len(x):
        known = _measure(model, x)
        if known is not None:
            _keep(model, key, known)
    if known is not None:
        yield known.plan(possible, len(x) if images is None else images)
        return
    count = _Count(images=max(len(x), 1))
    with inputs_seen(model, _Count.counted, count):
        yield _FIRST
    # Counted in the input's layout: later calls keep to it, for the same arithmetic.
    count.as_given = possible
    _keep(model, key, count)


def refuse_channels_last(model: nn.Module, x: Tensor) -> None:
    """Remember that ``model``'s own code raised on a channels-last copy of ``x``.

    Later calls of that image size run in the input's layout at once, instead
    of paying for a failed pass first.
    """
    with _LOCK:
        count = _DECISIONS.get(model, {}).get(_key(x))
        if count is not None:
            count.as_given = True


def in_plan_layout(model: nn.Module, x: Tensor, plan: Plan, run: Callable[[Tensor], T]) -> T:
    """``run(x)`` on a channels-last copy of ``x`` where ``plan`` says so, else on ``x``.

    The whole pass then runs in one layout: a forward pass in the input's
    layout whose backward pass runs channels-last mixes the two in every
    elementwise step of the backward pass (ReLU masks, Hard-Swish,
    squeeze-excitation products), which is slower than either. Where the
    model's own code raises on the channels-last copy (a ``view`` of a
    permuted tensor), the layout is refused for that shape
    (:func:`refuse_channels_last`) and ``run(x)`` runs as given; netlens' own
    errors pass through.
    """
    if plan.channels_last:
        return run_channels_last(
            model, x.contiguous(memory_format=torch.channels_last), run, lambda: x
        )
    return run(x)


def run_channels_last(
    model: nn.Module, x: Tensor, run: Callable[[Tensor], T], as_given: Callable[[], Tensor]
) -> T:
    """``run(x)`` for a channels-last ``x``, or ``run(as_given())`` where the model refuses it.

    Where the model's own code raises on the channels-last batch (a ``view``
    of a permuted tensor), the layout is refused for that shape
    (:func:`refuse_channels_last`) and ``run`` runs on ``as_given()``, the
    same values in NCHW; netlens' own errors pass through.
    """
    try:
        return run(x)
    except NetlensError:
        raise
    except Exception:  # noqa: BLE001 - the model's code refused the layout
        refuse_channels_last(model, x)
    return run(as_given())
