"""Eigen-CAM (Muhammad and Yeasin 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from netlens.attribution.base import LayerAttribution, Targets
from netlens.errors import UndefinedMapError
from netlens.hooks import HookSession, Tap, run_forward

__all__ = ["EigenCAM"]

#: Relative gap between the two largest singular values below which the first
#: singular vector is taken as undefined (float64 SVD; a true tie is below 1e-15).
_TIE = 1e-10


class EigenCAM(LayerAttribution):
    r"""The layer's first principal direction, projected back on its positions.

    The feature map :math:`A \in \mathbb{R}^{K \times h \times w}` of one
    image, read as the matrix :math:`M \in \mathbb{R}^{hw \times K}` (one row
    per position), is factorised :math:`M = U \Sigma V^\top`; the map is the
    rectified projection of the rows on the first right singular vector
    :math:`v_1`:

    .. math::

        L = \mathrm{ReLU}(M v_1) \quad \text{reshaped to } h \times w

    (Muhammad and Yeasin, *Eigen-CAM: Class Activation Map using Principal
    Components*, IJCNN 2020). As in the paper, :math:`M` is not centred. The
    map does not depend on the class: targets are checked like every
    method's, and ``K`` targets per image give the same map ``K`` times. No
    gradient is computed.

    **Sign.** :math:`-v_1` is a first singular vector as well; netlens takes
    the one along the mean activation, :math:`\bar a^\top v_1 > 0` with
    :math:`\bar a` the average of the rows of :math:`M`, i.e. the sign that
    makes the projection's spatial sum positive. For non-negative activations
    (after a ReLU) that is the singular vector with non-negative entries
    (Perron-Frobenius), whose projection is non-negative everywhere, so the
    ReLU removes nothing. If the sum is exactly zero, the position where the
    projection is largest in magnitude is made positive. The SVD runs in
    float64. A layer whose two largest singular values tie has no first
    singular vector: the call raises :class:`~netlens.errors.UndefinedMapError`.

    pytorch-grad-cam's ``EigenCAM`` is not this map: it subtracts each
    channel's spatial mean from :math:`M` before the SVD, and its sign is
    whichever LAPACK returns.

    Parameters
    ----------
    model
        The network (its output is only used to check the targets).
    layer
        The layer to explain; default: the last convolutional feature map.

    Examples
    --------
    >>> import torch, torchvision
    >>> eigencam = EigenCAM(torchvision.models.resnet18().eval())
    >>> x = torch.randn(2, 3, 64, 64)
    >>> maps = eigencam(x, size=None)
    >>> maps.shape, eigencam.layer_name
    (torch.Size([2, 2, 2]), 'layer4')
    >>> torch.equal(eigencam(x, torch.tensor([[1, 2], [3, 4]]), size=None)[:, 1], maps)
    True
    """

    title = "Eigen-CAM"
    needs_gradients: ClassVar[bool] = False

    def _attribute(self, x: Tensor, targets: Targets) -> Tensor:
        name, module = self._resolve(x)
        with torch.no_grad():
            logits, found = run_forward(
                self.model,
                x,
                HookSession(self.model, [Tap(name, module, "copy")]),
                output=self.output,
            )
        assert logits is not None
        classes = targets.resolve(logits)
        activation = self.as_nchw(name, found[name])
        maps = F.relu(self.projection(activation))
        return maps.unsqueeze(1).expand(-1, classes.shape[1], -1, -1).contiguous()

    def projection(self, activation: Tensor) -> Tensor:
        """The signed projection ``(N, h, w)`` (float64) of ``activation`` ``(N, K, h, w)``."""
        n, channels, height, width = activation.shape
        where = "cpu" if activation.device.type == "mps" else activation.device  # no float64 there
        matrix = (
            activation.detach().to(where, torch.float64).flatten(2).transpose(1, 2)
        )  # (N, hw, K)
        # A sample with NaN or infinite activations has no SVD: its map is NaN.
        finite = torch.isfinite(matrix).flatten(1).all(1)
        matrix = torch.where(finite.view(n, 1, 1), matrix, 0)
        _, singular, vh = torch.linalg.svd(matrix, full_matrices=False)
        if singular.shape[1] > 1:
            top, second = singular[:, 0], singular[:, 1]
            tied = (top > 0) & (top - second <= _TIE * top)
            if bool(tied.any()):
                sample = int(tied.nonzero()[0])
                raise UndefinedMapError(
                    f"the two largest singular values of layer '{self.layer_name}' tie for "
                    f"sample {sample}, so its first principal direction (and Eigen-CAM) is "
                    "undefined; pick another layer or use a class-specific method."
                )
        projection = matrix @ vh[:, 0, :].unsqueeze(2)  # (N, hw, 1)
        projection = projection.squeeze(2)
        sign = torch.sign(projection.sum(1))
        largest = projection.gather(1, projection.abs().argmax(1, keepdim=True)).squeeze(1)
        sign = torch.where(sign == 0, torch.sign(largest), sign)
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        projection = (sign.unsqueeze(1) * projection).masked_fill(~finite.unsqueeze(1), torch.nan)
        return projection.view(n, height, width)
