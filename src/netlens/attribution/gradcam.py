"""Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens.attribution.base import (
    LayerAttribution,
    Target,
    channels_last_helps,
    is_layout_error,
    resolve_targets,
    spatial,
)
from netlens.hooks import HookSession, Tap, input_gradients_only, run_forward


class GradCAM(LayerAttribution):
    r"""Gradient-weighted class activation map.

    For class :math:`c` and feature map :math:`A \in \mathbb{R}^{K \times h \times w}`
    of the chosen layer,

    .. math::

        \alpha^c_k = \frac{1}{hw} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big),

    where :math:`y^c` is the logit (Selvaraju et al., *Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization*, ICCV
    2017). With ``size=None`` this equals captum's
    ``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)``.

    Only the part of the network above the layer records autograd history:
    everything below it runs without gradients, which is all Grad-CAM needs.
    No parameter gradient is needed either, so above the layer convolutions
    and eval-mode BatchNorm layers keep no activations for the backward pass
    and ReLUs keep a boolean mask (:func:`netlens.hooks.input_gradients_only`).
    The feature map is the layer's output as it returned, before any later
    in-place operation (an ``inplace=True`` ReLU, ``out += identity``).

    On the CPU (float32 images, oneDNN), the network below the layer runs on a
    channels-last copy of the batch, oneDNN's native convolution layout, and
    the layer's output goes on in the default layout: about a fifth faster on
    a ResNet-50, with maps equal to the default layout's up to float rounding.
    A model whose own code below the layer needs the default layout (a
    ``.view`` between convolutions) is run again in it.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    layer
        The layer to explain; default: the last convolutional feature map
        (``layer4`` of a ResNet, ``features`` of a DenseNet).

    Examples
    --------
    >>> import torch, torchvision
    >>> gradcam = GradCAM(torchvision.models.resnet18().eval())
    >>> maps = gradcam(torch.randn(2, 3, 64, 64), target=[1, 7])
    >>> maps.shape, gradcam.layer_name
    (torch.Size([2, 64, 64]), 'layer4')
    >>> bool((maps >= 0).all())
    True
    """

    title = "Grad-CAM"

    def _attribute(self, x: Tensor, target: Target) -> Tensor:
        name, module = self._resolve(x)
        if channels_last_helps(self.model, x):
            try:
                return self._gradcam(x.contiguous(memory_format=torch.channels_last), target)
            except RuntimeError as error:
                if not is_layout_error(error):
                    raise
                # The model's own code needs the default layout: run it so.
        return self._gradcam(x, target)

    def _gradcam(self, x: Tensor, target: Target) -> Tensor:
        name, module = self._resolve(x)
        # Back to the default layout at the layer: the map comes out in it, and
        # the head (often ``x.view(n, -1)``) sees what it would without netlens.
        tap = Tap(name, module, "leaf", replace=_default_layout)
        with torch.no_grad(), input_gradients_only(self.model):
            logits, found = run_forward(self.model, x, HookSession(self.model, [tap]))
        activation = spatial(name, found[name], "GradCAM")
        assert logits is not None
        targets = resolve_targets(target, logits)
        score = logits.gather(1, targets.unsqueeze(1)).sum()
        if not score.requires_grad:
            raise RuntimeError(
                f"the logits do not depend on layer '{name}' (no gradient flows back to it)"
            )
        (gradient,) = torch.autograd.grad(score, activation)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        return F.relu((weights * activation.detach()).sum(1))


def _default_layout(activation: Tensor) -> Tensor:
    return activation.contiguous()
