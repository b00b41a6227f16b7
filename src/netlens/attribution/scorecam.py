"""Score-CAM (Wang et al. 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens.attribution.base import Targets
from netlens.attribution.perturbation import LayerPerturbation

__all__ = ["ScoreCAM"]


class ScoreCAM(LayerPerturbation):
    r"""Class activation map weighted by the class probability of the images its channels mask.

    Each channel :math:`A^k` of the layer's feature map is upsampled to the
    input's size (bilinear, ``align_corners=True``) and min-max scaled to
    :math:`[0, 1]`, giving a mask :math:`H^k`; the image masked by it is scored
    by the softmax probability :math:`p^c` of class :math:`c`, and the scores
    go through a softmax over the channels:

    .. math::

        H^k = s\big(\mathrm{Up}(A^k)\big), \qquad
        \alpha^c_k = \frac{\exp p^c(X \odot H^k)}{\sum_j \exp p^c(X \odot H^j)},
        \qquad L^c = \mathrm{ReLU}\Big(\sum_k \alpha^c_k A^k\Big)

    with :math:`s(M) = (M - \min M) / (\max M - \min M)` (Wang, Wang, Du,
    Yang, Zhang, Ding, Mardziel and Hu, *Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks*, CVPR workshops 2020:
    Algorithm 1, with the post-softmax score of its Section 3.2). The
    paper's baseline term :math:`p^c(X_b)` is the same for every channel, so
    the softmax over channels cancels it and it is not computed. A channel
    that is constant over the layer's map highlights nothing: its mask is 0
    (the image becomes black), not the :math:`0 / 0` of the formula.

    With ``size=None`` this equals pytorch-grad-cam's ``ScoreCAM(model,
    [layer])`` called with ``targets=[ClassifierOutputSoftmaxTarget(c)]``,
    before its min-max scaling and resizing. torchcam's ``ScoreCAM`` scores
    with logits and min-max scales the channels before upsampling them.

    Cost: one forward pass of the batch (the feature map, and the logits that
    choose the targets), then the :math:`N K` masked images of :math:`N`
    images and :math:`K` channels, those of all the images together, in
    :math:`\lceil N K / \mathrm{batch\_size} \rceil` forward passes without
    gradients: :math:`1 + \lceil N K / \mathrm{batch\_size} \rceil` in all.
    Any number of targets per image comes from the same passes. Pick a layer
    with few channels to keep this small. ``layer=None`` adds one pass on one
    image at the first call, to find the layer. On the CPU the masked images
    are made channels-last where the size plan says that is faster for
    batches of ``batch_size`` (every batch of a call alike); a first call of
    an image size that was given its layer runs one image once more to plan
    that.

    Parameters
    ----------
    model
        A classifier returning logits ``(N, num_classes)``.
    layer
        The layer whose channels make the masks; default: the last
        convolutional feature map.
    batch_size
        Masked images per forward pass.
    progress
        Show a progress bar over the batches.
    output
        How to read logits from the model's output.
    channels_last
        Whether the layer's output is ``(N, H, W, C)``; default: found out.

    Examples
    --------
    >>> import torch, torchvision
    >>> scorecam = ScoreCAM(torchvision.models.resnet18().eval(), "layer2", batch_size=128)
    >>> maps = scorecam(torch.randn(2, 3, 32, 32), target=[1, 7])  # 1 + 2 passes
    >>> maps.shape
    torch.Size([2, 32, 32])
    >>> bool((maps >= 0).all())
    True
    """

    title = "Score-CAM"

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        name, _ = self._resolve(x)
        found, logits = self.activation(x)
        activation = self.as_nchw(name, found)
        classes = targets.resolve(logits)  # (N, T)
        n, k = activation.shape[:2]
        channels = activation.reshape(n * k, 1, *activation.shape[2:])
        # Exactly constant on the layer's grid; upsampling may add rounding noise.
        flat = channels.flatten(1)
        constant = (flat.amax(1) == flat.amin(1)).view(-1, 1, 1, 1)

        full = min(self.batch_size, n * k)
        image = x.detach()

        def masked(rows: slice) -> Tensor:
            up = F.interpolate(
                channels[rows], size=x.shape[-2:], mode="bilinear", align_corners=True
            )
            low = up.amin(dim=(2, 3), keepdim=True)
            span = up.amax(dim=(2, 3), keepdim=True) - low
            blank = constant[rows] | (span == 0)
            mask = torch.where(blank, 0.0, (up - low) / torch.where(blank, 1.0, span))
            # One image broadcasts against its masks; several are gathered row by row.
            images = (
                image
                if n == 1
                else image[torch.arange(rows.start, rows.stop, device=x.device) // k]
            )
            batch = torch.empty(
                (len(mask), *x.shape[1:]),
                dtype=x.dtype,
                device=x.device,
                memory_format=self.batch_layout(x, full),
            )
            return torch.mul(images, mask.to(x.dtype), out=batch)

        kind = torch.promote_types(logits.dtype, torch.float32)
        scores = self.scores(n * k, masked).to(kind).softmax(-1).view(n, k, -1)
        chosen = scores.gather(2, classes.unsqueeze(1).expand(n, k, classes.shape[1]))
        weights = chosen.softmax(dim=1)  # over the channels, (N, K, T)
        return F.relu(torch.einsum("nkt,nkhw->nthw", weights, activation.to(kind)))
