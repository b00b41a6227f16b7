"""Class activation maps (Zhou et al. 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from netlens.attribution.base import LayerAttribution, Target, resolve_targets, spatial
from netlens.errors import CAMNotApplicableError
from netlens.hooks import HookSession, Tap, run_forward
from netlens.layers import LayerLike, LayerNotFoundError, find_classifier, resolve_layer


class CAM(LayerAttribution):
    r"""Class activation map.

    For a network whose logits are one linear map of the global average of a
    feature map :math:`A \in \mathbb{R}^{K \times h \times w}`,
    :math:`y^c = \sum_k w^c_k \frac{1}{hw}\sum_{ij} A^k_{ij} + b^c`, the class
    activation map is

    .. math::

        M^c_{ij} = \sum_k w^c_k A^k_{ij}, \qquad
        \frac{1}{hw}\sum_{ij} M^c_{ij} + b^c = y^c

    (Zhou et al., *Learning Deep Features for Discriminative Localization*,
    CVPR 2016). Every call checks that identity against the logits the model
    produced (it costs nothing extra) and raises
    :class:`CAMNotApplicableError` instead of returning a wrong map when a
    nonlinearity or another layer sits between the feature map and the
    classifier. When the feature map reaches the pooling through a functional
    ReLU (DenseNet), the map is taken after that ReLU.

    Works as is for ResNet, DenseNet, MobileNetV2, EfficientNet, RegNet,
    ShuffleNetV2 and GoogLeNet; VGG, AlexNet, SqueezeNet, ConvNeXt and
    MobileNetV3 have other heads: use :class:`GradCAM` for them.

    Parameters
    ----------
    model
        The classifier.
    layer
        The feature map; default: the last convolutional feature map.
    fc
        The ``nn.Linear`` classifier; default: the linear layer producing the
        logits.

    Examples
    --------
    >>> import torch, torchvision
    >>> resnet = torchvision.models.resnet18().eval()
    >>> maps = CAM(resnet)(torch.randn(1, 3, 64, 64), target=3, size=None)
    >>> maps.shape
    torch.Size([1, 2, 2])
    """

    needs_gradients = False

    def __init__(
        self, model: nn.Module, layer: LayerLike | None = None, fc: LayerLike | None = None
    ) -> None:
        super().__init__(model, layer)
        self._fc = _linear(model, fc) if fc is not None else None

    @property
    def fc_name(self) -> str | None:
        """Name of the classifier layer (``None`` until found)."""
        return self._fc[0] if self._fc else None

    def _resolve_fc(self, x: Tensor) -> tuple[str, nn.Linear]:
        if self._fc is None:
            try:
                name = find_classifier(self.model, x)
            except LayerNotFoundError as error:
                raise CAMNotApplicableError(f"CAM needs a linear classifier: {error}") from None
            self._fc = _linear(self.model, name)
        return self._fc  # type: ignore[return-value]

    def _attribute(self, x: Tensor, target: Target) -> Tensor:
        name, module = self._resolve(x)
        fc_name, fc = self._resolve_fc(x)
        taps = [Tap(name, module, "copy"), Tap(fc_name, fc, "copy", where="input")]
        with torch.no_grad():
            logits, found = run_forward(self.model, x, HookSession(self.model, taps))
            assert logits is not None
            activation = spatial(name, found[name], "CAM")
            if activation.shape[1] != fc.in_features:
                raise CAMNotApplicableError(
                    f"layer '{name}' has {activation.shape[1]} channels but the classifier "
                    f"'{fc_name}' takes {fc.in_features} inputs, so the logits are not a "
                    "linear map of this layer's average; use GradCAM for this model."
                )
            activation = _as_pooled(activation, found[fc_name], name, fc_name)
            targets = resolve_targets(target, logits)
            weights = fc.weight[targets].to(activation.dtype)
            maps = torch.einsum("nk,nkhw->nhw", weights, activation)
            _check_identity(maps, fc, targets, logits, name)
        return maps


def _linear(model: nn.Module, fc: LayerLike) -> tuple[str, nn.Linear]:
    name, module = resolve_layer(model, fc)
    if not isinstance(module, nn.Linear):
        raise CAMNotApplicableError(
            f"fc must be an nn.Linear, but '{name}' is a {type(module).__name__}"
        )
    return name, module


def _close(a: Tensor, b: Tensor) -> bool:
    """Equal up to rounding: the premise holds, allowing for the dtype's precision."""
    scale = max(float(b.abs().max()) if b.numel() else 0.0, 1.0)
    # float32 / float64 sums agree to ~1e-4 of the logit scale; bfloat16 / float16
    # keep 8-11 significant bits, and summing thousands of channels adds to that.
    tolerance = max(1e-4, 16 * torch.finfo(b.dtype).eps)
    return bool(torch.allclose(a, b, rtol=max(1e-3, tolerance), atol=tolerance * scale))


def _as_pooled(activation: Tensor, pooled: Tensor, name: str, fc_name: str) -> Tensor:
    """The feature map whose global average is the classifier's input."""
    pooled = pooled.flatten(1)
    if _close(activation.mean(dim=(2, 3)), pooled):
        return activation
    rectified = F.relu(activation)
    if _close(rectified.mean(dim=(2, 3)), pooled):
        return rectified
    raise CAMNotApplicableError(
        f"the input of '{fc_name}' is not the global average of layer '{name}' (another "
        "layer or nonlinearity sits between them), so CAM is not defined here; use GradCAM."
    )


def _check_identity(
    maps: Tensor, fc: nn.Linear, targets: Tensor, logits: Tensor, name: str
) -> None:
    bias = fc.bias[targets] if fc.bias is not None else torch.zeros_like(targets, dtype=maps.dtype)
    predicted = maps.mean(dim=(1, 2)) + bias
    observed = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    if not _close(predicted, observed):
        raise CAMNotApplicableError(
            f"the spatial mean of the CAM of layer '{name}' plus the bias does not "
            "reproduce the model's logits (something follows the classifier); use GradCAM."
        )
