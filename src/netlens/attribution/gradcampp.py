"""Grad-CAM++ (Chattopadhyay et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from netlens.attribution.gradient_cam import GradientCAM
from netlens.errors import UndefinedMapError

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(GradientCAM):
    r"""Grad-CAM with per-position coefficients from higher-order derivatives.

    With :math:`g^k_{ij} = \partial y^c / \partial A^k_{ij}` the gradient of
    logit :math:`y^c` with respect to feature map :math:`A`,

    .. math::

        \alpha^{kc}_{ij} = \frac{(g^k_{ij})^2}
            {2 (g^k_{ij})^2 + \sum_{a,b} A^k_{ab}\, (g^k_{ij})^3},
        \qquad
        w^c_k = \sum_{i,j} \alpha^{kc}_{ij}\, \mathrm{ReLU}(g^k_{ij}),
        \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big)

    (Chattopadhyay, Sarkar, Howlader and Balasubramanian, *Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional
    Networks*, WACV 2018, equation 19). The paper explains the exponential of
    the logit, whose second and third derivatives through a ReLU network are
    powers of the first; that closed form is the one above, and the
    exponential's factor :math:`e^{y^c}` in :math:`w^c_k`, one positive
    constant per image and class, is left out (it would overflow for logits
    above 88 in float32).

    Where :math:`g = 0` the formula reads 0/0; :math:`\alpha = 0` there, and
    positions with :math:`g \le 0` add nothing to :math:`w` in any case
    (:math:`\mathrm{ReLU}(g) = 0`). Where :math:`g > 0`, :math:`\alpha = 1 /
    (2 + g \sum_{a,b} A_{ab})`, the same value with :math:`g^2` cancelled, so
    that no tiny gradient underflows to 0/0; no small constant is added. For
    non-negative activations (after a ReLU) this denominator is at least 2.
    Only on a layer with negative activations can it vanish; the weight is then
    undefined and the call raises :class:`~netlens.errors.UndefinedMapError`.

    pytorch-grad-cam's ``GradCAMPlusPlus`` computes the same formula but adds
    ``1e-6`` to the denominator, which changes its maps visibly (squared
    gradients of a late layer are often that small); with its gradients scaled
    up and its activations down by ``1e6``, which leaves the paper's map as it
    is, its raw map equals this one with ``size=None``. torchcam's
    ``GradCAMpp`` computes another quantity (see the user guide). Built on
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
    >>> gradcampp = GradCAMPlusPlus(torchvision.models.resnet18().eval())
    >>> maps = gradcampp(torch.randn(2, 3, 64, 64), target=[1, 7])
    >>> maps.shape, gradcampp.layer_name
    (torch.Size([2, 64, 64]), 'layer4')
    >>> bool((maps >= 0).all())
    True
    """

    title = "Grad-CAM++"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        compute = torch.promote_types(activation.dtype, torch.float32)
        activation, gradient = activation.to(compute), gradient.to(compute)
        total = activation.sum(dim=(2, 3), keepdim=True)
        positive = gradient > 0  # ReLU(g) is zero elsewhere, and alpha is 0 where g is 0
        denominator = 2 + total * gradient
        undefined = positive & (denominator == 0)
        if bool(undefined.any()):
            sample, channel = undefined.nonzero()[0, :2].tolist()
            raise UndefinedMapError(
                f"Grad-CAM++'s coefficient is undefined at channel {channel} of layer "
                f"'{self.layer_name}' (sample {sample}): its activations sum to a negative "
                "value that makes 2 + gradient * sum vanish; explain a layer after a ReLU "
                "(non-negative activations) or use GradCAM."
            )
        terms = torch.where(positive, gradient / denominator.masked_fill(~positive, 1), 0)
        return terms.sum(dim=(2, 3), keepdim=True)
