"""GradientCAM: the base of class activation maps weighted by gradients.

Grad-CAM, Grad-CAM++, XGradCAM, LayerCAM and HiResCAM differ only in how the
gradient of a class score with respect to a feature map becomes weights for
that map. :class:`GradientCAM` runs everything else once: the forward pass
(only the part above the layer records history), the backward pass for every
requested class, channels-last layers, and the checks that the gradient
exists. A subclass says only :meth:`GradientCAM.weights`.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens._input_gradients import WORTH_A_RULE
from netlens._plan import Plan, in_plan_layout, size_plan
from netlens.attribution.base import LayerAttribution, Targets
from netlens.hooks import HookSession, Tap, input_gradients_only, run_forward

__all__ = ["GradientCAM"]


class GradientCAM(LayerAttribution):
    r"""Base class of gradient-weighted class activation maps.

    For class :math:`c`, feature map :math:`A \in \mathbb{R}^{K \times h \times w}`
    of the chosen layer and :math:`G = \partial y^c / \partial A`, the map is

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k (W \odot A)_k\Big), \qquad W = \mathrm{weights}(A, G),

    with :math:`W` broadcastable to :math:`A`: per channel ``(N, K, 1, 1)``
    like Grad-CAM, or per element ``(N, K, h, w)`` like LayerCAM.

    Only the part of the network above the layer records autograd history:
    everything below it runs without gradients. No parameter gradient is
    needed, so above the layer convolutions and eval-mode BatchNorm layers
    keep no activations for the backward pass and ReLUs keep a boolean mask
    (:func:`netlens.hooks.input_gradients_only`). The feature map is the
    layer's output as it returned, before any later in-place operation.

    On the CPU (float32 images, oneDNN), where the batch is large enough for
    it to be faster (:mod:`netlens._plan`), the network below the layer runs
    on a channels-last copy of the batch, oneDNN's native convolution layout,
    and the layer's output goes on in the default layout. If the model's own
    code raises on that copy (a ``.view``, an ``is_contiguous()`` check), the
    pass is run again on the batch as given, so the optimisation is never
    visible.

    Examples
    --------
    A variant is one method:

    >>> import torch, torchvision
    >>> class MaxGradCAM(GradientCAM):
    ...     def weights(self, activation, gradient):
    ...         return gradient.amax(dim=(2, 3), keepdim=True)
    >>> maps = MaxGradCAM(torchvision.models.resnet18().eval())(torch.randn(1, 3, 64, 64))
    >>> maps.shape
    torch.Size([1, 64, 64])
    """

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Weights broadcastable to ``activation`` ``(N, K, h, w)``, from the gradient."""
        raise NotImplementedError

    def combine(self, activation: Tensor, weights: Tensor) -> Tensor:
        """The map ``(N, h, w)`` from activation and weights: ``ReLU(sum_k W_k A_k)``."""
        return F.relu((weights * activation).sum(1))

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        self._resolve(x)  # a pass that finds the default layer sizes the plan too
        with size_plan(self.model, x) as plan:
            return in_plan_layout(self.model, x, plan, lambda x: self._maps(x, targets, plan))

    def _maps(self, x: Tensor, targets: Targets, plan: Plan) -> Tensor:
        name, module = self._resolve(x)
        # Back to the default layout at the layer: the map comes out in it, and
        # the head (often ``x.view(n, -1)``) sees what it would without netlens.
        tap = Tap(name, module, "leaf", replace=_default_layout)
        lean = (
            input_gradients_only(self.model, min_elements=WORTH_A_RULE)
            if plan.rules
            else nullcontext()
        )
        with torch.no_grad(), lean:
            logits, found = run_forward(
                self.model, x, HookSession(self.model, [tap]), output=self.output
            )
        assert logits is not None
        leaf = found[name]
        activation = self.as_nchw(name, leaf.detach())
        classes = targets.resolve(logits)
        maps = []
        for gradient in self.class_gradients(x, logits, classes, leaf, f"layer '{name}'"):
            gradient = self.as_nchw(name, gradient)
            maps.append(self.combine(activation, self.weights(activation, gradient)))
        return torch.stack(maps, 1)


def _default_layout(activation: Tensor) -> Tensor:
    return activation.contiguous()
