"""Saliency maps (Simonyan et al. 2014)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from netlens._input_gradients import WORTH_A_RULE
from netlens._plan import Plan, in_plan_layout, size_plan
from netlens.attribution.base import Attribution, Targets
from netlens.hooks import OutputFn, input_gradients_only

__all__ = ["ChannelReduce", "InputGradientAttribution", "Objective", "Saliency"]

ChannelReduce = Literal["max", "mean", "sum"]
Objective = Literal["logit", "loss"]


class InputGradientAttribution(Attribution):
    """Base of methods built on gradients of the logits with respect to the input.

    It checks ``abs`` and ``channel_reduce``, computes the input gradients of
    every requested class with the lean memory rules
    (:func:`netlens.hooks.input_gradients_only`; with the guided ReLU rule when
    the class sets ``guided = True``) and reduces an input-shaped attribution
    ``(N, C, H, W)`` to one map per image.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    abs
        Take the absolute value of the attribution (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.
    """

    #: Whether every ReLU's backward pass takes the guided backpropagation rule.
    guided: ClassVar[bool] = False
    #: What is differentiated: the class's ``"logit"``, or its cross-entropy ``"loss"``.
    objective: Objective = "logit"

    def __init__(
        self,
        model: nn.Module,
        *,
        abs: bool = True,
        channel_reduce: ChannelReduce = "max",
        output: OutputFn | None = None,
    ) -> None:
        if channel_reduce not in ("max", "mean", "sum"):
            raise ValueError(
                f"channel_reduce must be 'max', 'mean' or 'sum', not {channel_reduce!r}"
            )
        if not isinstance(abs, bool):
            raise TypeError(f"abs must be True or False, not {abs!r}")
        super().__init__(model, output=output)
        self.abs = abs
        self.channel_reduce = channel_reduce

    def input_gradients(self, x: Tensor, targets: Targets) -> list[Tensor]:
        """Gradients of each requested logit with respect to the input, ``K`` x ``(N, C, H, W)``."""
        return self.classes_and_gradients(x, targets)[1]

    def classes_and_gradients(self, x: Tensor, targets: Targets) -> tuple[Tensor, list[Tensor]]:
        """The resolved classes ``(N, K)`` and :meth:`input_gradients` for them."""
        with size_plan(self.model, x) as plan:
            return in_plan_layout(
                self.model, x, plan, lambda inputs: self._gradients(inputs, x, targets, plan)
            )

    def _gradients(
        self, inputs: Tensor, x: Tensor, targets: Targets, plan: Plan
    ) -> tuple[Tensor, list[Tensor]]:
        # A copy of the caller's tensor (an inference-mode tensor cannot require grad);
        # the channels-last copy is one already.
        inputs = (inputs.detach().clone() if inputs is x else inputs.detach()).requires_grad_(True)
        with torch.enable_grad(), self.lean_backward(plan):
            logits = self.logits(self.model(inputs))
        classes = targets.resolve(logits)
        scores = -logits.log_softmax(1) if self.objective == "loss" else logits
        gradients = self.class_gradients(x, scores, classes, inputs, "the input")
        # In the default layout: the channels-last copy is netlens' own.
        return classes, [gradient.contiguous() for gradient in gradients]

    def lean_backward(self, plan: Plan) -> AbstractContextManager[object]:
        """The backward rules for a forward pass run by ``plan`` (guided ReLUs where guided)."""
        if not (plan.rules or self.guided):
            return nullcontext()
        return input_gradients_only(
            self.model,
            backward_layout=torch.channels_last if plan.channels_last else None,
            guided=self.guided,
            min_elements=WORTH_A_RULE,
            rules=plan.rules,
        )

    def reduce(self, attribution: Tensor) -> Tensor:
        """One map ``(N, H, W)`` from an input-shaped ``(N, C, H, W)`` tensor."""
        if self.abs:
            attribution = attribution.abs()
        if self.channel_reduce == "max":
            return attribution.amax(1)
        if self.channel_reduce == "mean":
            return attribution.mean(1)
        return attribution.sum(1)


class Saliency(InputGradientAttribution):
    r"""Input-gradient saliency map.

    .. math::

        S_{ij} = \max_c \left| \frac{\partial y^t}{\partial x_{c,ij}} \right|

    for target logit :math:`y^t` (Simonyan et al., *Deep Inside Convolutional
    Networks: Visualising Image Classification Models and Saliency Maps*, ICLR
    workshop 2014). Equals captum's
    ``Saliency(model).attribute(x, target, abs=True).amax(1)``.

    The input's ``.grad`` and the parameters' ``.grad`` are left untouched: the
    gradient is taken with respect to a copy of the input. No parameter
    gradient is needed, so convolutions and eval-mode BatchNorm layers keep no
    activations for the backward pass and ReLUs keep a boolean mask
    (:func:`netlens.hooks.input_gradients_only`): on a ResNet-50 autograd
    then holds 220 MiB for a batch of 16 images of 224 x 224 instead of 1.3 GiB.

    The rules apply to layers whose input has at least
    :data:`~netlens._input_gradients.WORTH_A_RULE` elements; where none does
    (a ResNet at batch 1) the call is plain autograd, whose Python costs less.
    On the CPU (float32 images, oneDNN), where the batch is large enough for
    it to pay (:mod:`netlens._plan`), the forward and the backward pass run
    on a channels-last copy of the input, oneDNN's native layout, the whole
    pass in one layout; the map equals the default layout's up to float
    rounding and comes back in the default layout.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    abs
        Take the absolute value of the gradient (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.
    objective
        ``"logit"`` differentiates the class's logit :math:`y^t` (Simonyan et
        al.; captum); ``"loss"`` differentiates each image's own cross-entropy
        loss for the class, :math:`-\log \mathrm{softmax}(y)_t`, as some
        courses define saliency. The loss's gradient is the logit's minus the
        softmax-weighted mean of all logits' gradients, so the two maps differ
        where other classes compete; with ``abs=False`` the loss's map has the
        opposite sign (it points to pixels whose increase lowers the loss).
        Each image's loss is its own: a batch does not scale the gradient.

    Examples
    --------
    >>> import torch, torchvision
    >>> saliency = Saliency(torchvision.models.resnet18().eval())
    >>> saliency(torch.randn(2, 3, 32, 32), target=5).shape
    torch.Size([2, 32, 32])
    >>> loss = Saliency(saliency.model, objective="loss")
    >>> loss(torch.randn(2, 3, 32, 32), target=5).shape
    torch.Size([2, 32, 32])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        abs: bool = True,
        channel_reduce: ChannelReduce = "max",
        objective: Objective = "logit",
        output: OutputFn | None = None,
    ) -> None:
        if objective not in ("logit", "loss"):
            raise ValueError(f"objective must be 'logit' or 'loss', not {objective!r}")
        super().__init__(model, abs=abs, channel_reduce=channel_reduce, output=output)
        self.objective = objective

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        gradients = self.input_gradients(x, targets)
        return torch.stack([self.reduce(g) for g in gradients], 1)
