r"""Input gradients of common layers without the activations autograd keeps.

Autograd saves, for every recorded operation, what the gradients of *all* its
differentiable arguments need. A method that differentiates only with respect
to an input or an activation (saliency, Grad-CAM) never asks for parameter
gradients, yet pays for them: on a ResNet most of the memory held between the
forward and the backward pass is activations kept only for weight gradients.

For three layer types the gradient with respect to the input needs much less:

* ``BatchNorm`` in eval mode (running statistics) is the per-channel affine map
  :math:`y = s x + b`, :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`; the input
  gradient :math:`s \, \partial L / \partial y` needs only :math:`s`, not
  :math:`x` (which autograd keeps for :math:`\partial L / \partial \gamma`).
* A convolution is linear in its input; the input gradient is the transposed
  convolution of :math:`\partial L / \partial y` with the weight, and needs only
  the weight and the input's shape, not :math:`x` (kept for the weight
  gradient).
* ``ReLU`` needs only where :math:`y > 0`: one byte per element instead of the
  four of a float32 output.

Each rule takes a layer's output ``y``, computed from ``x`` with autograd off,
and returns it attached to ``x``'s history with the exact input gradient,
keeping only what that gradient needs. The hooks that run layers this way live
in :func:`netlens.hooks.input_gradients_only`.

Guided backpropagation changes the backward pass of every ReLU instead: only
positive gradients pass, and only where the ReLU's input was positive,
:math:`\partial L / \partial x = [x > 0] \max(\partial L / \partial y, 0)`.
:class:`GuidedReLUs` applies that rule to each ReLU computed while it is
active: ``nn.ReLU`` modules and functional calls alike (a torch function mode
sees ``torch.nn.functional.relu``, ``torch.relu``, ``Tensor.relu`` and their
in-place forms), keeping a boolean mask.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import _global_backward_hooks, _global_backward_pre_hooks
from torch.overrides import TorchFunctionMode

from netlens.errors import GuidedRuleError

Layout = torch.memory_format | None
Rule = Callable[[nn.Module, Tensor, Tensor, Layout], Tensor]
VectorJacobian = Callable[..., Tensor]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Exact types: a subclass may compute something else in ``forward``.
LAYER_TYPES = (*_BATCHNORMS, *_CONVOLUTIONS, nn.ReLU)

#: Inputs of fewer elements are left to autograd by the methods (4 MiB in float32).
#: A rule costs a few tens of microseconds of Python per call and saves its
#: input's activation; on a ResNet-18 at batch 1 (224 x 224) the rules on every
#: layer make the input gradient 6 percent slower than autograd's while saving
#: about 20 MiB, and no input there reaches this size. At batch 16 every layer
#: up to the last stage does, and the memory bounds hold.
WORTH_A_RULE = 1 << 20


class _Reattach(torch.autograd.Function):
    """Give ``y``, computed from ``x`` without autograd, the input gradient ``vjp(dy, *kept)``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, vjp: VectorJacobian, *kept: Tensor) -> Tensor:
        ctx.vjp = vjp
        # A gradient that does not exist stays missing (not zeros), so that a cut
        # graph above the layer is seen as one.
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*kept)
        # Marked as changed in place so that ``y`` itself (not a view of it) comes
        # back with history: a later in-place ReLU on it stays legal.
        ctx.mark_dirty(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, ...]:
        kept = ctx.saved_tensors
        if grad is None:
            return (None, None, None, *([None] * len(kept)))
        return (ctx.vjp(grad, *kept), None, None, *([None] * len(kept)))


def _scale_vjp(grad: Tensor, scale: Tensor) -> Tensor:
    return (grad * scale).to(grad.dtype)


def _batchnorm(module: nn.Module, x: Tensor, y: Tensor, backward_layout: Layout) -> Tensor:
    variance: Tensor = module.running_var  # type: ignore[assignment]
    # At least float32, so low-precision models lose nothing in the product.
    dtype = torch.promote_types(torch.promote_types(variance.dtype, y.dtype), torch.float32)
    scale = torch.rsqrt(variance.to(dtype) + module.eps)  # type: ignore[operator]
    if module.weight is not None:
        scale = scale * module.weight.detach().to(dtype)
    scale = scale.reshape(1, -1, *([1] * (y.dim() - 2)))
    return _Reattach.apply(x, y, _scale_vjp, scale)


class _ConvInputVJP:
    def __init__(self, module: nn.Module, x: Tensor, backward_layout: Layout) -> None:
        self.dims = x.dim() - 2
        self.like = (x.shape, x.stride(), x.dtype, x.device)
        self.options = (module.stride, module.padding, module.dilation, module.groups)
        self.backward_layout = backward_layout if x.dim() == 4 else None

    def __call__(self, grad: Tensor, weight: Tensor) -> Tensor:
        shape, stride, dtype, device = self.like
        # The input gradient does not depend on the input's values, only on its
        # layout; an uninitialised tensor with the input's strides keeps the
        # backend on the path it takes for the real input (a broadcast dummy,
        # as in torch.nn.grad.conv2d_input, gets copied to a full tensor first).
        if self.backward_layout is None:
            layout = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        else:
            grad = grad.contiguous(memory_format=self.backward_layout)
            layout = torch.empty(
                shape, dtype=dtype, device=device, memory_format=self.backward_layout
            )
        stride_, padding, dilation, groups = self.options
        return torch.ops.aten.convolution_backward(
            grad,
            layout,
            weight,
            None,
            stride_,
            padding,
            dilation,
            False,
            [0] * self.dims,
            groups,
            (True, False, False),
        )[0]


def _convolution(module: nn.Module, x: Tensor, y: Tensor, backward_layout: Layout) -> Tensor:
    vjp = _ConvInputVJP(module, x, backward_layout)
    return _Reattach.apply(x, y, vjp, module.weight.detach())  # type: ignore[union-attr]


def _mask_vjp(grad: Tensor, passes: Tensor) -> Tensor:
    # A product with the boolean mask: several times faster on the CPU than
    # ``torch.where`` with a boolean condition, and equal to it for a finite
    # gradient (a blocked entry may come out as -0.0).
    return grad * passes


def _relu(module: nn.Module, x: Tensor, y: Tensor, backward_layout: Layout) -> Tensor:
    # ``y = max(x, 0)`` is non-zero exactly where the gradient passes (and at
    # NaN, which autograd's own ReLU also passes through); ``bool()`` tests
    # that in one cheap pass.
    if backward_layout is None or y.dim() != 4:
        passes = y.bool()
    else:  # in the layout the gradient will come in
        passes = torch.empty_like(y, dtype=torch.bool, memory_format=backward_layout)
        torch.ne(y, 0, out=passes)
    return _Reattach.apply(x, y, _mask_vjp, passes)


def _left_to_autograd(module: nn.Module) -> bool:
    """Whether something outside the rules must see this call's own autograd graph."""
    # Backward hooks (guided backpropagation, gradient clipping, logging) are
    # attached to the autograd nodes of the module's call, which a rule replaces.
    if module._backward_hooks or module._backward_pre_hooks:
        return True
    if _global_backward_hooks or _global_backward_pre_hooks:
        return True
    # Inside torch.utils.checkpoint the part is recomputed in the backward pass
    # by plain autograd, which must save what the first pass saved.
    return _in_checkpoint()


def _in_checkpoint() -> bool:
    """Whether a non-reentrant :func:`torch.utils.checkpoint.checkpoint` is recording."""
    hooks = torch._C._autograd._top_saved_tensors_default_hooks(True)
    return hooks is not None and getattr(hooks[0], "__module__", "") == "torch.utils.checkpoint"


def rule_for(module: nn.Module, x: object, min_elements: int = 0) -> Rule | None:
    """How to reattach this call's output, or ``None`` to let autograd record it.

    ``None`` also for an input of fewer than ``min_elements`` elements, whose
    activation is not worth a rule's fixed cost.
    """
    if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad):
        return None
    if x.numel() < min_elements:
        return None
    if _left_to_autograd(module):
        return None
    kind = type(module)
    if kind in _BATCHNORMS:
        stats = module.running_mean is not None and module.running_var is not None
        return _batchnorm if stats and not module.training else None
    if kind in _CONVOLUTIONS:
        plain = module.padding_mode == "zeros" and not isinstance(module.padding, str)
        return _convolution if plain else None
    if kind is nn.ReLU:
        # In place on a leaf or a view, autograd's own rules (and errors) apply.
        in_place_ok = not module.inplace or not (x.is_leaf or x._is_view())
        return _relu if in_place_ok else None
    return None


# Guided backpropagation --------------------------------------------------------


class _GuidedReLU(torch.autograd.Function):
    """``max(x, 0)`` whose backward passes ``max(dy, 0)`` where ``x > 0`` (in place or not).

    With ``mask`` it keeps a boolean mask of where ``x > 0`` (a byte per
    element); without, the output itself, as autograd's own ReLU does: no
    memory of its own where the next layer, left to autograd, keeps that
    output for its weight gradient anyway.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, in_place: bool, mask: bool) -> Tensor:
        ctx.set_materialize_grads(False)
        if in_place:
            y = x.relu_()
            ctx.mark_dirty(x)
        else:
            y = torch.relu(x)
        # Non-zero exactly where x > 0 (and at NaN, as for autograd's own ReLU).
        ctx.save_for_backward(y.bool() if mask else y)
        ctx.mask = mask
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None, None]:
        if grad is None:
            return None, None, None
        (kept,) = ctx.saved_tensors
        if ctx.mask:
            # In place on the clamped copy: one activation-sized tensor at a time, not two.
            return grad.clamp(min=0).mul_(kept), None, None
        # Zero where the output is (x <= 0), the gradient elsewhere: autograd's ReLU backward.
        return torch.ops.aten.threshold_backward(grad.clamp(min=0), kept, 0), None, None


_IN_PLACE_RELUS = {torch.relu_, Tensor.relu_, torch.nn.functional.relu_}
_RELUS = {torch.relu, Tensor.relu, torch.nn.functional.relu, *_IN_PLACE_RELUS}


def _function_forwards() -> set[object]:
    """The code of the ``forward`` of every custom autograd Function class defined now."""
    found: set[object] = set()
    todo = list(torch.autograd.Function.__subclasses__())
    seen: set[type] = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        forward = cls.__dict__.get("forward")
        code = getattr(getattr(forward, "__func__", forward), "__code__", None)
        if code is not None:
            found.add(code)
    return found


def _in_custom_function() -> bool:
    """Whether a custom autograd Function's forward (a reentrant checkpoint's too) is running."""
    forwards = _function_forwards()
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code in forwards:
            return True
        frame = frame.f_back
    return False


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch and netlens' own engine."""
    frame: FrameType | None = sys._getframe(1)
    here = __file__
    while frame is not None:
        name = frame.f_code.co_filename
        if name != here and f"{os.sep}torch{os.sep}" not in name:
            return f"{name}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "an unknown place"


class GuidedReLUs(TorchFunctionMode):
    """While active on this thread, every ReLU computed with gradients gets the guided rule.

    ``applied`` counts the ReLUs that got it; ``where`` names the ``nn.ReLU``
    module being called (set by the caller's hooks), for error messages. A
    ReLU whose backward pass would not be the guided rule raises
    :class:`GuidedRuleError`: one computed inside
    :func:`torch.utils.checkpoint.checkpoint` (its backward pass recomputes the
    part with plain autograd) or with gradients off inside a custom autograd
    Function's forward (a reentrant checkpoint, whose backward pass is plain
    autograd's, or the Function's own backward). A ReLU computed with
    gradients off elsewhere (a ``torch.no_grad()`` block in the model's code)
    passes no gradient at all and is left alone.

    A ReLU whose input has at least ``mask_from`` elements keeps a boolean mask
    for its backward pass, a smaller one its output (as autograd's ReLU): the
    caller sets it where the layers after ReLUs of that size keep their inputs
    themselves (left to autograd) and a mask would be memory on top.
    """

    def __init__(self, mask_from: int = 0) -> None:
        super().__init__()
        self.applied = 0
        self.where: list[str] = []
        self.mask_from = mask_from

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: object,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func not in _RELUS:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, Tensor) or torch._C._current_graph_task_id() != -1:
            return func(*args, **kwargs)
        if not torch.is_grad_enabled():
            if _in_custom_function():
                raise GuidedRuleError(
                    f"{self._name()} runs with gradients off inside a custom autograd "
                    "Function (torch.utils.checkpoint with use_reentrant=True, or a Function "
                    "of the model's own): its backward pass is not autograd's ReLU, so the "
                    "guided rule cannot be applied to it. Run the model without that "
                    "checkpoint (use_reentrant=False does not help either)."
                )
            return func(*args, **kwargs)
        if not x.requires_grad:
            return func(*args, **kwargs)
        if _in_checkpoint():
            raise GuidedRuleError(
                f"{self._name()} runs inside torch.utils.checkpoint: its backward pass "
                "recomputes that part of the model with plain autograd, which would give "
                "the ReLU's ordinary gradient, not the guided one. Explain the model with "
                "checkpointing switched off."
            )
        in_place = func in _IN_PLACE_RELUS or bool(
            kwargs.get("inplace", args[1] if len(args) > 1 else False)
        )
        self.applied += 1
        return _GuidedReLU.apply(x, in_place, x.numel() >= self.mask_from)

    def _name(self) -> str:
        if self.where:
            return f"ReLU '{self.where[-1]}'"
        return f"the ReLU computed at {_caller()}"
