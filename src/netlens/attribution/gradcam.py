"""Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens._hooks import HookSession, Tap, input_gradients_only, run_forward
from netlens.attribution._base import LayerAttribution, Target, resolve_targets, spatial


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
    and ReLUs keep a boolean mask (:func:`netlens._hooks.input_gradients_only`).
    The feature map is the layer's output as it returned, before any later
    in-place operation (an ``inplace=True`` ReLU, ``out += identity``).

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

    def _attribute(self, x: Tensor, target: Target) -> Tensor:
        name, module = self._resolve(x)
        session = HookSession(self.model, [Tap(name, module, "leaf")])
        with torch.no_grad(), input_gradients_only(self.model):
            logits, found = run_forward(self.model, x, session)
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
