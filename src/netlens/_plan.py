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
a ResNet at batch 1, later calls of that shape run plain autograd without the
rules' hooks at all: the same gradients, about a millisecond sooner on a
ResNet-50.

The first call of a shape runs in the input's layout with the rules' hooks
and counts; later calls of that shape follow the decisions.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from netlens._input_gradients import LAYER_TYPES, WORTH_A_RULE
from netlens.hooks import inputs_seen

__all__ = ["Plan", "channels_last_possible", "forced_layout", "refuse_channels_last", "size_plan"]

# model -> {(shape, dtype, device): plan}
_DECISIONS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], Plan]] = (
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
    """What the first pass of a shape shows: convolution reads and weights, rule-sized inputs."""

    def __init__(self) -> None:
        self.activations = 0
        self.weights = 0
        self.largest = 0

    @staticmethod
    def counted(module: nn.Module) -> bool:
        return type(module) in LAYER_TYPES or isinstance(module, nn.Conv2d)

    def __call__(self, module: nn.Module, x: Tensor) -> None:
        if type(module) in LAYER_TYPES:
            self.largest = max(self.largest, x.numel())
        if isinstance(module, nn.Conv2d):
            self.activations += x.numel()
            self.weights += module.weight.numel()

    def plan(self, possible: bool) -> Plan:
        channels_last = possible and bool(self.weights) and self.activations >= self.weights
        return Plan(channels_last=channels_last, rules=self.largest >= WORTH_A_RULE)


@contextmanager
def size_plan(model: nn.Module, x: Tensor) -> Iterator[Plan]:
    """How to run ``model`` on ``x`` in this block.

    The first block for a model and input shape yields the safe plan (the
    input's layout, the rules' hooks) and counts what the pass it wraps
    shows; when it ends without an error the decisions are kept for that
    shape. Channels-last only where :func:`channels_last_possible`; under
    :func:`forced_layout` the forced layout, with the rules' hooks.
    """
    possible = channels_last_possible(model, x)
    forced = getattr(_FORCED, "value", None)
    if forced is not None:
        yield Plan(channels_last=forced and possible)
        return
    key = (tuple(x.shape), x.dtype, x.device)
    with _LOCK:
        known = _DECISIONS.get(model, {}).get(key)
    if known is not None:
        yield known
        return
    count = _Count()
    with inputs_seen(model, _Count.counted, count):
        yield _FIRST
    with _LOCK:
        try:
            _DECISIONS.setdefault(model, {})[key] = count.plan(possible)
        except TypeError:  # a module that cannot be weakly referenced
            pass


def refuse_channels_last(model: nn.Module, x: Tensor) -> None:
    """Remember that ``model``'s own code raised on a channels-last copy of ``x``.

    Later calls of that shape run in the input's layout at once, instead of
    paying for a failed pass first.
    """
    key = (tuple(x.shape), x.dtype, x.device)
    with _LOCK:
        plans = _DECISIONS.get(model)
        if plans is not None and key in plans:
            plans[key] = Plan(channels_last=False, rules=plans[key].rules)
