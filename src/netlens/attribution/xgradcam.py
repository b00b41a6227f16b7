"""XGrad-CAM (Fu et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from netlens.attribution.gradient_cam import GradientCAM
from netlens.errors import UndefinedMapError

__all__ = ["XGradCAM"]


class XGradCAM(GradientCAM):
    r"""Gradient-weighted class activation map with activation-normalised weights.

    .. math::

        \alpha^c_k = \sum_{i,j} \frac{A^k_{ij}}{\sum_{a,b} A^k_{ab}}
        \frac{\partial y^c}{\partial A^k_{ij}},
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    for logit :math:`y^c` and feature map :math:`A` (Fu, Hu, Dong, Zhang, Liu
    and Wang, *Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs*, BMVC 2020). The weight is the gradient averaged over
    positions with the channel's own activations as weights, instead of
    Grad-CAM's uniform average.

    The normalisation is exact, with no small constant added: a channel whose
    activations are all zero gets weight 0 (its term is zero whatever the
    weight), and a channel whose activations are not all zero but sum to zero
    has no weight at all, so the call raises
    :class:`~netlens.errors.UndefinedMapError` rather than invent one. The
    normalisation assumes non-negative activations (the output of a ReLU);
    on a layer with negative values (a BatchNorm output, a residual sum) a
    channel whose activations nearly cancel gets a huge weight.

    With ``size=None`` this equals pytorch-grad-cam's ``XGradCAM`` before its
    min-max scaling and resizing and torchcam's
    ``XGradCAM(model, layer)(target, scores, normalized=False)``, up to the
    ``1e-7`` / ``1e-8`` both add to the denominator. Built on
    :class:`~netlens.attribution.GradientCAM`.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    layer
        The layer to explain; default: the last convolutional feature map.

    Examples
    --------
    >>> import torch, torchvision
    >>> xgradcam = XGradCAM(torchvision.models.resnet18().eval())
    >>> maps = xgradcam(torch.randn(2, 3, 64, 64), target=[1, 7])
    >>> maps.shape, xgradcam.layer_name
    (torch.Size([2, 64, 64]), 'layer4')
    """

    title = "XGrad-CAM"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        compute = torch.promote_types(activation.dtype, torch.float32)
        activation, gradient = activation.to(compute), gradient.to(compute)
        total = activation.sum(dim=(2, 3), keepdim=True)
        empty = (activation == 0).all(dim=3, keepdim=True).all(dim=2, keepdim=True)
        cancelled = (total == 0) & ~empty
        if bool(cancelled.any()):
            sample, channel = cancelled.flatten(1).nonzero()[0].tolist()
            raise UndefinedMapError(
                f"XGrad-CAM divides by each channel's activation sum, but channel {channel} "
                f"of layer '{self.layer_name}' (sample {sample}) has nonzero activations "
                "that sum to 0, so its weight is undefined; explain a layer after a ReLU "
                "(non-negative activations) or use GradCAM."
            )
        weighted = (activation * gradient).sum(dim=(2, 3), keepdim=True)
        weights = torch.where(empty, 0, weighted / total.masked_fill(empty, 1))
        return weights
