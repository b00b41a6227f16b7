"""Ablation-CAM (Desai and Ramaswamy 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens.attribution.base import Targets
from netlens.attribution.perturbation import LayerPerturbation
from netlens.errors import ZeroScoreError
from netlens.layers import channel_axis

__all__ = ["AblationCAM", "ZeroScoreError"]


class AblationCAM(LayerPerturbation):
    r"""Class activation map weighted by the relative drop of the logit when a channel is zeroed.

    .. math::

        w^c_k = \frac{y^c - y^c_k}{y^c}, \qquad
        L^c = \mathrm{ReLU}\Big(\sum_k w^c_k A^k\Big)

    for logit :math:`y^c` of class :math:`c`, channel :math:`A^k` of the
    layer's feature map and :math:`y^c_k`, the logit with channel :math:`k`
    set to zero (Desai and Ramaswamy, *Ablation-CAM: Visual Explanations for
    Deep Convolutional Network via Gradient-free Localization*, WACV 2020).

    With ``size=None`` this equals pytorch-grad-cam's ``AblationCAM(model,
    [layer])`` before its min-max scaling and resizing, on layers whose
    output has a minimum of 0 (after a ReLU), to float32 rounding (relative
    :math:`10^{-4}`: a weight is a small difference of two logits); on other
    layers pytorch-grad-cam sets the ablated channel to the layer's minimum
    minus :math:`10^7`, not to zero.

    The weights divide by :math:`y^c`. The paper reads it as a positive class
    score; a negative logit (a class the network rejects, an untrained
    network) flips the sign of every weight, and a logit near zero makes them
    large. A logit of exactly zero raises :class:`ZeroScoreError` naming the
    sample and the class.

    Cost: for each image, one forward pass (the feature map, and the logits
    that choose the targets), then :math:`\lceil (K + 1) / \mathrm{batch\_size}
    \rceil` passes for its :math:`K` ablated feature maps and the unablated
    one, whose logit is the :math:`y^c` divided by: it comes from the same
    computation as the :math:`y^c_k`, so their difference holds no rounding
    of another pass. Each pass runs the network below the layer on that one
    image and the part above the layer on a batch of feature maps (where the
    model's code above the layer needs the whole batch, the image is repeated
    instead, with the same result). Any number of targets per image comes from
    the same passes. Image by image, a batch gives exactly the maps of its
    images explained one at a time: the weights are small differences of two
    logits, which amplify the rounding that another batch size brings.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    layer
        The layer whose channels are ablated; default: the last convolutional
        feature map.
    batch_size
        Ablated feature maps per forward pass.
    progress
        Show a progress bar over the batches.
    output
        How to read logits from the model's output.
    channels_last
        Whether the layer's output is ``(N, H, W, C)``; default: found out.

    Examples
    --------
    >>> import torch, torchvision
    >>> ablationcam = AblationCAM(torchvision.models.resnet18().eval(), batch_size=513)
    >>> maps = ablationcam(torch.randn(2, 3, 64, 64), target=[1, 7])  # 2 x (1 + 1) passes
    >>> maps.shape, ablationcam.layer_name
    (torch.Size([2, 64, 64]), 'layer4')
    >>> bool((maps >= 0).all())
    True
    """

    title = "Ablation-CAM"

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        name, _ = self._resolve(x)
        # Image by image, like the ablations: a batch gives exactly its images' maps.
        passes = [self.activation(image) for image in x.split(1)]
        found = torch.cat([a for a, _ in passes])
        logits = torch.cat([y for _, y in passes])
        activation = self.as_nchw(name, found)
        classes = targets.resolve(logits)  # (N, T)
        last = self.channels_last
        if last is None:
            last = channel_axis(self.model, name) == -1
        n, k = activation.shape[:2]

        def ablated(i: int, rows: slice) -> Tensor:
            # Row 0 is the feature map as it is, row 1 + j has channel j zeroed.
            count = rows.stop - rows.start
            maps = activation[i : i + 1].expand(count, *activation.shape[1:]).clone()
            channel = torch.arange(rows.start, rows.stop) - 1
            keep = channel >= 0
            maps[torch.arange(count)[keep], channel[keep]] = 0
            return maps.permute(0, 2, 3, 1) if last else maps

        kind = torch.promote_types(logits.dtype, torch.float32)
        scores = self.layer_scores(x, ablated, k + 1).to(kind)  # (N, 1 + K, classes)
        chosen = scores.gather(2, classes.unsqueeze(1).expand(n, k + 1, classes.shape[1]))
        score, dropped = chosen[:, :1], chosen[:, 1:]  # (N, 1, T), (N, K, T)
        zero = (score[:, 0] == 0).nonzero()
        if zero.numel():
            i, t = zero[0].tolist()
            raise ZeroScoreError(
                f"Ablation-CAM divides by the class score, and the logit of class "
                f"{int(classes[i, t])} for sample {i} is exactly 0; its weights do not exist. "
                "Explain another class, or use a method that does not divide by the score "
                "(ScoreCAM, GradCAM)."
            )
        weights = (score - dropped) / score  # (N, K, T)
        return F.relu(torch.einsum("nkt,nkhw->nthw", weights, activation.to(kind)))
