"""Guided backpropagation (Springenberg et al. 2015)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from netlens.attribution.base import Targets
from netlens.attribution.saliency import InputGradientAttribution
from netlens.errors import GuidedRuleError

__all__ = ["GuidedBackprop", "GuidedRuleError"]


class GuidedBackprop(InputGradientAttribution):
    r"""Input gradient in which every ReLU passes back only positive gradients.

    The backward pass of each ReLU :math:`y = \max(x, 0)` is replaced by

    .. math::

        \frac{\partial L}{\partial x} = [x > 0] \,
        \max\Big(\frac{\partial L}{\partial y}, 0\Big),

    and the map is the resulting "gradient" of the target logit :math:`y^t`
    with respect to the input, :math:`\max_c |G_{c,ij}|` by default
    (Springenberg, Dosovitskiy, Brox and Riedmiller, *Striving for Simplicity:
    The All Convolutional Net*, ICLR workshop 2015).

    Every ReLU computed during the forward pass gets the rule: ``nn.ReLU``
    modules (and their subclasses), however often each is called, and
    functional calls (``torch.nn.functional.relu``, ``torch.relu``,
    ``Tensor.relu``, in place or not), such as the ReLU DenseNet applies to
    its feature map in ``forward``. Other activations (``ReLU6``, ``GELU``,
    ``SiLU``, ``Hardswish``) keep their ordinary gradient, so on a network
    without ReLUs the map is the plain input gradient (:class:`Saliency`). The
    rule is in force only during the call; nothing stays attached to the model.

    Where the rule cannot be the one the backward pass runs,
    :class:`GuidedRuleError` names the ReLU rather than leaving it its ordinary
    gradient: a ReLU inside :func:`torch.utils.checkpoint.checkpoint` (its
    backward pass recomputes with plain autograd) or inside a custom autograd
    Function, a TorchScript or ``torch.compile`` module, or an ``nn.ReLU``
    subclass whose ``forward`` does not compute a ReLU call.

    Equals captum's ``GuidedBackprop(model).attribute(x, target)``, reduced
    the same way, on networks whose ReLUs are all ``nn.ReLU`` modules; captum
    leaves functional ReLUs their ordinary gradient (DenseNet's last one).
    Equals pytorch-grad-cam's ``GuidedBackpropReLUModel`` on the same networks.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    abs
        Take the absolute value of the guided gradient (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.

    Examples
    --------
    >>> import torch, torchvision
    >>> guided = GuidedBackprop(torchvision.models.resnet18().eval())
    >>> guided(torch.randn(2, 3, 32, 32), target=[1, 7]).shape
    torch.Size([2, 32, 32])
    >>> signed = GuidedBackprop(torchvision.models.resnet18().eval(), abs=False)
    >>> signed(torch.randn(1, 3, 32, 32), torch.tensor([[1, 2, 3]])).shape
    torch.Size([1, 3, 32, 32])
    """

    title = "Guided Backprop"
    guided: ClassVar[bool] = True

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        gradients = self.input_gradients(x, targets)
        return torch.stack([self.reduce(g) for g in gradients], 1)
