"""Guided Grad-CAM (Selvaraju et al. 2017)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens.attribution.base import LayerAttribution, Targets
from netlens.attribution.gradcam import GradCAM
from netlens.attribution.guided_backprop import GuidedBackprop
from netlens.attribution.saliency import ChannelReduce
from netlens.hooks import OutputFn
from netlens.layers import LayerLike

__all__ = ["GuidedGradCAM"]

Upsample = Literal["bilinear", "nearest"]


class GuidedGradCAM(LayerAttribution):
    r"""Guided backpropagation weighted by the Grad-CAM map upsampled to the input.

    .. math::

        A_{c,ij} = G_{c,ij} \, \mathrm{up}(L^t)_{ij}, \qquad S_{ij} = \max_c |A_{c,ij}|,

    for the guided backpropagation gradient :math:`G` of the target logit
    :math:`y^t` (:class:`~netlens.attribution.GuidedBackprop`) and the
    Grad-CAM map :math:`L^t` of the chosen layer
    (:class:`~netlens.attribution.GradCAM`), upsampled bilinearly to the
    input's height and width as in the paper (Selvaraju, Cogswell, Das,
    Vedantam, Parikh and Batra, *Grad-CAM: Visual Explanations from Deep
    Networks via Gradient-based Localization*, ICCV 2017). By default the map
    is the largest absolute value over colour channels; ``abs=False`` keeps
    the sign and ``channel_reduce`` chooses the reduction. The map is at the
    input's resolution (also for ``size=None``).

    Both factors explain the same classes: the targets are resolved once, on
    the logits of the guided pass. Grad-CAM's gradient is the ordinary one
    (the guided rule is used only for :math:`G`), as in the paper.

    With ``upsample="nearest"`` this equals captum's ``GuidedGradCam(model,
    layer).attribute(x, target)`` (whose default upsampling is nearest),
    reduced over channels the same way; with the default ``"bilinear"`` it
    equals captum's with ``interpolate_mode="bilinear"``. Where captum's
    guided backpropagation differs (a functional ReLU, as in DenseNet), so
    does its Guided Grad-CAM.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    layer
        The layer of the Grad-CAM factor; default: the last convolutional
        feature map.
    abs
        Take the absolute value of the product (``False`` keeps its sign).
    channel_reduce
        How the colour channels become one map: ``"max"``, ``"mean"`` or ``"sum"``.
    upsample
        How the Grad-CAM map is brought to the input's size: ``"bilinear"``
        (the paper's) or ``"nearest"`` (captum's default).

    Examples
    --------
    >>> import torch, torchvision
    >>> method = GuidedGradCAM(torchvision.models.resnet18().eval())
    >>> maps = method(torch.randn(2, 3, 64, 64), target=[1, 7])
    >>> maps.shape, method.layer_name
    (torch.Size([2, 64, 64]), 'layer4')
    """

    title = "Guided Grad-CAM"
    #: The maps come at the input's resolution, also for ``size=None``, though a layer is read.
    input_resolution: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        layer: LayerLike | None = None,
        *,
        abs: bool = True,
        channel_reduce: ChannelReduce = "max",
        upsample: Upsample = "bilinear",
        output: OutputFn | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', not {upsample!r}")
        self.guided_backprop = GuidedBackprop(
            model, abs=abs, channel_reduce=channel_reduce, output=output
        )
        self.gradcam = GradCAM(model, layer, output=output, channels_last=channels_last)
        super().__init__(model, None, output=output, channels_last=channels_last)
        self.upsample = upsample

    def __repr__(self) -> str:
        return f"GuidedGradCAM({type(self.model).__name__}, layer={self.layer_name!r})"

    @property
    def layer_name(self) -> str | None:
        """Name of the Grad-CAM layer (``None`` until found)."""
        return self.gradcam.layer_name

    @property
    def abs(self) -> bool:
        """Whether the absolute value of the product is taken."""
        return self.guided_backprop.abs

    @property
    def channel_reduce(self) -> str:
        """How the colour channels become one map."""
        return self.guided_backprop.channel_reduce

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        classes, gradients = self.guided_backprop.classes_and_gradients(x, targets)
        cams = self.gradcam._attribute(x, Targets(classes, classes.shape[0], many=True))
        size = tuple(x.shape[-2:])
        if self.upsample == "bilinear":
            cams = F.interpolate(cams, size=size, mode="bilinear", align_corners=False)
        else:
            cams = F.interpolate(cams, size=size, mode="nearest")
        maps = [
            self.guided_backprop.reduce(g * cams[:, k : k + 1]) for k, g in enumerate(gradients)
        ]
        return torch.stack(maps, 1)
