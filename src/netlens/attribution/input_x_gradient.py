"""Input x gradient (Shrikumar et al. 2016)."""

from __future__ import annotations

import torch
from torch import Tensor

from netlens.attribution.base import Targets
from netlens.attribution.saliency import InputGradientAttribution

__all__ = ["InputXGradient"]


class InputXGradient(InputGradientAttribution):
    r"""The input times its gradient.

    .. math::

        A_{c,ij} = x_{c,ij} \, \frac{\partial y^t}{\partial x_{c,ij}}, \qquad
        S_{ij} = \max_c |A_{c,ij}|

    for target logit :math:`y^t` (by default; ``abs=False`` keeps the sign and
    ``channel_reduce`` chooses the reduction over colour channels). It is the
    first-order Taylor term of :math:`y^t` around the all-zero input, and
    Integrated Gradients with a zero baseline and one right-hand Riemann step
    (Shrikumar, Greenside, Shcherbina and Kundaje, *Not Just a Black Box:
    Learning Important Features Through Propagating Activation Differences*,
    arXiv 2016). Equals captum's ``InputXGradient(model).attribute(x, target)``
    reduced the same way: ``.abs().amax(1)`` by default, ``.sum(1)`` for
    ``abs=False, channel_reduce="sum"``.

    The gradient is taken as for :class:`~netlens.attribution.Saliency`: with
    respect to a copy of the input, with the lean memory rules
    (:func:`netlens.hooks.input_gradients_only`), one backward pass per
    requested class. The input is the one the model sees, so the map depends
    on its normalisation: a pixel at zero after normalisation (the dataset
    mean) gets zero whatever its gradient.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    abs
        Take the absolute value of the product (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.

    Examples
    --------
    >>> import torch, torchvision
    >>> method = InputXGradient(torchvision.models.resnet18().eval())
    >>> method(torch.randn(2, 3, 32, 32), target=[1, 7]).shape
    torch.Size([2, 32, 32])
    >>> bool((method(torch.zeros(1, 3, 32, 32)) == 0).all())
    True
    """

    title = "Input x Gradient"

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        gradients = self.input_gradients(x, targets)
        return torch.stack([self.reduce(x.detach() * g) for g in gradients], 1)
