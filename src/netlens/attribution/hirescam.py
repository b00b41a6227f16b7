"""HiResCAM (Draelos and Carin 2020)."""

from torch import Tensor

from netlens.attribution.gradient_cam import GradientCAM

__all__ = ["HiResCAM"]


class HiResCAM(GradientCAM):
    r"""Class activation map weighted element by element by the gradient.

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k \frac{\partial y^c}{\partial A^k} \odot A^k\Big)

    for logit :math:`y^c` and feature map :math:`A` (Draelos and Carin, *Use
    HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks*, arXiv:2011.08891 2020). Unlike Grad-CAM the gradient is
    not averaged over positions, so each position keeps its own weight.

    When the logits are a linear map of the global average of :math:`A`
    (ResNet, DenseNet, EfficientNet, ...), the gradient is :math:`w^c_k / hw`
    at every position and the map is :math:`\mathrm{ReLU}(M^c) / hw`, with
    :math:`M^c` the :class:`~netlens.attribution.CAM` map: the same as
    Grad-CAM there. With ``size=None`` it equals pytorch-grad-cam's
    ``HiResCAM`` before its min-max scaling and resizing. Built on
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
    >>> hirescam = HiResCAM(torchvision.models.resnet18().eval(), "layer3")
    >>> maps = hirescam(torch.randn(2, 3, 64, 64), target=[1, 7], size=None)
    >>> maps.shape
    torch.Size([2, 4, 4])
    >>> bool((maps >= 0).all())
    True
    """

    title = "HiResCAM"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient
