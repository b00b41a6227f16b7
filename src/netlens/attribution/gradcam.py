"""Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

from torch import Tensor

from netlens.attribution.gradient_cam import GradientCAM

__all__ = ["GradCAM"]


class GradCAM(GradientCAM):
    r"""Gradient-weighted class activation map.

    .. math::

        \alpha^c_k = \frac{1}{hw} \sum_{i,j} \frac{\partial y^c}{\partial A^k_{ij}},
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    for logit :math:`y^c` and feature map :math:`A` (Selvaraju et al.,
    *Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization*, ICCV 2017). With ``size=None`` this equals captum's
    ``LayerGradCam(model, layer).attribute(x, target, relu_attributions=True)``.
    Built on :class:`~netlens.attribution.GradientCAM`.

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

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.mean(dim=(2, 3), keepdim=True)
