"""LayerCAM (Jiang et al. 2021)."""

from torch import Tensor

from netlens.attribution.gradient_cam import GradientCAM

__all__ = ["LayerCAM"]


class LayerCAM(GradientCAM):
    r"""Class activation map weighted element by element by the positive gradient.

    .. math::

        L^c = \mathrm{ReLU}\Big(\sum_k \mathrm{ReLU}\big(\tfrac{\partial y^c}
        {\partial A^k}\big) \odot A^k\Big)

    (Jiang, Zhang, Hou, Cheng and Wei, *LayerCAM: Exploring Hierarchical Class
    Activation Maps for Localization*, IEEE TIP 2021). Each position keeps its
    own weight, so maps of early layers stay sharp.

    Examples
    --------
    >>> import torch, torchvision
    >>> maps = LayerCAM(torchvision.models.resnet18().eval(), "layer3")(torch.randn(1, 3, 64, 64))
    >>> maps.shape
    torch.Size([1, 64, 64])
    """

    title = "LayerCAM"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.clamp(min=0)
